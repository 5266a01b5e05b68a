"""widgets.py: the lesson 01 panel builds, and its readout follows the sliders."""

import re

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import qlab  # noqa: E402
from qlab.lab.experiments import quantization_report  # noqa: E402
from qlab.lab.widgets import QuantizationPanel, quantization_panel, quantize_with  # noqa: E402

SQNR = re.compile(r"SQNR = (-?[0-9.]+|inf) dB")


def sqnr_of(panel) -> float:
    m = SQNR.search(panel.readout.value)
    assert m, f"readout has no 'SQNR = <number> dB': {panel.readout.value!r}"
    return float(m.group(1))


@pytest.fixture
def panel():
    torch.manual_seed(0)
    return quantization_panel(torch.randn(64, 64) * 0.1, name="test weight")


def test_panel_contract(panel):
    """The widget contract the browser test relies on."""
    assert isinstance(panel, QuantizationPanel) and isinstance(panel, widgets.VBox)
    assert isinstance(panel.bits, widgets.IntSlider)
    assert panel.bits.description == "bits"
    assert (panel.bits.min, panel.bits.max) == (2, 8)
    assert isinstance(panel.scheme, widgets.ToggleButtons)
    assert panel.scheme.description == "scheme"
    assert set(panel.scheme.options) == {"symmetric", "affine"}
    assert isinstance(panel.clip, widgets.FloatSlider)
    assert panel.clip.description == "clip range"
    assert isinstance(panel.readout, (widgets.HTML, widgets.Label))
    assert isinstance(panel.output, widgets.Output)
    assert panel.readout in panel.children and panel.output in panel.children
    assert "MSE = " in panel.readout.value


def test_readout_is_qlab_sqnr(panel):
    qp, x_hat = quantize_with(panel.x, 4, "symmetric", 1.0)
    assert sqnr_of(panel) == round(qlab.metrics.sqnr(panel.x, x_hat), 2)


def test_moving_sliders_updates_readout(panel):
    before = panel.readout.value
    at4 = sqnr_of(panel)
    panel.bits.value = 8
    assert panel.readout.value != before
    at8 = sqnr_of(panel)
    assert at8 > at4 + 20  # about 6 dB per bit
    panel.bits.value = 2
    assert sqnr_of(panel) < at4
    panel.scheme.value = "affine"
    assert "zero_point = " in panel.readout.value
    assert "grid [0, 3]" in panel.readout.value
    panel.clip.value = 0.5
    assert "0.00% of values clipped" not in panel.readout.value


def test_clipping_helps_at_low_bits(panel):
    """Gaussian weights at 3 bits: clipping the outliers beats the full min..max range."""
    panel.bits.value = 3
    full = sqnr_of(panel)
    panel.clip.value = 0.5
    assert sqnr_of(panel) > full


def test_display_carries_a_png(panel):
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"]


def test_clip_range_follows_the_scheme():
    from qlab.lab.widgets import clip_range

    x = torch.tensor([-1.0, 0.5, 3.0])
    assert clip_range(x, "symmetric", 1.0) == (-3.0, 3.0)
    assert clip_range(x, "affine", 0.5) == (-0.5, 1.5)
    with pytest.raises(ValueError, match=r"scheme must be one of \('symmetric', 'affine'\), got 'asym'"):
        clip_range(x, "asym", 1.0)


def test_quantization_report_measures_with_qlab():
    """The panel's numbers come from experiments.quantization_report, which is qlab's math."""
    x = torch.tensor([-1.0, -0.2, 0.1, 0.4, 2.0])
    r = quantization_report(x, 3, "affine", 0.5)
    assert r.clip_range == (-0.5, 1.0)
    qp = qlab.qparams_from_range(-0.5, 1.0, qlab.qdtype(3, signed=False))
    assert torch.equal(r.qparams.scale, qp.scale) and torch.equal(r.qparams.zero_point, qp.zero_point)
    assert torch.equal(r.x_hat, qlab.fake_quantize(x, qp))
    assert torch.equal(r.levels, qlab.dequantize(torch.arange(0, 8), qp))
    assert r.clipped == pytest.approx(2 / 5)  # -1.0 and 2.0 lie outside [-0.5, 1.0]
    assert r.sqnr == qlab.metrics.sqnr(x, r.x_hat) and r.mse == qlab.metrics.mse(x, r.x_hat)


def test_panel_figure_draws_the_scale_of_its_qparams(panel):
    fig = panel.figure()
    qp, _ = quantize_with(panel.x, 4, "symmetric", 1.0)
    edges = sorted(line.get_xdata()[0] for line in fig.axes[1].get_lines())
    assert edges == pytest.approx([-qp.scale.item() / 2, qp.scale.item() / 2])


def test_scheme_toggle_changes_grid(panel):
    assert "grid [-8, 7]" in panel.readout.value
    panel.scheme.value = "affine"
    assert "grid [0, 15]" in panel.readout.value


def test_lesson01_committed_notebook_shows_the_panel_without_a_kernel():
    """The stored panel output carries a PNG next to the widget view, and nothing errored."""
    import pathlib

    import nbformat

    path = pathlib.Path(__file__).parents[1] / "notebooks" / "01_quantization_math.ipynb"
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    panel = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert panel and all("image/png" in o["data"] for o in panel)
