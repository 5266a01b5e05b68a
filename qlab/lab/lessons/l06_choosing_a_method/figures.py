"""Lesson 06, its figures: data in, matplotlib Figure out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from qlab.lab.kit.figure import BLACK, GREY, PALETTE, SKY

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
    decision: what numbers.decide returns."""
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
