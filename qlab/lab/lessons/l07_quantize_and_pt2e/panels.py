"""Lesson 07: its panels, sliders wired to the numbers and to kit.figure's latency bars
(through kit.panel.SpeedPanel)."""

from __future__ import annotations

from numbers import Integral

import ipywidgets as widgets

from qlab.lab.kit import timing
from qlab.lab.kit.panel import (
    WIDE,
    SpeedPanel,
    busy_warning,
    check_option,
    check_run_time,
    check_slider,
    int_slider,
    threads_range,
    threads_text,
)

from .numbers import METHODS, MODES


class PathsPanel(SpeedPanel):
    """Choose a model, a method (fp32, classic torch.ao int8, modern torchao / PT2E int8) and eager or
    compiled; every path of that model is timed now, interleaved (the chosen one outlined), and the
    readout gives the chosen path's latency, its ratio to the best fp32 path measured in the same
    draw, and its quality (measured once by the lesson: accuracy, or MiniLM's mean cosine).

    choices: numbers.panel_choices(...). Readout, e.g. "ResNet · modern int8 (torchao / PT2E)
    · compiled: latency 1.40 ms per batch of 64 images · 1.76x the best fp32 (fp32 compiled) ·
    accuracy 100.00 %".
    """

    def __init__(self, choices: dict, model: str | None = None, method: str = "modern int8 (torchao / PT2E)",
                 mode: str = "compiled", threads: int = 2, min_run_time: float = 0.3):

        if not isinstance(choices, dict) or not choices:
            raise ValueError("choices must be a non-empty dict: numbers.panel_choices(...)")
        model = next(iter(choices)) if model is None else model
        check_option("model", model, {m: m for m in choices})
        check_option("method", method, {m: m for m in METHODS})
        check_option("mode", mode, {m: m for m in MODES})
        check_slider("threads", threads, *threads_range(), kind=Integral)
        check_run_time(min_run_time)
        self.choices, self.threads, self.min_run_time = choices, threads, min_run_time
        self.controls = {
            "model": widgets.Dropdown(options=list(choices), value=model, description="model", style=WIDE),
            "method": widgets.Dropdown(options=list(METHODS), value=method, description="method", style=WIDE,
                                       layout=widgets.Layout(width="330px")),
            "mode": widgets.ToggleButtons(options=list(MODES), value=mode, description="run", style=WIDE),
            "threads": int_slider(threads, *threads_range(), "threads"),
        }
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, self.controls)
        top = widgets.HBox([self.controls["model"], self.controls["method"]])
        super().__init__([top, widgets.HBox([self.controls["mode"], self.controls["threads"]]), self.readout,
                          self.output])

    def _measure(self, model: str, method: str, mode: str, threads: int) -> dict:
        c = self.choices[model]
        with timing.settings(threads):
            ms, spread = timing.timed(c["runs"], self.min_run_time)
        fp32 = [p for p in ms if p.startswith("fp32")]
        best = min(fp32, key=ms.get)
        path = c["paths"].get((method, mode))
        quality = {p: _quality(c, p) for p in ms}
        return {"ms": ms, "speedup": timing.speedups(ms, best), "baseline": best, "marked": path,
                "labels": quality, "spread": spread, "model": model, "method": method, "mode": mode,
                "threads": threads,
                "note": c["notes"].get((method, mode), "not a path of this model")}

    def _describe(self, r: dict) -> tuple[str, str]:
        c = self.choices[r["model"]]
        head = f"<b>{r['model']} · {r['method']} · {r['mode']}</b>"
        path = r["marked"]
        if path is None:
            title = f"{r['model']}: {r['method']}, {r['mode']}: not measured"
            return f"{head}: {r['note']}" + busy_warning(r), title
        readout = (f"{head}: latency {r['ms'][path]:.2f} ms per {c['unit']} · {r['speedup'][path]:.2f}x the "
                   f"best fp32 ({r['baseline']}, measured now) · {_quality(c, path)}"
                   f" · {threads_text(r['threads'])}" + busy_warning(r))
        return readout, f"{r['model']}: every path timed now (the selected one outlined)"


def _quality(choice: dict, path: str) -> str:
    q = choice["quality"][path]
    if choice["quality_name"] == "accuracy":
        return f"accuracy {100 * q:.2f} %"
    return f"{choice['quality_name']} {q:.4f}"


def paths_panel(choices: dict, **defaults) -> PathsPanel:
    """Lesson 07's panel: model x method x eager / compiled, timed live (see PathsPanel)."""
    return PathsPanel(choices, **defaults)
