"""Lesson 02, its figures: data in, matplotlib Figure out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter

from qlab.lab.kit.figure import BLUE, GREEN, GREY, MARKERS, ORANGE, PALETTE, PURPLE, RED, SKY, as_numpy
from qlab.lab.kit.figure import plot_channel_ranges as plot_channel_ranges  # re-exported for the notebook

OBSERVER_COLORS = {
    "MinMax": RED,
    "MovingAverage": ORANGE,
    "Histogram": BLUE,
    "Percentile": GREEN,
    "MSE": PURPLE,
    "Entropy": SKY,
}


def plot_observer_ranges(
    values, ranges: Mapping[str, tuple[float, float]], scores: Mapping[str, str] | None = None,
    title: str = "", bins: int = 200,
) -> Figure:  # fmt: skip
    """Histogram of `values` (log count) with each observer's chosen [min, max] drawn on it.
    When a few outliers reach past 5x the 99.9th percentile of |values|, the value axis is
    linear up to that percentile and logarithmic beyond (symlog), so the bulk stays visible.

    ranges: observer name -> (min, max); scores: name -> a short text for the legend
    (e.g. "SQNR 38.1 dB"). One row of range bars below the histogram, one per observer.
    """
    v = as_numpy(values)
    fig = Figure(figsize=(9, 5.2), layout="constrained")
    ax, ax_r = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    bulk = float(np.quantile(np.abs(v), 0.999)) if v.size else 0.0
    wide = bulk > 0 and float(np.abs(v).max()) > 5 * bulk  # outliers would squeeze the bulk into a sliver
    edges = bins
    if wide:  # linear up to the bulk, logarithmic beyond: bins spaced evenly on that axis
        ax.set_xscale("symlog", linthresh=bulk, linscale=2.0)
        t = ax.xaxis.get_transform()
        lo_t, hi_t = t.transform([v.min(), v.max()])
        edges = t.inverted().transform(np.linspace(lo_t, hi_t, bins + 1))
    ax.hist(v, bins=edges, color=GREY, alpha=0.7, log=True)
    ax.set_ylabel("count (log)")
    ax.set_title(title or "Where each observer puts the range")
    names = list(ranges)
    for i, name in enumerate(names):
        lo, hi = ranges[name]
        color = OBSERVER_COLORS.get(name, PALETTE[i % len(PALETTE)])
        for edge in (lo, hi):
            ax.axvline(edge, color=color, lw=1.3, ls="--")
        label = name + (f"  ({scores[name]})" if scores and name in scores else "")
        ax_r.plot([lo, hi], [i, i], color=color, lw=6, solid_capstyle="butt", label=label)
    ax_r.set_yticks(range(len(names)), names)
    ax_r.set_ylim(len(names) - 0.5, -0.5)
    if wide:
        ticks = _symlog_ticks(ax_r.xaxis.get_transform(), float(v.min()), float(v.max()), bulk)
        ax_r.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax_r.xaxis.set_minor_locator(LogLocator(subs=()))
        up_to = f"{bulk:.3g}" if v.min() >= 0 else f"±{bulk:.3g}"
        ax_r.set_xlabel(f"value (linear up to {up_to}, where 99.9 % of the values lie; logarithmic beyond)")
    else:
        ax_r.set_xlabel("value")
    ax_r.grid(True, axis="x", alpha=0.3)
    ax_r.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return fig


def _symlog_ticks(transform, vmin: float, vmax: float, bulk: float, gap: float = 0.05) -> list[float]:
    """Ticks for a symlog axis that is linear up to ±bulk: 0, bulk/2 and bulk, the extremes beyond it,
    and round numbers (1, 2, 3, 5 times a power of ten) in the logarithmic part, each kept only if it
    lies at least `gap` of the axis from every tick kept before it, so no two labels collide."""
    far = max(abs(vmin), abs(vmax))
    slack = 1e-6 * far  # float round-off only: no tick outside the data

    def inside(t):
        return vmin - slack <= t <= vmax + slack

    must = [t for p in (0.0, bulk / 2, bulk) for t in (p, -p) if inside(t)]
    must += [t for t in (vmin, vmax) if abs(t) > bulk]  # the farthest value on each side

    def pos(t):  # where t lies on the axis
        return float(np.ravel(transform.transform(np.array([t])))[0])

    span = pos(vmax) - pos(vmin)
    kept = sorted(set(must))
    decades = range(int(np.floor(np.log10(bulk))), int(np.ceil(np.log10(far))) + 1)
    nice = sorted((m * 10.0**k for k in decades for m in (1, 2, 3, 5)))
    for t in (c for r in nice if bulk < r < far for c in (r, -r)):
        if inside(t) and all(abs(pos(t) - pos(k)) >= gap * span for k in kept):
            kept.append(t)
    return sorted(kept)


def plot_calibration_curves(
    sizes, curves: Mapping[str, Sequence], ylabel: str, title: str = ""
) -> Figure:
    """One line per observer: a quality measure (e.g. SQNR) against the calibration-set size.

    Each curve holds one value per size, or one sequence per size (a value for each random
    subset of that size): then the line joins the medians and a bar spans the subsets' min to
    max. The observers' points are nudged apart along x so that overlapping lines stay visible.
    """
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    s = as_numpy(sizes)
    n = len(curves)
    spread = False
    for i, (name, ys) in enumerate(curves.items()):
        rows = [as_numpy(y) for y in ys]
        med = np.array([np.median(r) for r in rows])
        xs = s * 2 ** (0.08 * (i - (n - 1) / 2))  # a small nudge on the log axis
        color = OBSERVER_COLORS.get(name, PALETTE[i % len(PALETTE)])
        ax.plot(xs, med, marker=MARKERS[i % len(MARKERS)], ms=4, color=color, label=name)
        if any(r.size > 1 for r in rows):
            spread = True
            lo, hi = np.array([r.min() for r in rows]), np.array([r.max() for r in rows])
            ax.errorbar(xs, med, yerr=[med - lo, hi - med], fmt="none", ecolor=color, elinewidth=1,
                        capsize=2, alpha=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(s, [f"{v:g}" for v in s])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("calibration images (log scale)")
    ax.set_ylabel(ylabel + ("\nmedian; bar: min to max over subsets" if spread else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or f"{ylabel} against calibration-set size")
    return fig


def plot_observer_bits(bits, accuracy: Mapping[str, Sequence[float]], title: str = "",
                       reference: float | None = None, zoom: tuple[float, float] | None = None,
                       ylabel: str = "test accuracy (%)") -> Figure:
    """Accuracy (a fraction, drawn in %) against the activations' bit width, one line per observer
    (its colour, and its own marker shape); points are nudged apart along x so that observers
    with the same accuracy stay visible. reference: the fp32 accuracy, a dotted line.
    zoom: (lo, hi) in %: a second panel, on the right, shows the same lines on that range only."""
    fig = Figure(figsize=(11 if zoom else 7.5, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, width_ratios=[1, 1]) if zoom else [fig.add_subplot()]
    b = as_numpy(bits)
    n = len(accuracy)
    for ax in axes:
        for i, (name, acc) in enumerate(accuracy.items()):
            color = OBSERVER_COLORS.get(name, PALETTE[i % len(PALETTE)])
            ax.plot(b + 0.06 * (i - (n - 1) / 2), 100 * as_numpy(acc), marker=MARKERS[i % len(MARKERS)], ms=6,
                    color=color, label=name, lw=1.3, alpha=0.9)
        if reference is not None:
            ax.axhline(100 * reference, color=GREY, ls=":", lw=1.2, label=f"fp32 ({100 * reference:.1f} %)")
        ax.set_xticks(b, [f"{v:g}" for v in b])
        ax.set_xlabel("activation bits (unsigned grid of 2^bits levels)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].set_ylim(0, 102)
    axes[0].legend(fontsize=9, loc="lower right")
    title = title or "Accuracy against the activations' bit width, per observer"
    if zoom:  # one title over both panels, so that neither panel's title runs into the other's
        fig.suptitle(title)
        axes[0].set_title("all of it, 0 to 100 %", fontsize=10)
        axes[1].set_ylim(*zoom)
        axes[1].set_ylabel(f"{ylabel}, {zoom[0]:g} to {zoom[1]:g} only")
        axes[1].set_title(f"zoomed in to {zoom[0]:g}–{zoom[1]:g} % (points below it are left out)",
                          fontsize=10)
    else:
        axes[0].set_title(title)
    return fig
