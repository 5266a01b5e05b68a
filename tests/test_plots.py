"""kit.figure and the lessons' figures modules: pure figure functions return matplotlib Figures
with titled, labelled axes."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import qlab  # noqa: E402
from qlab.lab.kit import figure
from qlab.lab.lessons.l01_quantization_math import figures as l01_figures
from qlab.lab.lessons.l02_observers_and_calibration import figures as l02_figures
from qlab.lab.lessons.l03_dynamic_quantization import figures as l03_figures
from qlab.lab.lessons.l04_static_quantization import figures as l04_figures
from qlab.lab.lessons.l05_quantization_aware_training import figures as l05_figures
from qlab.lab.lessons.l06_choosing_a_method import figures as l06_figures
from qlab.lab.lessons.l06_choosing_a_method import numbers


def _labelled(fig: Figure):
    assert isinstance(fig, Figure)
    assert fig.axes
    for ax in fig.axes:
        assert ax.get_title(), "every panel has a title"
        assert ax.get_ylabel() or not ax.get_yticks().size
    fig.canvas.draw()  # renders without error


@pytest.fixture
def quantized():
    x = torch.randn(2000)
    qp = qlab.qparams_from_range(x.min(), x.max(), qlab.qdtype(4, True), symmetric=True)
    levels = qlab.dequantize(torch.arange(qp.qmin, qp.qmax + 1), qp)
    return x, qlab.fake_quantize(x, qp), levels


def test_plot_quantization(quantized):
    x, x_hat, levels = quantized
    fig = l01_figures.plot_quantization(x, x_hat, levels, clip_range=(-1.0, 1.0), title="t")
    _labelled(fig)
    assert len(fig.axes) == 3  # x and the grid; the quantized values; the error
    assert fig.axes[1].get_yscale() == "log" and fig.axes[2].get_yscale() == "log"
    spikes = fig.axes[1].collections[0].get_segments()
    assert len(spikes) == len(torch.unique(x_hat))  # one spike per level in use
    assert not fig.axes[2].get_lines()  # no scale given: no ±scale/2 lines


def test_plot_quantization_draws_the_scale_it_is_given(quantized):
    """The ±scale/2 lines sit where the caller says, not where the plot guesses from the levels."""
    x, x_hat, levels = quantized
    fig = l01_figures.plot_quantization(x, x_hat, levels, scale=0.3)
    edges = sorted(line.get_xdata()[0] for line in fig.axes[2].get_lines())
    assert edges == pytest.approx([-0.15, 0.15])


def test_plot_quantization_many_levels_and_numpy_input(quantized):
    x, x_hat, _ = quantized
    fig = l01_figures.plot_quantization(x.numpy(), x_hat.numpy(), np.linspace(-3, 3, 256))
    _labelled(fig)


def test_plot_grid(quantized):
    x, _, levels = quantized
    qp = qlab.qparams_from_range(-1.0, 1.0, qlab.qdtype(3, False))
    codes = torch.arange(qp.qmin, qp.qmax + 1)
    levels = qlab.dequantize(codes, qp)
    xs = torch.tensor([-0.9, 0.1, 0.77])
    _labelled(l01_figures.plot_grid(levels, codes, xs, qlab.fake_quantize(xs, qp)))
    _labelled(l01_figures.plot_grid(levels, codes))


def test_plot_step_sizes():
    m = [0.01, 0.1, 1.0, 10.0]
    fig = l01_figures.plot_step_sizes(m, {"float32": [1e-9, 1e-8, 1e-7, 1e-6], "int8": [0.01] * 4})
    _labelled(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    # a value rounds to 0 once the step exceeds twice it: the line is step = 2|x|, not |x|
    (zero_line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("step = 2|x|")]
    assert list(zero_line.get_ydata()) == pytest.approx([2 * v for v in m])
    assert "rounds to 0" in zero_line.get_label()
    legend = ax.get_legend()  # outside the axes, on the right, so it covers no curve
    fig.canvas.draw()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_plot_sqnr_vs_bits():
    bits = list(range(2, 9))
    fig = l01_figures.plot_sqnr_vs_bits(
        bits, {"measured": [6.0 * b - 14 for b in bits]}, {"6 dB/bit": [6.02 * b for b in bits]}
    )
    _labelled(fig)
    assert len(fig.axes[0].get_lines()) == 2


def test_plot_channel_ranges():
    w = torch.randn(16, 32) * torch.logspace(-1, 1, 16)[:, None]
    fig = figure.plot_channel_ranges(
        w.amin(1), w.amax(1), torch.rand(16) * 10, torch.rand(16) * 10 + 30
    )
    _labelled(fig)
    assert len(fig.axes) == 2


def test_plot_channel_ranges_draws_the_per_tensor_grid():
    lo, hi = torch.tensor([-0.5, -0.2]), torch.tensor([0.3, 0.9])
    sym = figure.plot_channel_ranges(lo, hi, [1.0, 2.0], [3.0, 4.0]).axes[0]
    assert sorted(line.get_ydata()[0] for line in sym.get_lines()) == pytest.approx([-0.9, 0.9])
    aff = figure.plot_channel_ranges(lo, hi, [1.0, 2.0], [3.0, 4.0], symmetric=False).axes[0]
    assert sorted(line.get_ydata()[0] for line in aff.get_lines()) == pytest.approx([-0.5, 0.9])


# ---- lessons 03 and 04: speed figures (numbers shaped as qlab.lab.kit.timing returns them)

DYNAMIC = {"baseline": "fp32", "ms": {"fp32": 10.0, "torch.ao int8": 4.0, "qlab int8": 12.5},
           "speedup": {"fp32": 1.0, "torch.ao int8": 2.5, "qlab int8": 0.8}}
CNN = {"baseline": "fp32 channels_last",
       "ms": {"fp32 contiguous": 5.0, "fp32 channels_last": 3.0, "torch.ao int8": 1.5, "qlab int8": 150.0,
              "dynamic int8": 3.1},
       "speedup": {"fp32 contiguous": 0.6, "fp32 channels_last": 1.0, "torch.ao int8": 2.0, "qlab int8": 0.02,
                   "dynamic int8": 0.97}}


def _axes_labelled(fig):
    """Titled, y labelled (_labelled), and an x label under the bottom axes (the others share it)."""
    _labelled(fig)
    assert fig.axes[-1].get_xlabel()


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_plot_latency_writes_each_ratio_in_ms():
    fig = figure.plot_latency(DYNAMIC, "LSTM")
    _axes_labelled(fig)
    ax = fig.axes[0]
    assert ax.get_title() == "LSTM" and "ms" in ax.get_xlabel()
    assert ax.get_xscale() == "linear"  # 4..12.5 ms: no log axis needed
    assert _texts(ax) == ["  10 ms · baseline, 1.00x", "  4 ms · 2.50x fp32", "  12.5 ms · 0.80x fp32"]
    assert "ratio = fp32 time / time" in ax.get_xlabel()
    assert [p.get_width() for p in ax.patches] == [10.0, 4.0, 12.5]  # the times it was given
    assert len({p.get_hatch() for p in ax.patches}) == 3  # told apart by hatch, not colour alone


def test_plot_latency_log_axis_and_best_fp32_named():
    fig = figure.plot_latency(CNN)
    _axes_labelled(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()  # 1.5 .. 150 ms
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "fp32 channels_last (best fp32)" in labels and "fp32 contiguous" in labels
    assert "  150 ms · 0.02x best fp32" in _texts(ax) and "  3 ms · baseline, 1.00x" in _texts(ax)
    assert "ratio = best fp32 time / time" in ax.get_xlabel()


def test_plot_speedup_sweep():
    fig = figure.plot_speedup_sweep([128, 256, 512, 1024], {"torch.ao int8": [0.9, 1.3, 1.9, 2.4],
                                                           "qlab int8": [0.2, 0.3, 0.5, 0.6]}, "hidden size")
    _axes_labelled(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "hidden size"
    assert "speedup vs fp32" in ax.get_ylabel()
    one, *lines = ax.get_lines()
    assert list(one.get_ydata()) == [1.0, 1.0]  # the break-even line
    assert [list(line.get_ydata()) for line in lines] == [[0.9, 1.3, 1.9, 2.4], [0.2, 0.3, 0.5, 0.6]]
    assert len({line.get_marker() for line in lines}) == 2
    fig = figure.plot_speedup_sweep([1, 2, 3], {"a": [0.01, 1, 3]}, "batch", log_x=False)
    assert fig.axes[0].get_xscale() == "linear" and fig.axes[0].get_yscale() == "log"


def test_plot_pareto_draws_the_front_and_marks_the_default():
    points = {"fp32": (1.0, 1.0), "x86 default": (2.2, 0.946), "per-channel": (1.7, 0.976),
              "slow and bad": (1.2, 0.9)}
    front = ["fp32", "per-channel", "x86 default"]
    fig = figure.plot_pareto(points, "x86 default", "mean cosine to fp32", front=front)
    _axes_labelled(fig)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "mean cosine to fp32" and "speedup vs fp32" in ax.get_xlabel()
    (step,) = [line for line in ax.get_lines() if line.get_label().startswith("Pareto front")]
    assert set(step.get_xdata()) == {1.0, 1.7, 2.2} and set(step.get_ydata()) == {1.0, 0.976, 0.946}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "x86 default (torch.ao's x86 default)" in legend
    assert len({c.get_paths()[0].vertices.tobytes() for c in ax.collections[:4]}) == 4  # 4 marker shapes
    with pytest.raises(ValueError, match="marked='nope' is not one of the points"):
        figure.plot_pareto(points, "nope", "q")
    with pytest.raises(ValueError, match=r"front names \['ghost'\] that are not points"):
        figure.plot_pareto(points, "fp32", "q", front=["ghost"])


def test_plot_dynamic_scales():
    calls = [("short sentence", 0.01, 60), ("long sentence", 0.03, 40), ("code", 0.002, 127)]
    fig = l03_figures.plot_dynamic_scales(calls, weight_scale=0.004)
    _axes_labelled(fig)
    ax, ax_z = fig.axes
    assert ax.get_yscale() == "log"  # 0.002 .. 0.03
    assert list(ax.get_lines()[0].get_ydata()) == [0.01, 0.03, 0.002]
    assert ax.get_lines()[1].get_ydata()[0] == 0.004  # the one fixed weight scale
    assert list(ax_z.get_lines()[0].get_ydata()) == [60, 40, 127]
    assert [t.get_text() for t in ax_z.get_xticklabels()] == ["short sentence", "long sentence", "code"]


def test_one_colour_blind_safe_palette():
    okabe_ito = {"#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442"}
    assert set(figure.PALETTE) - {figure.GREY} <= okabe_ito
    styles = list(figure.CONFIG_STYLES.values())
    assert len({s[1] for s in styles}) == len(styles)  # each configuration has its own marker


def test_lesson03_layer_plots_label_their_axes():
    from qlab.lab.kit import figure
    from qlab.lab.lessons.l03_dynamic_quantization import figures as l03_figures

    fig = figure.plot_layer_scores({"a": 0.99, "b": 0.95, "c": 0.98}, "mean cosine", highlight=["b"])
    ax = fig.axes[0]
    assert ax.get_ylabel() == "mean cosine"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [p.get_hatch() for p in ax.patches] == [None, "//", None]
    fig = l03_figures.plot_input_outliers({"a": 3.0, "b": 80.0})
    assert fig.axes[0].get_yscale() == "log" and "median" in fig.axes[0].get_ylabel()
    fig = l03_figures.plot_alpha_curve([0.0, 0.5, 1.0], {"cosine": [0.9, 0.99, 0.95]}, 0.5)
    assert "α" in fig.axes[0].get_xlabel() and len(fig.axes[0].lines) == 2


def test_plot_stepper_shows_each_rules_share_of_equal_codes():
    diff = torch.zeros(100, dtype=torch.int64)
    diff[:3] = 1
    step = {"layer": "conv", "input_codes": torch.randint(0, 128, (4, 8, 8)), "input_zero_point": 3,
            "accumulator": torch.randint(-500, 500, (4, 8, 8)),
            "steps": {"float": {"diff": torch.zeros(100, dtype=torch.int64), "differ": 0.0, "max": 0},
                      "int32": {"diff": diff, "differ": 0.03, "max": 1},
                      "fixed_point": {"diff": diff, "differ": 0.03, "max": 1}}}
    fig = l04_figures.plot_stepper(step)
    _labelled(fig)
    texts = [t.get_text() for t in fig.axes[2].texts]
    assert texts == ["100 / 100\nmax diff 0", "97 / 100\nmax diff 1", "97 / 100\nmax diff 1"]


def test_plot_shift_marks_the_calibrated_range():
    fig = l04_figures.plot_shift([0.0, 1.0], {"ResNet": [1.0, 0.25]}, 1.0, "brightness", torch.randn(500),
                           torch.randn(500) + 1, (0.0, 4.0))
    _labelled(fig)
    span = [p for p in fig.axes[1].patches if p.get_label() == "input grid's range"]
    assert len(span) == 1
    x0 = span[0].get_x()  # axvspan draws a Rectangle from x0, width wide
    assert (x0, x0 + span[0].get_width()) == pytest.approx((0.0, 4.0))


def test_lesson05_plots_label_their_axes():
    from qlab.lab.lessons.l05_quantization_aware_training.numbers import ste_curves

    _labelled(l05_figures.plot_ste(ste_curves(3)))
    fig = l05_figures.plot_qat_curves({"4-bit": ([0, 4, 8], [0.5, 0.8, 0.9])}, {"4-bit": 0.6},
                                {"bn": 4, "observers": None})
    _labelled(fig)
    assert [t.get_text() for t in fig.axes[0].texts] == ["bn frozen"]
    sweep = {"net PTQ": [0.99, 0.9, 0.1], "net QAT": [0.99, 0.99, 0.96]}
    fig = l05_figures.plot_bits_sweep([8, 4, 2], sweep, "weight bits", reference={"net": 0.995})
    _labelled(fig)
    lines = fig.axes[0].get_lines()
    assert [ln.get_linestyle() for ln in lines[:2]] == ["--", "-"]  # PTQ dashed, QAT solid
    assert lines[0].get_color() == lines[1].get_color()  # one colour per model


def test_lesson06_plots():

    def row(method, loss, speedup, size):
        return {"model": "m", "method": method, "quality": 1 - loss, "metric": "test accuracy",
                "loss": loss, "size_bytes": size, "speedup": speedup, "baseline": "b", "data": "",
                "seconds": 0.0, "note": ""}

    rows = [row("fp32", 0, 1, 1e6), row("static", 0.05, 2, 3e5), row("QAT 8-bit", 0.0, 1.9, 3e5)]
    _labelled(l06_figures.plot_tradeoffs({"m": rows}))
    fig = l06_figures.plot_relative_sizes({"m": rows})
    _labelled(fig)
    assert [round(p.get_height()) for p in fig.axes[0].patches] == [100, 30, 30]
    flow = l06_figures.plot_decision_flow(numbers.decide(rows, 0.01))
    assert flow.axes[0].get_title() == "chosen: QAT 8-bit"
    bold = [t.get_text() for t in flow.axes[0].texts if t.get_fontweight() == "bold"]
    assert "4. QAT\n(low learning rate)" in bold and "keep fp32\n(or raise the tolerance)" not in bold


def test_observer_ranges_go_symlog_when_outliers_squeeze_the_bulk():
    torch.manual_seed(0)
    v = torch.randn(20000).abs()
    narrow = l02_figures.plot_observer_ranges(v, {"MinMax": (0.0, float(v.max()))})
    assert narrow.axes[0].get_xscale() == "linear"
    v[:3] = 40.0
    wide = l02_figures.plot_observer_ranges(v, {"MinMax": (0.0, 40.0), "Percentile": (0.0, 3.5)})
    wide.canvas.draw()
    assert wide.axes[0].get_xscale() == "symlog"
    assert "logarithmic beyond" in wide.axes[1].get_xlabel()
    assert "±" not in wide.axes[1].get_xlabel()  # the values are all >= 0
    ticks = [round(t, 6) for t in wide.axes[1].get_xticks()]
    assert 40.0 in ticks
    bulk = float(torch.quantile(v, 0.999))
    assert [t for t in ticks if bulk * 1.01 < t < 40.0] == [5.0, 10.0, 20.0]  # round numbers in the log part
    signed = v.clone()
    signed[3:10000] *= -1
    both = l02_figures.plot_observer_ranges(signed, {"MinMax": (float(signed.min()), 40.0)})
    both.canvas.draw()
    assert "linear up to ±" in both.axes[1].get_xlabel()
    assert min(both.axes[1].get_xticks()) < 0 < max(both.axes[1].get_xticks())


def test_symlog_ticks_keep_labels_apart():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    ax.set_xscale("symlog", linthresh=7.3, linscale=2.0)
    t = ax.xaxis.get_transform()
    ticks = l02_figures._symlog_ticks(t, 0.0, 599.0, 7.3)
    assert ticks[:3] == pytest.approx([0.0, 3.65, 7.3]) and ticks[-1] == 599.0
    pos = [float(t.transform([x])[0]) for x in ticks]
    span = pos[-1] - pos[0]
    assert all(np.diff(pos) >= 0.05 * span)
    assert len(ticks) >= 6  # some round numbers between 7.3 and 599


def test_channel_ranges_tell_the_two_scales_apart_by_shape():
    lo, hi = -torch.rand(16), torch.rand(16)
    fig = figure.plot_channel_ranges(lo, hi, torch.full((16,), 20.0), torch.full((16,), 30.0))
    markers = {ln.get_label(): ln.get_marker() for ln in fig.axes[1].get_lines()}
    assert markers == {"per-tensor scale\n(hollow squares)": "s", "per-channel scale\n(dots)": "o"}
    fig.canvas.draw()
    for ax in fig.axes:  # the legends sit outside the axes, so they hide no channel's marker
        assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1


def test_plot_quantization_per_channel_names_the_row_and_shades_nothing(quantized):
    """Per-channel, the grid and range drawn are one row's: they say so, and values outside that row's
    range are not shaded as clipped (each row has its own range)."""
    x, x_hat, levels = quantized
    fig = l01_figures.plot_quantization(x, x_hat, levels, clip_range=(-1.0, 1.0), scale=0.3, row=7)
    _labelled(fig)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "row 7's grid: 16 levels" in labels and "row 7's range [-1, 1]" in labels
    assert not any("clipped" in label for label in labels)
    assert "its own scale/2" in fig.axes[2].get_title()
    per_tensor = l01_figures.plot_quantization(x, x_hat, levels, clip_range=(-1.0, 1.0))
    legend = [t.get_text() for t in per_tensor.axes[0].get_legend().get_texts()]
    assert "clipped (outside the range)" in legend
