"""Figures shared by several lessons: the palette, and the speed and layer figures.

Data in, matplotlib Figure out: a plot never computes what it draws (the only work is binning
for histograms). Figures are built with `matplotlib.figure.Figure` rather than pyplot, so they
never pile up in pyplot's state; in a notebook, make one the cell's last expression.

    PALETTE, MARKERS, CONFIG_STYLES, the colour names   what every lesson draws with
    as_numpy, wide, log_axis, fmt_ms     small helpers the lessons' figures share
    plot_latency(results, title)         bars of each configuration's time, labelled with its ratio
                                         (lessons 03, 04, 07; kit.panel.SpeedPanel draws with it)
    plot_speedup_sweep(xs, ratios, xlabel)   speed-up against one size, a line per configuration
    plot_pareto(points, marked, quality_label, front=)   speed against quality, the front joined
    plot_layer_scores(scores, ...)       one bar per layer in the model's order (lessons 03, 04)
    plot_channel_ranges(ch_min, ch_max, sqnr_per_tensor, sqnr_per_channel)   per-channel ranges
                                         against the per-tensor one (lessons 01, 02)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

# Okabe & Ito's colour-blind-safe palette, the one palette of every qlab figure. Comparisons differ
# by marker shape (or hatch) too, so no figure relies on telling two colours apart.
BLUE, ORANGE, GREEN, RED, GREY = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#7F7F7F"


SKY, PURPLE, YELLOW, BLACK = "#56B4E9", "#CC79A7", "#F0E442", "#000000"


PALETTE = (BLUE, ORANGE, GREEN, RED, SKY, PURPLE, GREY, YELLOW)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def as_numpy(t) -> np.ndarray:
    """A torch tensor, numpy array, list or number as a flat float64 numpy array."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64).ravel()


def plot_channel_ranges(
    ch_min, ch_max, sqnr_per_tensor, sqnr_per_channel, title: str = "", symmetric: bool = True
) -> Figure:
    """Per-tensor versus per-channel on one weight matrix.

    Top: the [min, max] range of every output channel (one thin bar each), and the range the
    per-tensor grid covers: ±max|x| when symmetric (the default), else the tensor's [min, max].
    Bottom: each channel's SQNR with one scale for the whole tensor vs a scale per channel.
    """
    lo, hi = as_numpy(ch_min), as_numpy(ch_max)
    s_t, s_c = as_numpy(sqnr_per_tensor), as_numpy(sqnr_per_channel)
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
# Speed figures (lessons 03, 04, 07)
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


def wide(values, factor: float = 10.0) -> bool:
    """True when positive values span more than `factor`: a log axis shows them all."""
    v = as_numpy(values)
    v = v[np.isfinite(v)]
    return v.size > 1 and (v > 0).all() and v.max() / v.min() > factor


def fmt_ms(ms: float) -> str:
    """A latency for a label: three significant digits, whole milliseconds from 100 ms on."""
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def log_axis(axis, suffix: str = "") -> None:
    """Ticks at 1, 2, 5 per decade written as plain numbers ("0.5x", not "5 x 10^-1")."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{suffix}"))
    axis.set_minor_formatter(NullFormatter())


def plot_latency(results: Mapping, title: str = "") -> Figure:
    """Latency of each configuration as a horizontal bar (ms), its speedup vs fp32 written on it
    ("x fp32", or "x best fp32" when the baseline is another fp32 configuration).

    results: what lesson 03's speed.time_dynamic / lesson 04's time_cnn return: "ms" {config: ms}, "speedup"
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
    log = wide(list(ms.values()))
    if log:
        ax.set_xscale("log")
        log_axis(ax.xaxis)
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
    x = as_numpy(xs)
    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(1.0, color=BLACK, ls="--", lw=1.2, label="fp32 (1.0x)")
    everything = []
    for i, (name, r) in enumerate(ratios.items()):
        color = _config_style(name, i)[0]
        r = as_numpy(r)
        everything.extend(r)
        ax.plot(x, r, marker=MARKERS[i % len(MARKERS)], ms=6, lw=1.8, color=color, label=name)
    if log_x if log_x is not None else wide(x, 4.0):
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
    if wide(everything + [1.0], 10.0):
        ax.set_yscale("log")
        log_axis(ax.yaxis, "x")
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
    Pareto front (qlab.lab.kit.timing.pareto_front(points)), joined by a line in speed order.
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


def plot_layer_scores(scores: Mapping[str, float], ylabel: str, highlight: Sequence[str] = (),
                      title: str = "") -> Figure:
    """One bar per layer (in the model's order): a score each, e.g. the quality with only that
    layer quantized. `highlight`ed layers (hatched, red) are the ones the text picks out."""
    names = list(scores)
    values = as_numpy([scores[n] for n in names])
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
