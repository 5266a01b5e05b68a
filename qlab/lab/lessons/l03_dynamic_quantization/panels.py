"""Lesson 03: its panels, sliders wired to the measurements (speed, numbers) and the figures."""

from __future__ import annotations

from numbers import Integral

import ipywidgets as widgets
import torch

from qlab.lab.kit import figure
from qlab.lab.kit.panel import (
    PANEL_RUN_TIME,
    WIDE,
    Panel,
    SpeedPanel,
    busy_warning,
    check_option,
    check_run_time,
    check_slider,
    int_slider,
    show,
    threads_range,
    threads_text,
)

from . import figures, speed

# ---------------------------------------------------------------------------------------
# The speed panel (speed.time_dynamic measures, kit.panel.SpeedPanel draws)
# ---------------------------------------------------------------------------------------

HIDDEN, BATCH, SEQ = (128, 1024), (1, 64), (1, 64)  # the sliders' ranges


DYNAMIC_KINDS = {"LSTM": "lstm", "Linear": "linear"}


class DynamicSpeedPanel(SpeedPanel):
    """Latency of fp32, torch.ao dynamic int8 and qlab dynamic int8 on a random LSTM or Linear stack.

    Controls: "model" (ToggleButtons LSTM / Linear), "hidden size" (IntSlider 128..1024),
    "batch size" (1..64), "sequence length" (1..64), "threads" (1..CPU count). Readout:
    "LSTM, hidden 256, batch 32, seq 32, 2 threads — torch.ao int8 1.23x fp32, qlab int8 0.80x fp32".
    Numbers: speed.time_dynamic, measured anew on every draw.
    """

    def __init__(self, kind: str = "lstm", hidden: int = 256, batch: int = 32, seq: int = 32,
                 threads: int | None = None, min_run_time: float = PANEL_RUN_TIME):
        check_option("kind", kind, DYNAMIC_KINDS)
        check_slider("hidden", hidden, *HIDDEN, kind=Integral)
        check_slider("batch", batch, *BATCH, kind=Integral)
        check_slider("seq", seq, *SEQ, kind=Integral)
        threads = torch.get_num_threads() if threads is None else threads
        check_slider("threads", threads, *threads_range(), kind=Integral)
        check_run_time(min_run_time)
        self.min_run_time = min_run_time
        self.kind = widgets.ToggleButtons(options=list(DYNAMIC_KINDS.items()), value=kind,
                                          description="model", style={**WIDE, "button_width": "80px"})
        self.hidden = int_slider(hidden, *HIDDEN, "hidden size", step=64)
        self.batch = int_slider(batch, *BATCH, "batch size")
        self.seq = int_slider(seq, *SEQ, "sequence length")
        self.threads = int_slider(threads, *threads_range(), "threads")
        self.readout = widgets.HTML()
        self.controls = {"kind": self.kind, "hidden": self.hidden, "batch": self.batch, "seq": self.seq,
                         "threads": self.threads}
        self.output = widgets.interactive_output(self._draw, self.controls)
        super().__init__([self.kind, widgets.HBox([self.hidden, self.batch]),
                          widgets.HBox([self.seq, self.threads]), self.readout, self.output])

    def _measure(self, kind, hidden, batch, seq, threads):
        return speed.time_dynamic(kind, hidden, batch, seq, threads, self.min_run_time)

    def _describe(self, r):
        name = {v: k for k, v in DYNAMIC_KINDS.items()}[r["kind"]]
        s = r["speedup"]
        size = (f"{name}, hidden {r['hidden']}, batch {r['batch']}, seq {r['seq']}, "
                f"{threads_text(r['threads'])}")
        readout = (f"{size} — <b>torch.ao int8 {s['torch.ao int8']:.2f}x fp32</b>, "
                   f"qlab int8 {s['qlab int8']:.2f}x fp32 (fp32 {figure.fmt_ms(r['ms']['fp32'])} ms; "
                   f"above 1x is faster){busy_warning(r)}")
        return readout, f"Dynamic int8, {size}"


def dynamic_speed_panel(**defaults) -> DynamicSpeedPanel:
    """Lesson 03's panel: drag "hidden size", "batch size" and "sequence length"; watch where
    dynamic int8 starts to pay. defaults: kind ("lstm" or "linear"), hidden (128..1024),
    batch (1..64), seq (1..64), threads (1..CPU count; default torch's), min_run_time (s)."""
    return DynamicSpeedPanel(**defaults)


class SmoothQuantPanel(Panel):
    """Drag "α" (SmoothQuant's migration strength, 0..1): `evaluate(α)` smooths, quantizes and
    scores the model (the lesson passes it; it returns {"cosine": .., "nn_agreement": ..}). The
    figure shows every α measured so far; the readout the current one, e.g.
    "α = 0.80 — mean cosine 0.9944, NN agreement 86.7 %". Each α is measured once."""

    def __init__(self, evaluate, alpha: float = 0.8, alphas=(0.0, 0.5, 1.0)):
        if not callable(evaluate):
            raise TypeError(f"evaluate must be a function alpha -> quality dict, got {evaluate!r}")
        for a in (alpha, *alphas):
            check_slider("alpha", a, 0.0, 1.0)
        self.evaluate, self.results = evaluate, {}
        for a in alphas:
            self._result(a)
        self.alpha = widgets.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="α",
                                         readout_format=".2f", continuous_update=False, style=WIDE,
                                         layout=widgets.Layout(width="320px"))
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"alpha": self.alpha})
        super().__init__([self.alpha, self.readout, self.output])

    def _result(self, alpha: float) -> dict:
        key = round(float(alpha), 4)
        if key not in self.results:
            self.results[key] = self.evaluate(key)
        return self.results[key]

    def figure(self):
        alphas = sorted(self.results)
        quality = {"mean cosine": [self.results[a]["cosine"] for a in alphas],
                   "nearest-neighbour agreement": [self.results[a]["nn_agreement"] for a in alphas]}
        return figures.plot_alpha_curve(alphas, quality, self.alpha.value)

    def _draw(self, alpha):
        r = self._result(alpha)
        self.readout.value = (f"α = {alpha:.2f} — <b>mean cosine {r['cosine']:.4f}</b>, "
                              f"NN agreement {100 * r['nn_agreement']:.1f} %")
        show(self.figure())


def smoothquant_panel(evaluate, alpha: float = 0.8, alphas=(0.0, 0.5, 1.0)) -> SmoothQuantPanel:
    """Lesson 03's SmoothQuant panel: evaluate(α) -> {"cosine", "nn_agreement"} for α in [0, 1];
    `alphas` are measured up front so the curve has a shape before the slider moves."""
    return SmoothQuantPanel(evaluate, alpha, alphas)
