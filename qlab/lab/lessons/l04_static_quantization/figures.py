"""Lesson 04, its figures: data in, matplotlib Figure out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from qlab.lab.kit.figure import BLACK, BLUE, GREY, MARKERS, ORANGE, PALETTE, as_numpy
from qlab.lab.kit.figure import plot_layer_scores as plot_layer_scores  # re-exported for the notebook
from qlab.lab.kit.figure import plot_speedup_sweep as plot_speedup_sweep  # re-exported for the notebook


def plot_stepper(step: Mapping, title: str = "") -> Figure:
    """One int8 layer on one image (a dict from numbers.step_layer): the input codes with
    their zero point (log count axis), the int32 accumulator, and for each bias rule the share of
    output codes equal to torch.ao's, with the largest difference in output steps."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax_in, ax_acc, ax_out = fig.subplots(1, 3)
    codes = as_numpy(step["input_codes"])
    ax_in.hist(codes, bins=np.arange(-0.5, 256.5, 4), color=BLUE)
    ax_in.set_yscale("log")  # the ReLU's zeros would flatten every other bar
    ax_in.axvline(step["input_zero_point"], color=BLACK, ls="--", lw=1,
                  label=f"zero point {step['input_zero_point']}")
    ax_in.set_xlim(-5, 260)
    ax_in.set_xlabel("input code q_x (uint8)")
    ax_in.set_ylabel("count (log)")
    ax_in.legend(fontsize=8)
    ax_in.set_title("input codes")
    acc = as_numpy(step["accumulator"])
    ax_acc.hist(acc, bins=60, color=ORANGE)
    ax_acc.xaxis.set_major_locator(MaxNLocator(5))
    ax_acc.set_xlabel("Σ (q_x − z_x)·q_w   (int32)")
    ax_acc.set_ylabel("count")
    ax_acc.set_title(f"accumulator: {int(acc.min()):,} … {int(acc.max()):,}")
    labels = {"float": "float bias\n(fbgemm)", "int32": "int32 bias",
              "fixed_point": "int32 bias,\n(M0, shift)"}
    for i, rule in enumerate(labels):
        s = step["steps"][rule]
        n = as_numpy(s["diff"]).size
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
        ax.plot(as_numpy(amounts), 100 * as_numpy(acc), marker=MARKERS[i], color=PALETTE[i], label=name)
    ax.axvline(current, color=BLACK, ls="--", lw=1, label=f"now: {current:g}")
    ax.set_xlabel(shift_label)
    ax.set_ylabel("int8 test accuracy (%)")
    ax.set_ylim(0, 102)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("accuracy after calibrating on shifted images")
    test, calib = as_numpy(test_pixels), as_numpy(calib_pixels)
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
