"""Figures for the lessons: data in, matplotlib Figure out.

Plots never compute: every number they draw comes from qlab (or the lesson, or
experiments.py) and is passed in, the quantization scale included. The only work done here is
binning for histograms (and x_hat - x for an error histogram). Figures are built with
`matplotlib.figure.Figure` rather than pyplot, so they never pile up in pyplot's state;
in a notebook, show one by making it the cell's last expression or with `display(fig)`.

One section per lesson; add yours at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

BLUE, ORANGE, GREEN, RED, GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f"


def _np(t) -> np.ndarray:
    """A torch tensor, numpy array, list or number as a flat float64 numpy array."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64).ravel()


# ---------------------------------------------------------------------------------------
# Lesson 01: quantization math
# ---------------------------------------------------------------------------------------


def plot_step_sizes(magnitudes, steps: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """The gap to the next representable value (the 'step') at each magnitude, log-log.

    steps: label -> one step per magnitude (NaN where the format cannot hold |x|). Float
    formats have steps that grow with |x|; an integer grid has one step, its scale.
    """
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    m = _np(magnitudes)
    for label, s in steps.items():
        s = _np(s)  # NaN where the format cannot hold |x| (outside an integer grid's range)
        flat = np.nanmax(s) == np.nanmin(s)
        ax.plot(m, s, ls="--" if flat else "-", marker=None if flat else "o", ms=3, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("magnitude |x|")
    ax.set_ylabel("step to the next representable value")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or "Float steps grow with |x|; an integer grid has one step: the scale")
    return fig


def plot_grid(levels, codes, x=None, x_hat=None, title: str = "") -> Figure:
    """A float number line with the quantization grid drawn on it.

    levels: the float value of each grid point, (code - zero_point) * scale.
    codes: the integer code of each grid point, written under it.
    x, x_hat: optional sample values and where each one lands on the grid (arrows).
    """
    levels, codes = _np(levels), _np(codes).astype(int)
    fig = Figure(figsize=(9, 3.0), layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(0, color="black", lw=1)
    ax.vlines(levels, -0.2, 0.2, color=BLUE, lw=2)
    for lv, c in zip(levels, codes, strict=True):
        ax.text(lv, -0.3, f"{lv:.3g}", ha="center", va="top", fontsize=9, color=BLUE)
        ax.text(lv, -0.62, f"q={c}", ha="center", va="top", fontsize=9)
    if x is not None:
        x, x_hat = _np(x), _np(x_hat)
        ax.plot(x, np.full_like(x, 1.0), "v", color=ORANGE, ms=8)
        for xi, yi in zip(x, x_hat, strict=True):
            ax.text(xi, 1.12, f"{xi:.3g}", ha="center", va="bottom", fontsize=8, color=ORANGE)
            ax.annotate(
                "", xy=(yi, 0.22), xytext=(xi, 0.95),
                arrowprops=dict(arrowstyle="->", color=ORANGE, lw=1.2),
            )
    pad = 0.08 * (levels.max() - levels.min() + 1e-12)
    lo = min(levels.min(), x.min() if x is not None else np.inf) - pad
    hi = max(levels.max(), x.max() if x is not None else -np.inf) + pad
    ax.set_xlim(lo, hi)
    ax.set_ylim(-1.0, 1.4)
    ax.set_yticks([])
    ax.set_xlabel(
        "float value   (orange: values x and where each one lands;  "
        "blue: grid points with their integer code q)"
    )
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or "The quantization grid: x -> nearest grid point")
    return fig


def plot_quantization(
    x, x_hat, levels, clip_range=None, title: str = "", bins: int = 200, scale: float | None = None
) -> Figure:
    """The interactive panel's figure: what quantization does to a tensor.

    Top: histogram of x with a line at every grid level and the clipping range shaded.
    Bottom: histogram of the error x_hat - x (log count) and, when `scale` is given, lines
    at ±scale/2, where rounding error ends and clipping error begins.
    """
    x, x_hat, levels = _np(x), _np(x_hat), _np(levels)
    err = x_hat - x
    fig = Figure(figsize=(9, 6.2), layout="constrained")
    ax, ax_err = fig.subplots(2, 1, height_ratios=[3, 2])

    ax.hist(x, bins=bins, color=GREY, alpha=0.75, label="values of x")
    many = len(levels) > 64
    ax.vlines(
        levels, 0, 1, transform=ax.get_xaxis_transform(), color=BLUE,
        lw=0.5 if many else 1.0, alpha=0.35 if many else 0.8,
        label=f"grid: {len(levels)} levels",
    )
    left, right = x.min(), x.max()
    if clip_range is not None:
        lo, hi = float(clip_range[0]), float(clip_range[1])
        ax.axvline(lo, color=RED, lw=1.5, label=f"range [{lo:.3g}, {hi:.3g}]")
        ax.axvline(hi, color=RED, lw=1.5)
        clipped = "clipped (outside the range)"
        if lo > left:
            ax.axvspan(left, lo, color=RED, alpha=0.12, lw=0, label=clipped)
            clipped = None
        if hi < right:
            ax.axvspan(hi, right, color=RED, alpha=0.12, lw=0, label=clipped)
        left, right = min(left, lo), max(right, hi)
    left, right = min(left, levels.min()), max(right, levels.max())
    span = right - left
    ax.set_xlim(left - 0.02 * span, right + 0.02 * span)
    ax.set_xlabel("value of x")
    ax.set_ylabel("count")
    ax.legend(loc="upper right", fontsize=9)
    ax.set_title(title or "x and its quantization grid")

    ax_err.hist(err, bins=bins, color=ORANGE, alpha=0.85)
    ax_err.set_yscale("log")
    ax_err.set_ylim(bottom=0.7)
    if scale is not None:
        half = scale / 2
        for s in (-half, half):
            ax_err.axvline(s, color=BLUE, ls="--", lw=1)
        ax_err.text(
            half, 0.95, "  ±scale/2", transform=ax_err.get_xaxis_transform(),
            va="top", fontsize=9, color=BLUE,
        )
    ax_err.set_xlabel("quantization error  x_hat - x")
    ax_err.set_ylabel("count (log)")
    ax_err.set_title("Error: rounding (inside ±scale/2) and clipping (outside)", fontsize=10)
    return fig


def plot_sqnr_vs_bits(
    bits,
    measured: Mapping[str, Sequence[float]],
    reference: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
) -> Figure:
    """SQNR (dB) against bit width: measured curves as lines with dots, references dashed."""
    b = _np(bits)
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for label, y in measured.items():
        ax.plot(b, _np(y), marker="o", lw=2, label=label)
    for label, y in (reference or {}).items():
        ax.plot(b, _np(y), ls="--", color="black", lw=1.2, label=label)
    ax.set_xticks(b)
    ax.set_xlabel("bits")
    ax.set_ylabel("SQNR (dB, higher is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or "SQNR versus bits")
    return fig


def plot_channel_ranges(
    ch_min, ch_max, sqnr_per_tensor, sqnr_per_channel, title: str = ""
) -> Figure:
    """Per-tensor versus per-channel on one weight matrix.

    Top: the [min, max] range of every output channel (one thin bar each).
    Bottom: each channel's SQNR with one scale for the whole tensor vs a scale per channel.
    """
    lo, hi = _np(ch_min), _np(ch_max)
    s_t, s_c = _np(sqnr_per_tensor), _np(sqnr_per_channel)
    ch = np.arange(len(lo))
    fig = Figure(figsize=(9, 6.2), layout="constrained")
    ax, ax_s = fig.subplots(2, 1, sharex=True)
    ax.vlines(ch, lo, hi, color=BLUE, lw=1.2)
    ax.axhline(lo.min(), color=RED, ls="--", lw=1, label="whole tensor's [min, max]")
    ax.axhline(hi.max(), color=RED, ls="--", lw=1)
    ax.set_ylabel("weight value")
    ax.set_title(title or "Each output channel's [min, max]")
    ax.legend(loc="upper right", fontsize=9)

    ax_s.plot(ch, s_c, ".", color=GREEN, ms=4, label="per-channel scale")
    ax_s.plot(ch, s_t, ".", color=RED, ms=4, label="per-tensor scale")
    ax_s.set_xlabel("output channel")
    ax_s.set_ylabel("SQNR of the channel (dB)")
    ax_s.grid(True, alpha=0.3)
    ax_s.legend(loc="lower right", fontsize=9, markerscale=3)
    ax_s.set_title("Quality of each channel after int8 quantization", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------
# Lesson 02: observers and calibration
# ---------------------------------------------------------------------------------------

OBSERVER_COLORS = {
    "MinMax": RED,
    "MovingAverage": ORANGE,
    "Histogram": BLUE,
    "Percentile": GREEN,
    "MSE": "#9467bd",
    "Entropy": "#8c564b",
}


def plot_observer_ranges(
    values, ranges: Mapping[str, tuple[float, float]], scores: Mapping[str, str] | None = None,
    title: str = "", bins: int = 200,
) -> Figure:  # fmt: skip
    """Histogram of `values` (log count) with each observer's chosen [min, max] drawn on it.

    ranges: observer name -> (min, max); scores: name -> a short text for the legend
    (e.g. "SQNR 38.1 dB"). One row of range bars below the histogram, one per observer.
    """
    v = _np(values)
    fig = Figure(figsize=(9, 5.2), layout="constrained")
    ax, ax_r = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    ax.hist(v, bins=bins, color=GREY, alpha=0.7, log=True)
    ax.set_ylabel("count (log)")
    ax.set_title(title or "Where each observer puts the range")
    names = list(ranges)
    for i, name in enumerate(names):
        lo, hi = ranges[name]
        color = OBSERVER_COLORS.get(name, f"C{i}")
        for edge in (lo, hi):
            ax.axvline(edge, color=color, lw=1.3, ls="--")
        label = name + (f"  ({scores[name]})" if scores and name in scores else "")
        ax_r.plot([lo, hi], [i, i], color=color, lw=6, solid_capstyle="butt", label=label)
    ax_r.set_yticks(range(len(names)), names)
    ax_r.set_ylim(len(names) - 0.5, -0.5)
    ax_r.set_xlabel("value")
    ax_r.grid(True, axis="x", alpha=0.3)
    ax_r.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return fig


def plot_calibration_curves(
    sizes, curves: Mapping[str, Sequence[float]], ylabel: str, title: str = ""
) -> Figure:
    """One line per observer: a quality measure (e.g. SQNR) against the calibration-set size."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    s = _np(sizes)
    for i, (name, ys) in enumerate(curves.items()):
        ax.plot(s, _np(ys), marker="o", ms=4, color=OBSERVER_COLORS.get(name, f"C{i}"), label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("calibration images")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or f"{ylabel} against calibration-set size")
    return fig
