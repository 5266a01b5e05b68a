"""Lesson 05, its figures: data in, matplotlib Figure out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from qlab.lab.kit.figure import BLACK, BLUE, GREY, MARKERS, ORANGE, PALETTE, as_numpy


def plot_ste(curves: Mapping, title: str = "") -> Figure:
    """Left: fake_quantize's staircase against x (and y = x); right: its gradient as autograd
    computes it (the clipped straight-through estimator) beside the staircase's true derivative.
    curves: what numbers.ste_curves returns."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax, ax_g = fig.subplots(1, 2)
    x, lo, hi = as_numpy(curves["x"]), *curves["inside"]
    for a in (ax, ax_g):
        a.axvspan(lo, hi, color=GREY, alpha=0.12, label="the grid's range")
    ax.plot(x, x, color=GREY, ls="--", lw=1, label="y = x (no quantization)")
    ax.plot(x, as_numpy(curves["y"]), color=BLUE, lw=2, label=f"fake_quantize ({curves['levels']} levels)")
    ax.set_xlabel("x")
    ax.set_ylabel("forward: x̂")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"forward: a staircase, step {curves['step']:.3g}")
    ax_g.plot(x, as_numpy(curves["ste"]), color=ORANGE, lw=2.5, label="backward: STE (autograd)")
    ax_g.plot(x, as_numpy(curves["true"]) - 0.06, color=BLUE, ls="--", lw=2, zorder=3,
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
        ax.plot(as_numpy(steps), 100 * as_numpy(acc), marker=MARKERS[i % len(MARKERS)], color=colours[name],
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
        ax.plot(as_numpy(bits), 100 * as_numpy(acc), marker=MARKERS[i], ms=7, color=PALETTE[i], label=name,
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
