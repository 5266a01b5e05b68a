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
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

# Okabe & Ito's colour-blind-safe palette, the one palette of every qlab figure. Comparisons differ
# by marker shape (or hatch) too, so no figure relies on telling two colours apart.
BLUE, ORANGE, GREEN, RED, GREY = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#7F7F7F"
SKY, PURPLE, YELLOW, BLACK = "#56B4E9", "#CC79A7", "#F0E442", "#000000"
PALETTE = (BLUE, ORANGE, GREEN, RED, SKY, PURPLE, GREY, YELLOW)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


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
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.add_subplot()
    m = _np(magnitudes)
    for i, (label, s) in enumerate(steps.items()):
        s = _np(s)  # NaN where the format cannot hold |x| (outside an integer grid's range)
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
    x, x_hat, levels = _np(x), _np(x_hat), _np(levels)
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
    b = _np(bits)
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, y) in enumerate(measured.items()):
        ax.plot(b, _np(y), marker=MARKERS[i % len(MARKERS)], lw=2, color=PALETTE[i % len(PALETTE)],
                label=label)
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
    ch_min, ch_max, sqnr_per_tensor, sqnr_per_channel, title: str = "", symmetric: bool = True
) -> Figure:
    """Per-tensor versus per-channel on one weight matrix.

    Top: the [min, max] range of every output channel (one thin bar each), and the range the
    per-tensor grid covers: ±max|x| when symmetric (the default), else the tensor's [min, max].
    Bottom: each channel's SQNR with one scale for the whole tensor vs a scale per channel.
    """
    lo, hi = _np(ch_min), _np(ch_max)
    s_t, s_c = _np(sqnr_per_tensor), _np(sqnr_per_channel)
    ch = np.arange(len(lo))
    fig = Figure(figsize=(10, 6.2), layout="constrained")
    ax, ax_s = fig.subplots(2, 1, sharex=True)
    ax.vlines(ch, lo, hi, color=BLUE, lw=1.2)
    if symmetric:
        amax = max(-lo.min(), hi.max(), 0.0)
        ends, label = (-amax, amax), "per-tensor symmetric\ngrid: ±max|x|"
    else:
        ends, label = (min(lo.min(), 0.0), max(hi.max(), 0.0)), "per-tensor grid:\nthe tensor's [min, max]"
    ax.axhline(ends[0], color=ORANGE, ls="--", lw=1.2, label=label)
    ax.axhline(ends[1], color=ORANGE, ls="--", lw=1.2)
    ax.set_ylabel("weight value")
    ax.set_title(title or "Each output channel's [min, max]")
    outside = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)  # the legends hide no point
    ax.legend(**outside)

    # different shapes, not only colours; hollow squares under small dots, so neither hides the other
    ax_s.plot(ch, s_t, "s", mfc="none", mec=ORANGE, ms=4, mew=0.8, label="per-tensor scale\n(hollow squares)")
    ax_s.plot(ch, s_c, "o", color=BLUE, ms=2, label="per-channel scale\n(dots)")
    ax_s.set_xlabel("output channel")
    ax_s.set_ylabel("SQNR of the channel (dB)")
    ax_s.grid(True, alpha=0.3)
    ax_s.legend(**outside, markerscale=2)
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
    v = _np(values)
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
    s = _np(sizes)
    n = len(curves)
    spread = False
    for i, (name, ys) in enumerate(curves.items()):
        rows = [_np(y) for y in ys]
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
    b = _np(bits)
    n = len(accuracy)
    for ax in axes:
        for i, (name, acc) in enumerate(accuracy.items()):
            color = OBSERVER_COLORS.get(name, PALETTE[i % len(PALETTE)])
            ax.plot(b + 0.06 * (i - (n - 1) / 2), 100 * _np(acc), marker=MARKERS[i % len(MARKERS)], ms=6,
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


# ---------------------------------------------------------------------------------------
# Lessons 03 and 04: dynamic and static quantization, speed
# ---------------------------------------------------------------------------------------

#: one colour, marker and hatch per configuration of the speed figures (matched by name prefix)
CONFIG_STYLES = {
    "fp32": (GREY, "o", ""),
    "torch.ao int8": (BLUE, "s", "//"),
    "qlab int8": (ORANGE, "^", ".."),
    "dynamic int8": (GREEN, "D", "xx"),
    "PT2E int8": (PURPLE, "P", "\\\\"),
    "torchao int8": (PURPLE, "X", "\\\\"),
    "torch.ao quantize_dynamic": (BLUE, "v", "//"),
}
COMPILED_HATCH = "oo"  # lesson 07: a compiled path keeps its method's colour and gets this hatch


def _config_style(name: str, i: int) -> tuple[str, str, str]:
    """(colour, marker, hatch) of a configuration: by its name's prefix, else by its position; a
    name with "compiled" in it gets COMPILED_HATCH, so eager and compiled differ by pattern too."""
    style = next((s for prefix, s in CONFIG_STYLES.items() if name.startswith(prefix)), None)
    if style is None:
        style = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)], ("\\\\", "++", "--", "||")[i % 4]
    return (style[0], style[1], COMPILED_HATCH) if "compiled" in name else style


def _wide(values, factor: float = 10.0) -> bool:
    """True when positive values span more than `factor`: a log axis shows them all."""
    v = _np(values)
    v = v[np.isfinite(v)]
    return v.size > 1 and (v > 0).all() and v.max() / v.min() > factor


def fmt_ms(ms: float) -> str:
    """A latency for a label: three significant digits, whole milliseconds from 100 ms on."""
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def _log_axis(axis, suffix: str = "") -> None:
    """Ticks at 1, 2, 5 per decade written as plain numbers ("0.5x", not "5 x 10^-1")."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{suffix}"))
    axis.set_minor_formatter(NullFormatter())


def plot_latency(results: Mapping, title: str = "") -> Figure:
    """Latency of each configuration as a horizontal bar (ms), its speedup vs fp32 written on it
    ("x fp32", or "x best fp32" when the baseline is another fp32 configuration).

    results: what qlab.lab.bench.time_dynamic / time_cnn return: "ms" {config: ms}, "speedup"
    {config: baseline ms / ms} and "baseline" (the fp32 configuration the ratios divide by);
    optionally "marked", a configuration drawn with a thick outline and "◀ selected", and "labels",
    {config: text} added after its time (e.g. its accuracy).
    Bars differ by hatch as well as colour; the time axis is logarithmic when the times span
    more than 10x (qlab's own integer path can be 100x slower than torch's kernels).
    """
    ms, ratio = dict(results["ms"]), dict(results["speedup"])
    baseline = results.get("baseline")
    names = list(ms)
    extra = results.get("labels", {})
    fig = Figure(figsize=(11 if extra else 8.5, 0.55 * len(names) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(names))
    marked = results.get("marked")
    against = "fp32" if baseline in (None, "fp32") else "best fp32"  # the ratios divide by the baseline
    for i, name in enumerate(names):
        color, _, hatch = _config_style(name, i)
        ax.barh(i, ms[name], color=color, hatch=hatch, edgecolor="black", lw=2.5 if name == marked else 0.6,
                height=0.65)
        note = "baseline, 1.00x" if name == baseline else f"{ratio[name]:.2f}x {against}"
        text = f"  {fmt_ms(ms[name])} ms · {note}" + (f" · {extra[name]}" if name in extra else "")
        ax.text(ms[name], i, text + ("  ◀ selected" if name == marked else ""),
                va="center", fontsize=9, fontweight="bold" if name == marked else "normal")
    ax.set_yticks(y, [f"{n} (best fp32)" if n == baseline and n != "fp32" else n for n in names])
    ax.set_ylim(len(names) - 0.5, -0.5)
    log = _wide(list(ms.values()))
    if log:
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_xlim(min(ms.values()) / 2, max(ms.values()) * 12)
    else:
        ax.set_xlim(0, max(ms.values()) * (2.4 if extra else 1.6))  # room for the labels
    ax.set_xlabel("median latency per call (ms" + (", log scale)" if log else ")")
                  + f";  ratio = {against} time / time, above 1 is faster")
    ax.set_ylabel("configuration")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.set_title(title or "Latency, measured in one run")
    return fig


def plot_speedup_sweep(xs, ratios: Mapping[str, Sequence[float]], xlabel: str, title: str = "",
                       log_x: bool | None = None) -> Figure:
    """Speedup vs fp32 (fp32 time / time) against a size, one line per configuration, and a
    line at 1.0: above it int8 pays. log_x: None means log (base 2) when xs span more than 4x."""
    x = _np(xs)
    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(1.0, color=BLACK, ls="--", lw=1.2, label="fp32 (1.0x)")
    everything = []
    for i, (name, r) in enumerate(ratios.items()):
        color = _config_style(name, i)[0]
        r = _np(r)
        everything.extend(r)
        ax.plot(x, r, marker=MARKERS[i % len(MARKERS)], ms=6, lw=1.8, color=color, label=name)
    if log_x if log_x is not None else _wide(x, 4.0):
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
    if _wide(everything + [1.0], 10.0):
        ax.set_yscale("log")
        _log_axis(ax.yaxis, "x")
        ax.set_ylabel("speedup vs fp32 (×, log scale; above 1 is faster)")
    else:
        ax.set_ylabel("speedup vs fp32 (×; above 1 is faster)")
    ax.set_xlabel(xlabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or "Where int8 starts to pay")
    return fig


def plot_pareto(points: Mapping[str, tuple[float, float]], marked: str, quality_label: str,
                front: Sequence[str] | None = None, title: str = "") -> Figure:
    """Quality against speedup vs fp32 for every configuration, each with its own marker.

    points: name -> (speedup, quality), higher is better on both. front: the names on the
    Pareto front (qlab.lab.bench.pareto_front(points)), joined by a line in speed order.
    marked: the configuration ringed as the reference (torch.ao's x86 default).
    """
    if marked not in points:
        raise ValueError(f"marked={marked!r} is not one of the points: {list(points)}")
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    if front:
        unknown = [n for n in front if n not in points]
        if unknown:
            raise ValueError(f"front names {unknown} that are not points: {list(points)}")
        fx, fy = zip(*sorted(points[n] for n in front), strict=True)
        ax.step(fx, fy, where="pre", color=GREY, lw=1.5, ls="--", zorder=1,
                label="Pareto front (nothing is both faster and better)")
    for i, (name, (speed, quality)) in enumerate(points.items()):
        ax.scatter(speed, quality, s=70, marker=MARKERS[i % len(MARKERS)], color=PALETTE[i % len(PALETTE)],
                   edgecolor="black", lw=0.6, zorder=3, label=name)
        ax.annotate(name, (speed, quality), xytext=(6, 5), textcoords="offset points", fontsize=8)
    speed, quality = points[marked]
    ax.scatter(speed, quality, s=320, facecolor="none", edgecolor=BLACK, lw=1.8, zorder=4,
               label=f"{marked} (torch.ao's x86 default)")
    ax.axvline(1.0, color=BLACK, lw=0.8, ls=":")
    ax.margins(x=0.15, y=0.08)
    ax.set_xlabel("speedup vs fp32 (×; fp32 time / time, above 1 is faster)")
    ax.set_ylabel(quality_label)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title or "Quality against speed: the Pareto front")
    return fig


def plot_dynamic_scales(calls: Sequence[tuple[str, float, int]], weight_scale: float,
                        title: str = "") -> Figure:
    """The activation grid a dynamic layer chose on each call, beside its one fixed weight grid.

    calls: (label, activation scale, activation zero point) per call, as the layer chose them
    from that input's min and max. weight_scale: the weight's scale, fixed at conversion.
    Top: scales (log axis when they span more than 10x); bottom: zero points.
    """
    labels = [c[0] for c in calls]
    scales = _np([c[1] for c in calls])
    zps = _np([c[2] for c in calls])
    x = np.arange(len(calls))
    fig = Figure(figsize=(8.5, 5.8), layout="constrained")
    ax, ax_z = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    ax.plot(x, scales, "o", color=BLUE, ms=8, label="activation scale (chosen on each call)")
    ax.vlines(x, 0, scales, color=BLUE, lw=1, alpha=0.5)
    ax.axhline(weight_scale, color=ORANGE, ls="--", lw=2, label=f"weight scale (fixed): {weight_scale:.3g}")
    if _wide(np.append(scales, weight_scale), 10.0):
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
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


def plot_layer_scores(scores: Mapping[str, float], ylabel: str, highlight: Sequence[str] = (),
                      title: str = "") -> Figure:
    """One bar per layer (in the model's order): a score each, e.g. the quality with only that
    layer quantized. `highlight`ed layers (hatched, red) are the ones the text picks out."""
    names = list(scores)
    values = _np([scores[n] for n in names])
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, v) in enumerate(zip(names, values, strict=True)):
        picked = name in set(highlight)
        ax.bar(i, v, color=RED if picked else BLUE, hatch="//" if picked else None,
               edgecolor="black", lw=0.4)
    lo, hi = values.min(), values.max()
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-12), hi + 0.05 * (hi - lo + 1e-12))
    ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title or "One layer at a time")
    return fig


def plot_input_outliers(ratios: Mapping[str, float], title: str = "") -> Figure:
    """Per layer, the largest input channel's max|x| over the median channel's (log scale): a
    tall bar is an input with an outlier channel, which stretches a per-tensor activation grid."""
    names = list(ratios)
    values = _np([ratios[n] for n in names])
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(np.arange(len(names)), values, color=ORANGE, edgecolor="black", lw=0.4)
    ax.set_yscale("log")
    _log_axis(ax.yaxis, "x")
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
        ax.plot(_np(alphas), _np(values), marker=MARKERS[i], color=PALETTE[i], label=name)
    ax.axvline(current, color=BLACK, ls="--", lw=1, label=f"α = {current:g}")
    ax.set_xlabel("α (0: weight columns flattened, 1: activation channels flattened)")
    ax.set_ylabel("mean cosine / NN agreement with fp32")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or "SmoothQuant: quality against α")
    return fig


# ---------------------------------------------------------------------------------------
# Lesson 04: static quantization
# ---------------------------------------------------------------------------------------


def plot_stepper(step: Mapping, title: str = "") -> Figure:
    """One int8 layer on one image (a dict from static_ptq.step_layer): the input codes with
    their zero point (log count axis), the int32 accumulator, and for each bias rule the share of
    output codes equal to torch.ao's, with the largest difference in output steps."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax_in, ax_acc, ax_out = fig.subplots(1, 3)
    codes = _np(step["input_codes"])
    ax_in.hist(codes, bins=np.arange(-0.5, 256.5, 4), color=BLUE)
    ax_in.set_yscale("log")  # the ReLU's zeros would flatten every other bar
    ax_in.axvline(step["input_zero_point"], color=BLACK, ls="--", lw=1,
                  label=f"zero point {step['input_zero_point']}")
    ax_in.set_xlim(-5, 260)
    ax_in.set_xlabel("input code q_x (uint8)")
    ax_in.set_ylabel("count (log)")
    ax_in.legend(fontsize=8)
    ax_in.set_title("input codes")
    acc = _np(step["accumulator"])
    ax_acc.hist(acc, bins=60, color=ORANGE)
    ax_acc.xaxis.set_major_locator(MaxNLocator(5))
    ax_acc.set_xlabel("Σ (q_x − z_x)·q_w   (int32)")
    ax_acc.set_ylabel("count")
    ax_acc.set_title(f"accumulator: {int(acc.min()):,} … {int(acc.max()):,}")
    labels = {"float": "float bias\n(fbgemm)", "int32": "int32 bias",
              "fixed_point": "int32 bias,\n(M0, shift)"}
    for i, rule in enumerate(labels):
        s = step["steps"][rule]
        n = _np(s["diff"]).size
        equal = round(n * (1 - s["differ"]))
        ax_out.bar(i, 100 * equal / n, color=PALETTE[i], hatch=("", "//", "..")[i], edgecolor=BLACK, lw=0.3)
        ax_out.annotate(f"{equal:,} / {n:,}\nmax diff {s['max']}", (i, 100 * equal / n), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax_out.set_xticks(range(len(labels)), list(labels.values()), fontsize=8)
    ax_out.set_ylim(0, 125)
    ax_out.set_yticks([0, 25, 50, 75, 100])
    ax_out.set_ylabel("output codes equal to torch.ao's (%)")
    ax_out.set_title("output codes vs torch.ao")
    fig.suptitle(title or f"{step['layer']}: one int8 layer, step by step")
    return fig


def plot_shift(amounts: Sequence[float], accuracy: Mapping[str, Sequence[float]], current: float,
               shift_label: str, test_pixels, calib_pixels, calib_range: tuple[float, float],
               title: str = "") -> Figure:
    """Left: int8 accuracy on the test images against the size of the calibration shift, one
    line per model, the current amount marked. Right: the test images' pixel values against the
    shifted calibration images', with the input range the calibration chose (min-max)."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax, ax_px = fig.subplots(1, 2)
    for i, (name, acc) in enumerate(accuracy.items()):
        ax.plot(_np(amounts), 100 * _np(acc), marker=MARKERS[i], color=PALETTE[i], label=name)
    ax.axvline(current, color=BLACK, ls="--", lw=1, label=f"now: {current:g}")
    ax.set_xlabel(shift_label)
    ax.set_ylabel("int8 test accuracy (%)")
    ax.set_ylim(0, 102)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("accuracy after calibrating on shifted images")
    test, calib = _np(test_pixels), _np(calib_pixels)
    lo = min(test.min(), calib.min(), calib_range[0])
    hi = max(test.max(), calib.max(), calib_range[1])
    bins = np.linspace(lo, hi, 61)
    ax_px.hist(test, bins=bins, color=BLUE, alpha=0.6, density=True, label="test images")
    ax_px.hist(calib, bins=bins, color=ORANGE, histtype="step", lw=2, density=True,
               label="calibration images (shifted)")
    ax_px.axvspan(*calib_range, color=GREY, alpha=0.15, label="input grid's range")
    ax_px.set_yscale("log")
    ax_px.set_xlabel("pixel value (normalized: training mean 0, std 1)")
    ax_px.set_ylabel("density (log)")
    ax_px.legend(fontsize=8)
    ax_px.set_title("what the input's observer saw")
    fig.suptitle(title or "Static quantization fixes its ranges on the calibration images")
    return fig


# ---------------------------------------------------------------------------------------
# Lesson 05: quantization-aware training
# ---------------------------------------------------------------------------------------


def plot_ste(curves: Mapping, title: str = "") -> Figure:
    """Left: fake_quantize's staircase against x (and y = x); right: its gradient as autograd
    computes it (the clipped straight-through estimator) beside the staircase's true derivative.
    curves: what qlab.lab.qat.ste_curves returns."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax, ax_g = fig.subplots(1, 2)
    x, lo, hi = _np(curves["x"]), *curves["inside"]
    for a in (ax, ax_g):
        a.axvspan(lo, hi, color=GREY, alpha=0.12, label="the grid's range")
    ax.plot(x, x, color=GREY, ls="--", lw=1, label="y = x (no quantization)")
    ax.plot(x, _np(curves["y"]), color=BLUE, lw=2, label=f"fake_quantize ({curves['levels']} levels)")
    ax.set_xlabel("x")
    ax.set_ylabel("forward: x̂")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"forward: a staircase, step {curves['step']:.3g}")
    ax_g.plot(x, _np(curves["ste"]), color=ORANGE, lw=2.5, label="backward: STE (autograd)")
    ax_g.plot(x, _np(curves["true"]) - 0.06, color=BLUE, ls="--", lw=2, zorder=3,
              label="true derivative of the staircase: 0 (drawn just below 0; undefined at the jumps)")
    ax_g.set_ylim(-0.15, 1.35)
    ax_g.set_xlabel("x")
    ax_g.set_ylabel("d x̂ / d x")
    ax_g.legend(fontsize=8, loc="upper left")
    ax_g.set_title("backward: 1 where the rounded code is on the grid, else 0")
    fig.suptitle(title or "The straight-through estimator: round forward, identity backward inside the grid")
    return fig


def plot_qat_curves(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], ptq: Mapping[str, float],
                    frozen: Mapping[str, int | None] | None = None, title: str = "",
                    ylim: tuple[float, float] = (0, 102)) -> Figure:
    """Test accuracy during QAT (one line per run: name -> (steps, accuracy)), with PTQ accuracies
    as dashed lines (name -> accuracy: the colour of the QAT run of that name, else grey), and the
    steps where batch norm and the observers were frozen. ylim: the accuracy axis, in %."""
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colours = {}
    for i, (name, (steps, acc)) in enumerate(curves.items()):
        colours[name] = PALETTE[i % len(PALETTE)]
        ax.plot(_np(steps), 100 * _np(acc), marker=MARKERS[i % len(MARKERS)], color=colours[name],
                label=f"QAT {name}")
    for name, value in ptq.items():  # the colour of its QAT curve, or grey for a PTQ of its own
        ax.axhline(100 * value, color=colours.get(name, GREY), ls="--", lw=1.2, label=f"PTQ {name}")
    for what, step in (frozen or {}).items():
        if step is not None:
            ax.axvline(step, color=BLACK, ls=":", lw=1)
            y = ylim[0] + 0.35 * (ylim[1] - ylim[0])
            ax.annotate(f"{what} frozen", (step, y), rotation=90, fontsize=8, ha="right", va="bottom")
    ax.set_ylim(*ylim)
    ax.set_xlabel("training step (batches of 64)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    ax.set_title(title or "QAT: accuracy while fine-tuning, against PTQ (dashed)")
    return fig


def plot_bits_sweep(bits: Sequence[int], accuracy: Mapping[str, Sequence[float]], xlabel: str,
                    title: str = "", reference: Mapping[str, float] | None = None) -> Figure:
    """Accuracy against bit width, fewer bits to the right. Names "<model> <method>": one colour
    and marker per model, a dashed line with hollow markers for PTQ, solid for the others;
    reference: model -> fp32 accuracy, drawn as a dotted line of the model's colour."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    models = list(dict.fromkeys(name.rsplit(" ", 1)[0] for name in accuracy))
    for name, acc in accuracy.items():
        model, method = name.rsplit(" ", 1)
        i = models.index(model)
        ptq = method == "PTQ"
        ax.plot(_np(bits), 100 * _np(acc), marker=MARKERS[i], ms=7, color=PALETTE[i], label=name,
                ls="--" if ptq else "-", mfc="white" if ptq else PALETTE[i])
    for model, value in (reference or {}).items():
        i = models.index(model) if model in models else len(models)
        ax.axhline(100 * value, color=PALETTE[i], ls=":", lw=1, label=f"{model} fp32")
    ax.set_xticks(list(bits))
    ax.invert_xaxis()
    ax.set_ylim(0, 102)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="lower left")
    ax.set_title(title or "Accuracy as the grid gets coarser")
    return fig


# ---------------------------------------------------------------------------------------
# Lesson 06: choosing a method
# ---------------------------------------------------------------------------------------

_METHOD_MARKERS = {"fp32": "o", "dynamic": "s", "dynamic + SmoothQuant": "P", "static": "^", "QAT 8-bit": "D",
                   "QAT 4-bit": "v"}


def plot_tradeoffs(rows_by_model: Mapping[str, Sequence[Mapping]], title: str = "") -> Figure:
    """One panel per model: quality loss as a % of fp32's quality (lower is better; clipped at 0)
    against speed-up over the best fp32 (log x), one marker shape per method. Methods at the same
    point are nudged apart sideways (by a few %) so each stays visible; the dashed line at 1.1x is
    the gain the workflow asks for."""
    n = len(rows_by_model)
    fig = Figure(figsize=(3.3 * n, 3.7), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (model, rows) in zip(axes, rows_by_model.items(), strict=True):
        fp32 = next(r for r in rows if r["method"] == "fp32")
        seen = []
        for r in rows:
            loss = max(0.0, 100 * r["loss"] / abs(fp32["quality"]))
            x = r["speedup"]
            while any(abs(np.log(x / sx)) < 0.03 and abs(loss - sl) < 0.02 + 0.03 * sl for sx, sl in seen):
                x *= 1.06  # nudge a marker that would hide another
            seen.append((x, loss))
            i = list(_METHOD_MARKERS).index(r["method"]) if r["method"] in _METHOD_MARKERS else -1
            ax.scatter(x, loss, marker=_METHOD_MARKERS.get(r["method"], "X"), s=60,
                       color=PALETTE[i % len(PALETTE)] if i >= 0 else GREY, edgecolor=BLACK, lw=0.5,
                       label=r["method"], zorder=3)
        ax.axvline(1.0, color=GREY, ls="--", lw=1)
        ax.axvline(1.1, color=GREY, ls=":", lw=1)
        ax.set_xscale("log", base=2)
        speeds = [r["speedup"] for r in rows]
        ax.set_xlim(min(*speeds, 1.0) / 1.25, max(*speeds, 1.0) * 1.35)
        ticks = [t for t in (0.5, 0.7, 1, 2, 4, 8) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        top = max(max(loss for _, loss in seen) * 1.15, 0.5)
        ax.set_ylim(-0.04 * top, top)
        ax.set_xlabel("speed-up vs best fp32 (log)")
        ax.set_ylabel("quality loss (% of fp32)")
        ax.set_title(f"{model} ({fp32['metric'].replace(' (lower is better)', '')})", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title or "What each method costs (up: worse) and gains (right: faster); dotted: 1.1x")
    return fig


def plot_relative_sizes(rows_by_model: Mapping[str, Sequence[Mapping]], title: str = "") -> Figure:
    """Serialized size of each method's model as a % of the model's fp32 size, grouped by model."""
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(r["method"] for rows in rows_by_model.values() for r in rows))
    width = 0.8 / len(methods)
    hatches = ("", "//", "..", "xx", "\\\\", "--")
    for j, method in enumerate(methods):
        xs, ys = [], []
        for i, rows in enumerate(rows_by_model.values()):
            by = {r["method"]: r for r in rows}
            if method in by:
                xs.append(i + (j - (len(methods) - 1) / 2) * width)
                ys.append(100 * by[method]["size_bytes"] / by["fp32"]["size_bytes"])
        ax.bar(xs, ys, width=width, color=PALETTE[j % len(PALETTE)], hatch=hatches[j % len(hatches)],
               edgecolor=BLACK, lw=0.4, label=method)
    ax.set_xticks(range(len(rows_by_model)), list(rows_by_model))
    ax.axhline(25, color=GREY, ls=":", lw=1, label="25 % (int8 weights alone)")
    ax.set_ylabel("size (% of fp32)")
    ax.set_ylim(0, 110)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or "Size on disk (serialized state_dict) as a share of fp32")
    return fig


def plot_decision_flow(decision: Mapping, title: str = "") -> Figure:
    """The five-step workflow as a flow diagram, with the path one decision took drawn bold.
    decision: what qlab.lab.workflow.decide returns."""
    chosen = decision["chosen"]["method"] if decision["chosen"] else None
    qat = chosen is not None and chosen.startswith("QAT")
    ptq = chosen is not None and not qat
    boxes = {  # name: (x, y, text)
        "fp32": (0.07, 0.5, "1. train fp32"),
        "ptq": (0.29, 0.5, "2. PTQ:\ndynamic, then static"),
        "eval": (0.52, 0.5, "3. evaluate:\nloss ≤ tolerance\nand a gain?"),
        "qat": (0.52, 0.1, "4. QAT\n(low learning rate)"),
        "deploy": (0.80, 0.5, "5. deploy the\nfastest int8"),
        "keep": (0.84, 0.1, "keep fp32\n(or raise the tolerance)"),
    }
    taken = {"fp32", "ptq", "eval", "deploy" if chosen else "keep"}
    if qat or not chosen:
        taken.add("qat")
    arrows = [  # (from xy, to xy, label, label xy, on the path)
        ((0.13, 0.5), (0.19, 0.5), "", None, True),
        ((0.39, 0.5), (0.44, 0.5), "", None, True),
        ((0.60, 0.5), (0.72, 0.5), "yes", (0.65, 0.54), ptq),
        ((0.52, 0.36), (0.52, 0.2), "no", (0.535, 0.28), qat or not chosen),
        ((0.60, 0.15), (0.76, 0.4), "yes", (0.63, 0.3), qat),
        ((0.60, 0.07), (0.71, 0.07), "no", (0.64, 0.01), not chosen),
    ]
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.05, 0.75)
    ax.axis("off")
    for name, (x, y, text) in boxes.items():
        on = name in taken
        ax.text(x, y, text, ha="center", va="center", fontsize=9, fontweight="bold" if on else "normal",
                bbox={"boxstyle": "round,pad=0.5", "facecolor": SKY if on else "white",
                      "edgecolor": BLACK if on else GREY, "lw": 2 if on else 1})
    for start, end, label, where, on in arrows:
        ax.annotate("", xy=end, xytext=start,
                    arrowprops={"arrowstyle": "-|>", "lw": 2.5 if on else 1, "color": BLACK if on else GREY})
        if label:
            ax.text(*where, label, fontsize=9, color=BLACK if on else GREY)
    ax.text(0.0, -0.04, "filled boxes and bold arrows: the path this decision took", fontsize=8, color=GREY)
    ax.set_title(title or (f"chosen: {chosen}" if chosen else "chosen: keep fp32"))
    return fig
