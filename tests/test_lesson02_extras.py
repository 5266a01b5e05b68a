"""Lesson 02's new helpers: outlier patterns, observer settings, parity with torch.ao, the bits sweep,
the outlier panel's new controls, and the accuracy-per-bits plot."""

import copy
import functools

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402

import qlab  # noqa: E402
from qlab import observers as O  # noqa: E402
from qlab.lab.kit import figure
from qlab.lab.lessons.l02_observers_and_calibration import figures
from qlab.lab.lessons.l02_observers_and_calibration.numbers import (
    activation_bits_sweep,
    activation_observers,
    inject_outliers,
    observer_parity,
    with_settings,
)
from qlab.lab.lessons.l02_observers_and_calibration.panels import outlier_panel

OBSERVERS = {
    "MinMax": functools.partial(O.MinMaxObserver, qdtype=qlab.uint8),
    "Percentile": functools.partial(O.PercentileObserver, qdtype=qlab.uint8),
    "MSE": functools.partial(O.MSEObserver, qdtype=qlab.uint8, bins=256),
}


@pytest.fixture
def acts():
    g = torch.Generator().manual_seed(0)
    return torch.relu(torch.randn(16, 8, 6, 6, generator=g))


# ---------------------------------------------------------------------- inject_outliers


def test_scattered_outliers_replace_values(acts):
    seen = inject_outliers(acts, 3, 10.0)
    assert seen.shape == (acts.numel(),) and (seen != acts.flatten()).sum() == 3
    assert seen.max() == 10.0 * acts.max()
    assert torch.equal(inject_outliers(acts, 3, 10.0, "scattered"), seen)  # the default pattern


def test_channel_outliers_scale_whole_channels(acts):
    seen = inject_outliers(acts, 2, 10.0, "channel").reshape(acts.shape)
    changed = [c for c in range(acts.shape[1]) if not torch.equal(seen[:, c], acts[:, c])]
    assert changed == [0, 7]  # evenly spaced: the first and the last channel
    for c in changed:
        assert seen[:, c].max() == pytest.approx(10.0 * acts.max().item(), rel=1e-6)
        ratio = seen[:, c][acts[:, c] > 0] / acts[:, c][acts[:, c] > 0]
        assert torch.allclose(ratio, ratio[0])  # a scaled copy: the channel's shape is kept
    assert torch.equal(acts, acts.clone())  # the input is not modified
    assert torch.equal(inject_outliers(acts, 0, 10.0, "channel"), acts.flatten())


@pytest.mark.parametrize("args, words", [
    ((3, 10.0, "rows"), "pattern must be one of ('scattered', 'channel')"),
    ((-1, 10.0), "count must be an int >= 0"),
    ((9, 10.0, "channel"), "only 8 along axis 1"),
])
def test_inject_outliers_bad_input(acts, args, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        inject_outliers(acts, *args)


def test_channel_pattern_needs_channels():
    with pytest.raises(ValueError, match="needs channels"):
        inject_outliers(torch.ones(10), 1, 10.0, "channel")


# ---------------------------------------------------------------------- with_settings


def test_with_settings_sets_bits_and_percentile():
    made = {n: f() for n, f in with_settings(OBSERVERS, bits=4, percentile=99.5).items()}
    assert all(o.qdtype == qlab.qdtype(4, signed=False) for o in made.values())
    assert made["Percentile"].percentile == 99.5
    assert made["MSE"].bins == 256  # the factory's own settings stay
    weight = functools.partial(O.MinMaxObserver, qdtype=qlab.int8, symmetric=True)
    signed = with_settings({"w": weight}, bits=3)
    assert signed["w"]().qdtype == qlab.qdtype(3, signed=True)
    assert with_settings(OBSERVERS) == OBSERVERS  # nothing to change: the same factories


def test_with_settings_bad_input():
    with pytest.raises(ValueError, match="bits"):
        with_settings(OBSERVERS, bits=1)
    with pytest.raises(ValueError, match=r"percentile must be in \(50, 100\]"):
        with_settings(OBSERVERS, percentile=101.0)["Percentile"]()
    with pytest.raises(TypeError, match="observer class"):
        with_settings([O.MinMaxObserver])


# ---------------------------------------------------------------------- observer_parity


def test_observer_parity_on_activations(acts):
    batches = {"conv": list(acts.split(4)), "logits": list((acts.flatten(1)[:, :10] - 0.5).split(4))}
    result = observer_parity(batches)
    assert result["identical"] == {(n, g): True for n in ("MinMaxObserver", "MovingAverageMinMaxObserver")
                                   for g in ("per-tensor", "per-channel")}
    assert result["histogram"] == {"cases": 4, "scale": 0.0, "zero_point": 0.0}


# ---------------------------------------------------------------------- activation_bits_sweep


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.conv = nn.Conv2d(1, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        x = self.relu(self.conv(self.quant(x)))
        return self.dequant(self.fc(x.flatten(1)))

    def fuse_model(self):
        torch.ao.quantization.fuse_modules(self, [["conv", "relu"]], inplace=True)


def _fresh(model, make, batches, bits, x, y):
    """The slow way: prepare with the observers already at `bits`, calibrate, convert, evaluate."""
    m = copy.deepcopy(model).eval()
    m.fuse_model()
    act = functools.partial(make, qdtype=qlab.qdtype(bits, signed=False))
    weight = functools.partial(O.MinMaxObserver, qdtype=qlab.int8, symmetric=True, axis=0)
    m = qlab.prepare(m, qlab.QConfig(activation=act, weight=weight))
    with torch.no_grad():
        for b in batches:
            m(b)
    with torch.no_grad():
        return float((qlab.convert(m)(x).argmax(1) == y).float().mean()), m


def test_bits_sweep_equals_a_fresh_calibration_at_each_width():
    model = TinyNet()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 1, 8, 8, generator=g)
    y = model(x).argmax(1)
    batches = list(x[:20].split(10))
    observers = {"MinMax": O.MinMaxObserver, "Histogram": O.HistogramObserver, "Entropy": O.EntropyObserver}
    sweep = activation_bits_sweep(model, observers, batches, (3, 8), x, y)
    assert list(sweep) == list(observers) and all(len(v) == 2 for v in sweep.values())
    for name, make in observers.items():
        for i, bits in enumerate((3, 8)):
            acc, prepared = _fresh(model, make, batches, bits, x, y)
            assert sweep[name][i] == acc, (name, bits)
    assert sweep["MinMax"][1] >= sweep["MinMax"][0]
    assert len(activation_observers(prepared)) == 3  # the stub, conv+relu and fc


def test_bits_sweep_bad_input():
    model, x = TinyNet(), torch.randn(4, 1, 8, 8)
    with pytest.raises(ValueError, match="bits is empty"):
        activation_bits_sweep(model, {"MinMax": O.MinMaxObserver}, [x], (), x, torch.zeros(4))
    with pytest.raises(ValueError, match="batches is empty"):
        activation_bits_sweep(model, {"MinMax": O.MinMaxObserver}, [], (4,), x, torch.zeros(4))
    with pytest.raises(ValueError, match="no activation observers"):
        activation_observers(model)


# ---------------------------------------------------------------------- the outlier panel's controls


def test_outlier_panel_new_controls_redraw():
    acts = torch.relu(torch.randn(256, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    panel = outlier_panel(acts, OBSERVERS, name="acts", outliers=3, size=10.0)
    assert (panel.bits.value, panel.percentile.value, panel.pattern.value) == (8, 99.99, "scattered")
    assert not panel.pattern.disabled
    fig = panel.figure()
    assert panel.figure() is fig  # the default state is computed once
    assert "MinMax: <b>" in panel.readout.value and "8-bit grid" in panel.readout.value

    def sqnr(name):
        return float(panel.readout.value.split(f"{name}: <b>")[1].split(" dB")[0])

    eight = sqnr("MinMax")
    panel.bits.value = 6
    assert "6-bit grid" in panel.readout.value and sqnr("MinMax") < eight - 6  # about 6 dB a bit
    panel.bits.value = 8
    before = sqnr("Percentile")
    panel.percentile.value = 99.0
    assert sqnr("Percentile") != before and "percentile 99 " not in panel.readout.value
    assert "percentile 99)" in panel.readout.value
    panel.percentile.value = 99.99
    panel.pattern.value = "channel"
    assert "outlier channels" in panel.figure().axes[0].get_title()
    assert sqnr("Percentile") < before - 3  # a whole channel is more than percentile clips
    assert "image/png" in panel._repr_mimebundle_()


def test_outlier_panel_flat_x_disables_the_pattern():
    panel = outlier_panel(torch.rand(1000), OBSERVERS)
    assert panel.pattern.disabled
    with pytest.raises(ValueError, match="pass it unflattened"):
        outlier_panel(torch.rand(1000), OBSERVERS, pattern="channel")


@pytest.mark.parametrize("kw, error, words", [
    ({"bits": 9}, ValueError, "bits must be in 2..8"),
    ({"bits": 4.5}, TypeError, "bits must be an int in 2..8"),
    ({"percentile": 98.0}, ValueError, "percentile must be one of (99.0, 99.5, 99.9, 99.95, 99.99, 99.995"),
    ({"percentile": 99.98}, ValueError, "got 99.98"),
    ({"pattern": "rows"}, ValueError, "pattern must be one of ('scattered', 'channel')"),
    ({"size": 60.0}, ValueError, "size must be in 1.0..50.0"),
])
def test_outlier_panel_bad_values(acts, kw, error, words):
    with pytest.raises(error) as e:
        outlier_panel(acts, OBSERVERS, **kw)
    assert words in str(e.value)


# ---------------------------------------------------------------------- plot_observer_bits


def test_plot_observer_bits():
    acc = {"MinMax": [0.8, 0.98, 0.99], "Entropy": [0.1, 0.1, 0.98], "MSE": [0.9, 0.98, 0.99]}
    fig = figures.plot_observer_bits([3, 4, 8], acc, reference=0.994)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    lines = ax.lines[:3]
    assert [ln.get_marker() for ln in lines] == list(figure.MARKERS[:3])  # a shape per observer
    assert lines[0].get_color() == figures.OBSERVER_COLORS["MinMax"]
    assert list(lines[1].get_ydata()) == pytest.approx([10, 10, 98])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "4", "8"]
    assert "bits" in ax.get_xlabel() and "%" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "fp32 (99.4 %)"
    assert ax.get_title() == "Accuracy against the activations' bit width, per observer"
    zoomed = figures.plot_observer_bits([3, 4, 8], acc, zoom=(75, 100), title="T")
    assert len(zoomed.axes) == 2 and zoomed.axes[1].get_ylim() == (75, 100)
    # one title over both panels: a long one on the left panel ran into the right one's
    assert zoomed.get_suptitle() == "T" and zoomed.axes[0].get_title() != "T"
    assert [ln.get_marker() for ln in zoomed.axes[1].lines] == list(figure.MARKERS[:3])
