"""Lesson 03, its figures: data in, matplotlib Figure out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from qlab.lab.kit.figure import BLACK, BLUE, GREEN, MARKERS, ORANGE, PALETTE, as_numpy, log_axis, wide
from qlab.lab.kit.figure import plot_layer_scores as plot_layer_scores  # re-exported for the notebook
from qlab.lab.kit.figure import plot_pareto as plot_pareto  # re-exported for the notebook
from qlab.lab.kit.figure import plot_speedup_sweep as plot_speedup_sweep  # re-exported for the notebook


def plot_dynamic_scales(calls: Sequence[tuple[str, float, int]], weight_scale: float,
                        title: str = "") -> Figure:
    """The activation grid a dynamic layer chose on each call, beside its one fixed weight grid.

    calls: (label, activation scale, activation zero point) per call, as the layer chose them
    from that input's min and max. weight_scale: the weight's scale, fixed at conversion.
    Top: scales (log axis when they span more than 10x); bottom: zero points.
    """
    labels = [c[0] for c in calls]
    scales = as_numpy([c[1] for c in calls])
    zps = as_numpy([c[2] for c in calls])
    x = np.arange(len(calls))
    fig = Figure(figsize=(8.5, 5.8), layout="constrained")
    ax, ax_z = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    ax.plot(x, scales, "o", color=BLUE, ms=8, label="activation scale (chosen on each call)")
    ax.vlines(x, 0, scales, color=BLUE, lw=1, alpha=0.5)
    ax.axhline(weight_scale, color=ORANGE, ls="--", lw=2, label=f"weight scale (fixed): {weight_scale:.3g}")
    if wide(np.append(scales, weight_scale), 10.0):
        ax.set_yscale("log")
        log_axis(ax.yaxis)
        ax.set_ylabel("scale (float per integer step, log)")
    else:
        ax.set_ylim(0, max(scales.max(), weight_scale) * 1.15)
        ax.set_ylabel("scale (float per integer step)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or "Dynamic quantization: a new activation grid on every call")
    ax_z.plot(x, zps, "s", color=GREEN, ms=7)
    ax_z.vlines(x, 0, zps, color=GREEN, lw=1, alpha=0.5)
    ax_z.set_ylabel("activation zero point")
    ax_z.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax_z.set_xlabel("call (input)")
    ax_z.grid(True, axis="y", alpha=0.3)
    ax_z.set_title("Zero point chosen on each call (the weight's is 0: symmetric)", fontsize=10)
    return fig


def plot_input_outliers(ratios: Mapping[str, float], title: str = "") -> Figure:
    """Per layer, the largest input channel's max|x| over the median channel's (log scale): a
    tall bar is an input with an outlier channel, which stretches a per-tensor activation grid."""
    names = list(ratios)
    values = as_numpy([ratios[n] for n in names])
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(np.arange(len(names)), values, color=ORANGE, edgecolor="black", lw=0.4)
    ax.set_yscale("log")
    log_axis(ax.yaxis, "x")
    ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=7)
    ax.set_xlabel("the Linear whose input it is")
    ax.set_ylabel("largest channel max|x| / median channel (×, log)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.set_title(title or "Outlier channels in each Linear's input")
    return fig


def plot_alpha_curve(alphas: Sequence[float], quality: Mapping[str, Sequence[float]], current: float,
                     title: str = "") -> Figure:
    """Quality against SmoothQuant's α (the α measured so far), one line per measure, the
    current α marked."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, values) in enumerate(quality.items()):
        ax.plot(as_numpy(alphas), as_numpy(values), marker=MARKERS[i], color=PALETTE[i], label=name)
    ax.axvline(current, color=BLACK, ls="--", lw=1, label=f"α = {current:g}")
    ax.set_xlabel("α (0: weight columns flattened, 1: activation channels flattened)")
    ax.set_ylabel("mean cosine / NN agreement with fp32")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or "SmoothQuant: quality against α")
    return fig
