"""Panels (qlab.lab.kit.panel and the lessons' panels): the lesson 01 panel builds, and its readout
follows the sliders."""

import re

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import qlab  # noqa: E402
from qlab.lab.lessons.l01_quantization_math.numbers import quantization_report, quantize_with
from qlab.lab.lessons.l01_quantization_math.panels import QuantizationPanel, quantization_panel

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
    from qlab.lab.lessons.l01_quantization_math.numbers import clip_range

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
    edges = sorted(line.get_xdata()[0] for line in fig.axes[2].get_lines())
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



# ---- lesson 01: which tensor, per-tensor vs per-channel


def _outlier_row_weight():
    """A weight whose row 3 is 40x wider than the others (lesson 01's FFN weight in small)."""
    torch.manual_seed(1)
    w = torch.randn(16, 64) * 0.05
    w[3] *= 40
    return w


@pytest.fixture
def two_tensors():
    return {"plain weight": torch.randn(32, 32) * 0.1, "outlier weight": _outlier_row_weight()}


def test_tensor_dropdown_and_granularity_toggle_contract(two_tensors):
    """The widget contract the browser test relies on (labels "tensor" and "granularity")."""
    panel = quantization_panel(two_tensors)
    assert isinstance(panel.tensor, widgets.Dropdown) and panel.tensor.description == "tensor"
    assert list(panel.tensor.options) == ["plain weight", "outlier weight"]
    assert panel.tensor.value == "plain weight"
    assert isinstance(panel.granularity, widgets.ToggleButtons)
    assert panel.granularity.description == "granularity"
    assert list(panel.granularity.options) == ["per-tensor", "per-channel"]
    assert panel.granularity.value == "per-tensor"
    assert panel.tensor.layout.display != "none"


def test_one_tensor_hides_the_dropdown(panel):
    assert list(panel.tensor.options) == ["test weight"]
    assert panel.tensor.layout.display == "none"


def test_choosing_a_tensor_and_per_channel_redraws(two_tensors):
    panel = quantization_panel(two_tensors, bits=8)
    plain = sqnr_of(panel)
    panel.tensor.value = "outlier weight"
    assert torch.equal(panel.x, two_tensors["outlier weight"])
    per_tensor = sqnr_of(panel)
    assert per_tensor < plain - 5  # one wide row wastes the grid of all the others
    panel.granularity.value = "per-channel"
    per_channel = sqnr_of(panel)
    assert per_channel > per_tensor + 10
    assert "16 scales, one per row" in panel.readout.value
    r = quantization_report(two_tensors["outlier weight"], 8, "symmetric", 1.0, "per-channel")
    assert per_channel == round(r.sqnr, 2)
    assert "outlier weight: 8-bit symmetric per-channel" in panel.figure().axes[0].get_title()


def test_per_channel_report_is_qlab_per_channel():
    w = _outlier_row_weight()
    r = quantization_report(w, 4, "affine", 0.5, "per-channel")
    lo, hi = 0.5 * w.amin(dim=1), 0.5 * w.amax(dim=1)
    qp = qlab.qparams_from_range(lo, hi, qlab.qdtype(4, signed=False), axis=0)
    assert torch.equal(r.qparams.scale, qp.scale) and torch.equal(r.qparams.zero_point, qp.zero_point)
    assert torch.equal(r.x_hat, qlab.fake_quantize(w, qp))
    median = int((hi - lo).argsort()[(len(lo) - 1) // 2])
    assert r.row == median and r.scale == qp.scale[median].item()
    assert r.clip_range == (lo[median].item(), hi[median].item())
    assert r.clipped == pytest.approx(((w < lo[:, None]) | (w > hi[:, None])).float().mean().item())


def test_per_channel_of_a_1d_tensor_is_per_tensor():
    x = torch.linspace(-1, 2, 50)
    a = quantization_report(x, 4, "symmetric", 1.0)
    b = quantization_report(x, 4, "symmetric", 1.0, "per-channel")
    assert torch.equal(a.x_hat, b.x_hat) and b.row == 0


@pytest.mark.parametrize("setting, message", [
    ({"granularity": "per-row"},
     r"granularity must be one of \('per-tensor', 'per-channel'\), got 'per-row'"),
    ({"tensor": "query"}, r"tensor must be one of \('plain weight', 'outlier weight'\), got 'query'"),
])
def test_panel_refuses_an_option_it_does_not_offer(two_tensors, setting, message):
    with pytest.raises(ValueError, match=message):
        quantization_panel(two_tensors, **setting)


def test_panel_refuses_a_bad_dict():
    with pytest.raises(ValueError, match="empty dict"):
        quantization_panel({})
    with pytest.raises(TypeError, match="keys are the tensors' names"):
        quantization_panel({1: torch.ones(3)})
    with pytest.raises(ValueError, match="NaN"):
        quantization_panel({"w": torch.tensor([1.0, float("nan")])})

# ---- lessons 03 and 04: the speed panels (real timings at tiny sizes, or a stand-in timer)

from qlab.lab.kit import panel as kit_panel  # noqa: E402
from qlab.lab.kit import timing  # noqa: E402
from qlab.lab.lessons.l03_dynamic_quantization import panels as l03_panels  # noqa: E402
from qlab.lab.lessons.l04_static_quantization import panels as l04_panels  # noqa: E402

RATIO = r"{} ([0-9]+\.[0-9]+)x fp32"  # the browser test's readout pattern, e.g. "torch.ao int8 2.05x fp32"


def ratio_of(panel, config: str) -> float:
    m = re.search(RATIO.format(re.escape(config)), panel.readout.value)
    assert m, f"readout has no '{config} <number>x fp32': {panel.readout.value!r}"
    return float(m.group(1))


def _fake_timer(calls: list, baseline: str, configs: tuple):
    """A stand-in for bench.time_*: records its call, returns fixed times (fp32 2 ms)."""

    def timer(*args):
        calls.append(args)
        ms = {name: 2.0 / (i + 1) for i, name in enumerate(configs)}
        return {"baseline": baseline, "ms": ms, "speedup": {n: ms[baseline] / t for n, t in ms.items()}}

    return timer


@pytest.fixture
def fake_dynamic(monkeypatch):
    calls = []
    fake = _fake_timer(calls, "fp32", ("fp32", "torch.ao int8", "qlab int8"))

    def time_dynamic(kind, hidden, batch, seq, threads, min_run_time):
        return {"kind": kind, "hidden": hidden, "batch": batch, "seq": seq, "threads": threads,
                **fake(kind, hidden, batch, seq, threads, min_run_time)}

    monkeypatch.setattr(l03_panels.speed, "time_dynamic", time_dynamic)
    return calls


@pytest.fixture
def fake_cnn(monkeypatch):
    calls = []
    configs = ("fp32 channels_last", "fp32 contiguous", "torch.ao int8", "qlab int8", "dynamic int8")
    fake = _fake_timer(calls, "fp32 channels_last", configs)

    def time_cnn(model, batch, threads, width, min_run_time):
        return {"model": model, "batch": batch, "threads": threads, "width": width,
                "fp32_layout": "channels_last", **fake(model, batch, threads, width, min_run_time)}

    monkeypatch.setattr(l04_panels.speed, "time_cnn", time_cnn)
    return calls


def test_dynamic_speed_panel_contract_and_one_default_draw(fake_dynamic):
    panel = l03_panels.dynamic_speed_panel(hidden=512, batch=8, seq=16, threads=1)
    assert isinstance(panel, l03_panels.DynamicSpeedPanel) and isinstance(panel, widgets.VBox)
    sliders = {"hidden": ("hidden size", 128, 1024), "batch": ("batch size", 1, 64),
               "seq": ("sequence length", 1, 64), "threads": ("threads", 1, timing.max_threads())}
    for attr, (label, lo, hi) in sliders.items():
        s = getattr(panel, attr)
        assert isinstance(s, widgets.IntSlider) and (s.description, s.min, s.max) == (label, lo, hi)
    assert isinstance(panel.kind, widgets.ToggleButtons) and panel.kind.description == "model"
    assert panel.kind.options == (("LSTM", "lstm"), ("Linear", "linear"))
    assert panel.readout in panel.children and panel.output in panel.children
    assert fake_dynamic == [("lstm", 512, 8, 16, 1, kit_panel.PANEL_RUN_TIME)]  # drawn once, at the defaults
    assert panel.readout.value.startswith("LSTM, hidden 512, batch 8, seq 16, 1 thread — ")
    assert ratio_of(panel, "torch.ao int8") == 2.0 and ratio_of(panel, "qlab int8") == 3.0
    bundle = panel._repr_mimebundle_()  # the PNG is the draw the readout describes: no second timing
    assert bundle["image/png"] and len(fake_dynamic) == 1


def test_speed_panel_warns_when_the_machine_was_busy(monkeypatch, fake_dynamic):
    quiet = l03_panels.dynamic_speed_panel(threads=1)
    assert "busy machine" not in quiet.readout.value
    timer = l03_panels.speed.time_dynamic
    monkeypatch.setattr(l03_panels.speed, "time_dynamic", lambda *a: {**timer(*a), "spread": 2.5})
    busy = l03_panels.dynamic_speed_panel(threads=1)
    assert "⚠ busy machine: timing rounds differed 2.5x" in busy.readout.value
    assert ratio_of(busy, "torch.ao int8") == 2.0


def test_dynamic_speed_panel_redraws_on_each_control(fake_dynamic):
    panel = l03_panels.dynamic_speed_panel(threads=1)
    panel.hidden.value = 1024
    panel.batch.value = 1
    panel.kind.value = "linear"
    assert [c[:3] for c in fake_dynamic] == [("lstm", 256, 32), ("lstm", 1024, 32), ("lstm", 1024, 1),
                                             ("linear", 1024, 1)]
    assert panel.readout.value.startswith("Linear, hidden 1024, batch 1, seq 32")


def test_dynamic_speed_panel_measures_for_real():
    panel = l03_panels.dynamic_speed_panel(hidden=128, batch=1, seq=2, threads=1, min_run_time=0.005)
    r = panel.result
    assert all(t > 0 for t in r["ms"].values())
    assert ratio_of(panel, "torch.ao int8") == round(r["speedup"]["torch.ao int8"], 2)
    assert ratio_of(panel, "qlab int8") == round(r["speedup"]["qlab int8"], 2)
    fig = panel.figure()
    assert fig.axes[0].get_xlabel().startswith("median latency per call (ms")


def test_cnn_speed_panel_contract_and_one_default_draw(fake_cnn):
    panel = l04_panels.cnn_speed_panel(batch=4, threads=1, width=0.5)
    for attr, (label, lo, hi) in {"batch": ("batch size", 1, 64),
                                  "threads": ("threads", 1, timing.max_threads()),
                                  "width": ("width multiplier", 0.25, 4.0)}.items():
        s = getattr(panel, attr)
        assert isinstance(s, (widgets.IntSlider, widgets.FloatSlider))
        assert (s.description, s.min, s.max) == (label, lo, hi)
    assert panel.model.options == (("ResNet", "resnet"), ("MobileNetV2", "mobilenet_v2"))
    assert fake_cnn == [("resnet", 4, 1, 0.5, kit_panel.PANEL_RUN_TIME)]
    text = panel.readout.value
    assert text.startswith("ResNet ×0.50, batch 4, 1 thread — best fp32: channels_last 2 ms")
    assert ratio_of(panel, "torch.ao int8") == 3.0 and ratio_of(panel, "qlab int8") == 4.0
    assert ratio_of(panel, "dynamic int8 (fc only)") == 5.0
    panel.model.value = "mobilenet_v2"
    panel.width.value = 2.0
    assert fake_cnn[-1] == ("mobilenet_v2", 4, 1, 2.0, kit_panel.PANEL_RUN_TIME)
    assert panel.readout.value.startswith("MobileNetV2 ×2.00")
    panel._repr_mimebundle_()
    assert len(fake_cnn) == 3


def test_cnn_speed_panel_measures_for_real():
    panel = l04_panels.cnn_speed_panel(batch=1, threads=1, width=0.25, min_run_time=0.005)
    r = panel.result
    assert f"best fp32: {r['fp32_layout']} " in panel.readout.value
    assert ratio_of(panel, "torch.ao int8") == round(r["speedup"]["torch.ao int8"], 2)
    assert len(panel.figure().axes[0].patches) == 5  # both fp32 layouts, torch.ao, qlab, dynamic


@pytest.mark.parametrize("build, message", [
    (lambda: l03_panels.dynamic_speed_panel(hidden=64),
     r"hidden=64 is outside the panel's range; hidden must be in 128\.\.1024"),
    (lambda: l03_panels.dynamic_speed_panel(hidden=2048), r"hidden must be in 128\.\.1024"),
    (lambda: l03_panels.dynamic_speed_panel(batch=0), r"batch must be in 1\.\.64"),
    (lambda: l03_panels.dynamic_speed_panel(seq=65), r"seq must be in 1\.\.64"),
    (lambda: l03_panels.dynamic_speed_panel(threads=0), r"threads must be in 1\.\."),
    (lambda: l03_panels.dynamic_speed_panel(kind="gru"),
     r"kind must be one of \('lstm', 'linear'\), got 'gru'"),
    (lambda: l03_panels.dynamic_speed_panel(min_run_time=0), r"min_run_time must be a number of seconds > 0"),
    (lambda: l04_panels.cnn_speed_panel(width=0.0), r"width=0\.0 is outside the panel's range; width must be "
                                           r"in 0\.25\.\.4\.0"),
    (lambda: l04_panels.cnn_speed_panel(width=8), r"width must be in 0\.25\.\.4\.0"),
    (lambda: l04_panels.cnn_speed_panel(batch=65), r"batch must be in 1\.\.64"),
    (lambda: l04_panels.cnn_speed_panel(threads=timing.max_threads() + 1), r"threads must be in 1\.\."),
    (lambda: l04_panels.cnn_speed_panel(model="vgg"), r"model must be one of \('resnet', 'mobilenet_v2'\)"),
])
def test_speed_panels_refuse_values_outside_their_sliders(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_speed_panels_refuse_wrong_types():
    with pytest.raises(TypeError, match=r"hidden must be an int in 128\.\.1024, got float"):
        l03_panels.dynamic_speed_panel(hidden=256.0)
    with pytest.raises(TypeError, match=r"batch must be an int in 1\.\.64, got bool"):
        l04_panels.cnn_speed_panel(batch=True)


def test_smoothquant_panel_measures_each_alpha_once_and_refuses_bad_alpha():
    import pytest

    from qlab.lab.lessons.l03_dynamic_quantization.panels import smoothquant_panel

    calls = []

    def evaluate(alpha):
        calls.append(alpha)
        return {"cosine": 0.9 + 0.05 * alpha, "nn_agreement": 0.8 + 0.1 * alpha}

    panel = smoothquant_panel(evaluate, alpha=0.8, alphas=(0.0, 1.0))
    assert sorted(calls) == [0.0, 0.8, 1.0]
    assert "α = 0.80" in panel.readout.value and "0.9400" in panel.readout.value
    panel.alpha.value = 0.0
    assert sorted(calls) == [0.0, 0.8, 1.0]  # measured before: not again
    assert "0.9000" in panel.readout.value
    with pytest.raises(ValueError, match="alpha"):
        smoothquant_panel(evaluate, alpha=1.5)
    with pytest.raises(TypeError, match="evaluate must be a function"):
        smoothquant_panel(0.8)
