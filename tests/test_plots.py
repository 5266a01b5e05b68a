"""plots.py: pure figure functions return matplotlib Figures with titled, labelled axes."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import qlab  # noqa: E402
from qlab.lab import plots  # noqa: E402


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
    fig = plots.plot_quantization(x, x_hat, levels, clip_range=(-1.0, 1.0), title="t")
    _labelled(fig)
    assert len(fig.axes) == 2
    assert fig.axes[1].get_yscale() == "log"
    assert not fig.axes[1].get_lines()  # no scale given: no ±scale/2 lines


def test_plot_quantization_draws_the_scale_it_is_given(quantized):
    """The ±scale/2 lines sit where the caller says, not where the plot guesses from the levels."""
    x, x_hat, levels = quantized
    fig = plots.plot_quantization(x, x_hat, levels, scale=0.3)
    edges = sorted(line.get_xdata()[0] for line in fig.axes[1].get_lines())
    assert edges == pytest.approx([-0.15, 0.15])


def test_plot_quantization_many_levels_and_numpy_input(quantized):
    x, x_hat, _ = quantized
    fig = plots.plot_quantization(x.numpy(), x_hat.numpy(), np.linspace(-3, 3, 256))
    _labelled(fig)


def test_plot_grid(quantized):
    x, _, levels = quantized
    qp = qlab.qparams_from_range(-1.0, 1.0, qlab.qdtype(3, False))
    codes = torch.arange(qp.qmin, qp.qmax + 1)
    levels = qlab.dequantize(codes, qp)
    xs = torch.tensor([-0.9, 0.1, 0.77])
    _labelled(plots.plot_grid(levels, codes, xs, qlab.fake_quantize(xs, qp)))
    _labelled(plots.plot_grid(levels, codes))


def test_plot_step_sizes():
    m = [0.01, 0.1, 1.0, 10.0]
    fig = plots.plot_step_sizes(m, {"float32": [1e-9, 1e-8, 1e-7, 1e-6], "int8": [0.01] * 4})
    _labelled(fig)
    assert fig.axes[0].get_xscale() == "log"


def test_plot_sqnr_vs_bits():
    bits = list(range(2, 9))
    fig = plots.plot_sqnr_vs_bits(
        bits, {"measured": [6.0 * b - 14 for b in bits]}, {"6 dB/bit": [6.02 * b for b in bits]}
    )
    _labelled(fig)
    assert len(fig.axes[0].get_lines()) == 2


def test_plot_channel_ranges():
    w = torch.randn(16, 32) * torch.logspace(-1, 1, 16)[:, None]
    fig = plots.plot_channel_ranges(
        w.amin(1), w.amax(1), torch.rand(16) * 10, torch.rand(16) * 10 + 30
    )
    _labelled(fig)
    assert len(fig.axes) == 2
