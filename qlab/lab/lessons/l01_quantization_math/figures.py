"""Lesson 01, its figures: data in, matplotlib Figure out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from qlab.lab.kit.figure import BLUE, GREY, MARKERS, ORANGE, PALETTE, RED, as_numpy
from qlab.lab.kit.figure import plot_channel_ranges as plot_channel_ranges  # re-exported for the notebook


def plot_step_sizes(magnitudes, steps: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """The gap to the next representable value (the 'step') at each magnitude, log-log.

    steps: label -> one step per magnitude (NaN where the format cannot hold |x|). Float
    formats have steps that grow with |x|; an integer grid has one step, its scale.
    """
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.add_subplot()
    m = as_numpy(magnitudes)
    for i, (label, s) in enumerate(steps.items()):
        s = as_numpy(s)  # NaN where the format cannot hold |x| (outside an integer grid's range)
        flat = np.nanmax(s) == np.nanmin(s)
        ax.plot(m, s, ls="--" if flat else "-", marker=None if flat else MARKERS[i % len(MARKERS)], ms=3,
                color=PALETTE[i % len(PALETTE)], label=label)
    # x rounds to 0 once |x| < step / 2 (on a grid with 0 as a level): above the line step = 2|x|
    ax.plot(m, 2 * m, color=GREY, ls=":", lw=1.2, label="step = 2|x|: above it,\n|x| rounds to 0")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("magnitude |x|")
    ax.set_ylabel("step to the next representable value")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: it hides no curve
    ax.set_title(title or "Float steps grow with |x|; an integer grid has one step: the scale")
    return fig


def plot_grid(levels, codes, x=None, x_hat=None, title: str = "") -> Figure:
    """A float number line with the quantization grid drawn on it.

    levels: the float value of each grid point, (code - zero_point) * scale.
    codes: the integer code of each grid point, written under it.
    x, x_hat: optional sample values and where each one lands on the grid (arrows).
    """
    levels, codes = as_numpy(levels), as_numpy(codes).astype(int)
    fig = Figure(figsize=(9, 3.0), layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(0, color="black", lw=1)
    ax.vlines(levels, -0.2, 0.2, color=BLUE, lw=2)
    for lv, c in zip(levels, codes, strict=True):
        ax.text(lv, -0.3, f"{lv:.3g}", ha="center", va="top", fontsize=9, color=BLUE)
        ax.text(lv, -0.62, f"q={c}", ha="center", va="top", fontsize=9)
    if x is not None:
        x, x_hat = as_numpy(x), as_numpy(x_hat)
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
    x, x_hat, levels, clip_range=None, title: str = "", bins: int = 200, scale: float | None = None,
    row: int | None = None,
) -> Figure:
    """The interactive panel's figure: what quantization does to a tensor.

    Top: histogram of x with a line at every grid level and the clipping range shaded.
    Middle: the quantized values x_hat, one spike per grid level (log count): at low bits most
    values land on a few levels, often 0.
    Bottom: histogram of the error x_hat - x (log count, so that the few clipped values still
    show) and, when `scale` is given, lines at ±scale/2, where rounding error ends and clipping
    error begins.
    Per-channel (`row` given): levels, clip_range and scale are those of that one row; every row
    has its own, so nothing is shaded as clipped and the error lines are that row's ±scale/2.
    """
    x, x_hat, levels = as_numpy(x), as_numpy(x_hat), as_numpy(levels)
    whose = "" if row is None else f"row {row}'s "
    err = x_hat - x
    fig = Figure(figsize=(9, 8.2), layout="constrained")
    ax, ax_q, ax_err = fig.subplots(3, 1, height_ratios=[3, 1.6, 2])

    ax.hist(x, bins=bins, color=GREY, alpha=0.75, label="values of x")
    many = len(levels) > 64
    ax.vlines(
        levels, 0, 1, transform=ax.get_xaxis_transform(), color=BLUE,
        lw=0.5 if many else 1.0, alpha=0.35 if many else 0.8,
        label=f"{whose}grid: {len(levels)} levels",
    )
    left, right = x.min(), x.max()
    if clip_range is not None:
        lo, hi = float(clip_range[0]), float(clip_range[1])
        ax.axvline(lo, color=RED, lw=1.5, label=f"{whose}range [{lo:.3g}, {hi:.3g}]")
        ax.axvline(hi, color=RED, lw=1.5)
        clipped = "clipped (outside the range)"
        # per-channel, each row has its own range: what lies outside this row's is not clipped
        if lo > left and row is None:
            ax.axvspan(left, lo, color=RED, alpha=0.12, lw=0, label=clipped)
            clipped = None
        if hi < right and row is None:
            ax.axvspan(hi, right, color=RED, alpha=0.12, lw=0, label=clipped)
        left, right = min(left, lo), max(right, hi)
    left, right = min(left, levels.min()), max(right, levels.max())
    span = right - left
    ax.set_xlim(left - 0.02 * span, right + 0.02 * span)
    ax.set_xlabel("value of x")
    ax.set_ylabel("count")
    ax.legend(loc="upper right", fontsize=9)
    ax.set_title(title or "x and its quantization grid")

    values, counts = np.unique(x_hat, return_counts=True)
    ax_q.vlines(values, 0.8, counts, color=BLUE, lw=1.5 if len(values) <= 64 else 0.6)
    ax_q.set_yscale("log")
    ax_q.set_ylim(bottom=0.8)
    ax_q.set_xlim(ax.get_xlim())
    top = values[np.argmax(counts)] + 0.0  # -0.0 prints as 0
    ax_q.set_xlabel("value of x_hat (one spike per grid level in use)")
    ax_q.set_ylabel("count (log)")
    ax_q.set_title(f"Quantized values: {len(values)} levels in use; the busiest, {top:.3g}, holds "
                   f"{counts.max() / counts.sum():.0%} of them", fontsize=10)

    ax_err.hist(err, bins=bins, color=ORANGE, alpha=0.85)
    ax_err.set_yscale("log")
    ax_err.set_ylim(bottom=0.7)
    if scale is not None:
        half = scale / 2
        for s in (-half, half):
            ax_err.axvline(s, color=BLUE, ls="--", lw=1)
        ax_err.text(
            half, 0.95, "  ±scale/2" + ("" if row is None else f" (row {row})"),
            transform=ax_err.get_xaxis_transform(),
            va="top", fontsize=9, color=BLUE,
        )
    ax_err.set_xlabel("quantization error  x_hat - x")
    ax_err.set_ylabel("count (log)")
    if row is None:
        ax_err.set_title("Error: rounding (inside ±scale/2) and clipping (outside); log count, so the few "
                         "clipped values show", fontsize=10)
    else:
        ax_err.set_title("Error: each row rounds within ±its own scale/2 (wide rows, wide errors); log count",
                         fontsize=10)
    return fig


def plot_sqnr_vs_bits(
    bits,
    measured: Mapping[str, Sequence[float]],
    reference: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
) -> Figure:
    """SQNR (dB) against bit width: measured curves as lines with dots, references dashed."""
    b = as_numpy(bits)
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, y) in enumerate(measured.items()):
        ax.plot(b, as_numpy(y), marker=MARKERS[i % len(MARKERS)], lw=2, color=PALETTE[i % len(PALETTE)],
                label=label)
    for label, y in (reference or {}).items():
        ax.plot(b, as_numpy(y), ls="--", color="black", lw=1.2, label=label)
    ax.set_xticks(b)
    ax.set_xlabel("bits")
    ax.set_ylabel("SQNR (dB, higher is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or "SQNR versus bits")
    return fig
