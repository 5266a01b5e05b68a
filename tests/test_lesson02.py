"""Lesson 02's helpers: plots, the outlier panel, score_observers and check_moving_average."""

import functools

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import qlab  # noqa: E402
from qlab import observers as O  # noqa: E402
from qlab.lab.lessons.l02_observers_and_calibration import figures
from qlab.lab.lessons.l02_observers_and_calibration.checks import check_moving_average
from qlab.lab.lessons.l02_observers_and_calibration.numbers import inject_outliers, score_observers
from qlab.lab.lessons.l02_observers_and_calibration.panels import OutlierPanel, outlier_panel

OBSERVERS = {
    "MinMax": O.MinMaxObserver,
    "Percentile": O.PercentileObserver,
    "MSE": functools.partial(O.MSEObserver, bins=256),
}


@pytest.fixture
def relu_acts():
    torch.manual_seed(0)
    return torch.relu(torch.randn(20_000))


def test_plot_observer_ranges(relu_acts):
    fig = figures.plot_observer_ranges(relu_acts, {"MinMax": (0.0, 4.0), "MSE": (0.0, 3.0)},
                                     {"MinMax": "SQNR 40.0 dB"}, title="t")  # fmt: skip
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == ["MinMax  (SQNR 40.0 dB)", "MSE"]


def test_plot_calibration_curves():
    fig = figures.plot_calibration_curves([1, 4, 16], {"MinMax": [30, 35, 36], "MSE": [31, 36, 37]}, "dB")
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 2


def test_plot_calibration_curves_shows_the_spread_over_subsets():
    curves = {"MinMax": [[28, 30, 33], [34, 35, 36], [36, 36, 36]], "MSE": [[29, 31], [36, 37], [37, 37]]}
    fig = figures.plot_calibration_curves([1, 4, 16], curves, "dB")
    ax = fig.axes[0]
    medians = ax.lines[0].get_ydata()
    assert list(medians) == [30, 35, 36]
    assert len(ax.containers) == 2  # one min-to-max error bar set per observer
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "16"]


def test_score_observers_measures_the_reference(relu_acts):
    assert (inject_outliers(relu_acts, 3, 10.0) != relu_acts).sum() == 3
    seen = inject_outliers(relu_acts, 1, 10.0)  # fewer than the 0.01 % = 2 values percentile clips
    assert seen.numel() == relu_acts.numel() and (seen != relu_acts).sum() == 1
    assert seen.max() == 10.0 * relu_acts.max()
    scores = score_observers(seen, OBSERVERS, reference=relu_acts)
    mm = O.MinMaxObserver()
    mm(seen)
    x_hat = qlab.fake_quantize(relu_acts, mm.qparams())
    assert scores["MinMax"]["sqnr"] == qlab.metrics.sqnr(relu_acts, x_hat)
    assert scores["MinMax"]["range"][1] == pytest.approx(seen.max().item(), rel=1e-6)
    assert scores["Percentile"]["sqnr"] > scores["MinMax"]["sqnr"] + 10  # percentile holds


def test_score_observers_calibrates_on_batches_in_order(relu_acts):
    """A list of batches is what lesson 02's shootout calibrates on: one observer sees them all."""
    batches = list(relu_acts.split(5000))
    held_out = 2 * torch.relu(torch.randn(5000, generator=torch.Generator().manual_seed(1)))
    scores = score_observers(batches, {"Moving": O.MovingAverageMinMaxObserver}, reference=held_out)["Moving"]
    obs = O.MovingAverageMinMaxObserver()
    for b in batches:
        obs(b)
    assert torch.equal(scores["qparams"].scale, obs.qparams().scale)
    lo, hi = scores["range"]
    assert scores["clipped"] == ((held_out < lo) | (held_out > hi)).float().mean().item() > 0
    assert scores["seconds"] > 0
    minmax = {"MinMax": O.MinMaxObserver}
    whole = score_observers(batches, minmax)["MinMax"]  # no reference: scored on all the batches
    assert whole["clipped"] == 0
    assert whole["sqnr"] == score_observers(relu_acts, minmax)["MinMax"]["sqnr"]


def test_outlier_panel_draws_once_and_follows_sliders(relu_acts):
    panel = outlier_panel(relu_acts, OBSERVERS, name="acts", outliers=0)
    assert isinstance(panel, OutlierPanel)
    fig = panel.figure()
    assert panel.figure() is fig  # the default state is computed once
    assert all(name in panel.readout.value for name in OBSERVERS)
    before = panel.readout.value
    panel.outliers.value = 5
    assert panel.readout.value != before and panel.figure() is not fig
    assert "image/png" in panel._repr_mimebundle_()


def test_check_moving_average(capsys):
    assert check_moving_average(lambda r, b, c: r + c * (b - r))
    assert not check_moving_average(lambda r, b, c: c * r + (1 - c) * b)
    assert not check_moving_average(lambda r, b, c: 1 / 0)
    out = capsys.readouterr().out
    assert "✅" in out and "Hint" in out and "ZeroDivisionError" in out
