"""Lesson 06: its panels, sliders wired to the numbers and the figures."""

from __future__ import annotations

import ipywidgets as widgets

from qlab.lab.kit.check import check_choice
from qlab.lab.kit.panel import WIDE, Panel, check_slider, show

from . import figures
from .numbers import check_rows, decide

TOLERANCE = (0.0, 10.0)  # % of fp32's quality


def _check_model_rows(name, rows) -> None:
    """check_rows, its error naming the model."""
    try:
        check_rows(rows)
    except (TypeError, ValueError) as e:
        raise type(e)(f"rows_by_model[{name!r}]: {e}") from None


class WorkflowPanel(Panel):
    """The five-step workflow (numbers.decide) over measured rows, for every model at once.

    Controls: "tolerance (% of fp32)" (0..10, step 0.25: the loss each model may take, as a share
    of its fp32 quality) and "model" (whose decision flow is drawn). Readout, e.g. "tolerance 0.50 %
    — int8 deployed for 4 of 4 models: resnet static (1.95x), ... ". No timing happens here: the
    rows were measured once, by numbers.method_rows.
    """

    def __init__(self, rows_by_model: dict, tolerance: float = 0.0, model: str | None = None):
        if not isinstance(rows_by_model, dict) or not rows_by_model:
            raise ValueError("rows_by_model must be a non-empty dict: model -> numbers.method_rows(model)")
        for name, rows in rows_by_model.items():
            _check_model_rows(name, rows)
        check_slider("tolerance", tolerance, *TOLERANCE)
        model = next(iter(rows_by_model)) if model is None else model
        check_choice("model", model, rows_by_model, what=f"one of {list(rows_by_model)}")
        self.rows = rows_by_model
        self.tolerance = widgets.FloatSlider(value=tolerance, min=TOLERANCE[0], max=TOLERANCE[1], step=0.25,
                                             description="tolerance (% of fp32)", readout_format=".2f",
                                             continuous_update=False, style=WIDE,
                                             layout=widgets.Layout(width="420px"))
        self.model = widgets.Dropdown(options=list(rows_by_model), value=model, description="model",
                                      style=WIDE)
        self.readout = widgets.HTML()
        self.trail = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"tolerance": self.tolerance,
                                                              "model": self.model})
        super().__init__([widgets.HBox([self.tolerance, self.model]), self.readout, self.output, self.trail])

    def decisions(self, tolerance: float) -> dict:
        out = {}
        for name, rows in self.rows.items():
            fp32 = check_rows(rows)["fp32"]
            out[name] = decide(rows, tolerance / 100 * abs(fp32["quality"]))
        return out

    def _title(self, d: dict, model: str, tolerance: float) -> str:
        chosen = d["chosen"]["method"] if d["chosen"] else "keep fp32"
        return f"{model} at a tolerance of {tolerance:.2f} % of fp32: {chosen}"

    def figure(self):
        d = self.decisions(self.tolerance.value)[self.model.value]
        return figures.plot_decision_flow(d, title=self._title(d, self.model.value, self.tolerance.value))

    def _draw(self, tolerance, model):
        d = self.decisions(tolerance)
        deployed = [n for n, v in d.items() if v["chosen"]]
        parts = [f"{n} {v['chosen']['method']} ({v['chosen']['speedup']:.2f}x)" if v["chosen"]
                 else f"{n} fp32" for n, v in d.items()]
        self.readout.value = (f"tolerance {tolerance:.2f} % — <b>int8 deployed for {len(deployed)} of "
                              f"{len(d)} models</b>: " + " · ".join(parts))
        self.trail.value = "<pre>" + "\n".join(d[model]["trail"]) + "</pre>"
        show(figures.plot_decision_flow(d[model], title=self._title(d[model], model, tolerance)))


def workflow_panel(rows_by_model: dict, tolerance: float = 0.0, model: str | None = None) -> WorkflowPanel:
    """Lesson 06's panel: drag the tolerance; see which method the five-step workflow deploys for
    each model, and the path it took for one."""
    return WorkflowPanel(rows_by_model, tolerance, model)
