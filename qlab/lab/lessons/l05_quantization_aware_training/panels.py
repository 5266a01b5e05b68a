"""Lesson 05: its panels, sliders wired to the numbers and the figures."""

from __future__ import annotations

from numbers import Integral

import ipywidgets as widgets
import torch

from qlab.lab.kit.check import check_choice
from qlab.lab.kit.data import digits_tensors
from qlab.lab.kit.panel import WIDE, Panel, check_option, check_slider, int_slider, show
from qlab.lab.kit.train import top1
from qlab.lab.lessons.l04_static_quantization.panels import CNN_MODELS

from . import figures, numbers
from .numbers import ste_curves

STE_BITS, STE_RANGE = (2, 8), (0.25, 2.0)


class STEPanel(Panel):
    """fake_quantize's forward staircase and its autograd gradient (numbers.ste_curves).

    Controls: "bits" (2..8) and "range max" (the grid covers [-range max, range max]).
    Readout, e.g. "3 bits: 8 levels, step 0.286 — the gradient is 1 for x in [-1.14, 0.857],
    0 outside (the true derivative of the staircase: 0 wherever it exists)".
    """

    def __init__(self, bits: int = 3, range_max: float = 1.0):
        check_slider("bits", bits, *STE_BITS, kind=Integral)
        check_slider("range_max", range_max, *STE_RANGE)
        self.bits = int_slider(bits, *STE_BITS, "bits")
        self.range_max = widgets.FloatSlider(value=range_max, min=STE_RANGE[0], max=STE_RANGE[1], step=0.25,
                                             description="range max", continuous_update=False, style=WIDE,
                                             layout=widgets.Layout(width="300px"))
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"bits": self.bits, "range_max": self.range_max})
        super().__init__([widgets.HBox([self.bits, self.range_max]), self.readout, self.output])

    def _curves(self, bits, range_max):
        return ste_curves(bits, -range_max, range_max, pad=0.5 * range_max)

    def figure(self):
        return figures.plot_ste(self._curves(self.bits.value, self.range_max.value))

    def _draw(self, bits, range_max):
        c = self._curves(bits, range_max)
        lo, hi = c["inside"]
        self.readout.value = (f"{bits} bits: {c['levels']} levels, <b>step {c['step']:.4g}</b> — the "
                              f"gradient is 1 for x in [{lo:.3g}, {hi:.3g}] (and half a step beyond: it "
                              "rounds in), "
                              "0 outside; the true derivative of the staircase is 0 wherever it exists")
        show(figures.plot_ste(c))


def ste_panel(bits: int = 3, range_max: float = 1.0) -> STEPanel:
    """Lesson 05's panel: drag "bits" and "range max"; see the staircase and the STE gradient."""
    return STEPanel(bits, range_max)


class QATCurvePanel(Panel):
    """QAT against PTQ for one weight bit width (numbers' recorded runs; PTQ measured here).

    Controls: "model" (ToggleButtons) and "weight bits" (2..8: 8, 6, 4, 3, 2 are recorded).
    Readout, e.g. "MobileNetV2, 4-bit weights, 8-bit activations — PTQ 91.4 %, QAT 99.2 %
    (int8 model loaded and measured: 99.2 %)".
    """

    BITS = (2, 3, 4, 6, 8)

    def __init__(self, model: str = "mobilenet_v2", w_bits: int = 4):
        check_option("model", model, CNN_MODELS)
        check_choice("w_bits", w_bits, self.BITS, what=f"one of the recorded widths {self.BITS}")
        self.runs, self.ptq, self.measured = numbers.recorded_runs(), {}, {}
        self.model = widgets.ToggleButtons(options=list(CNN_MODELS.items()), value=model, description="model",
                                           style={**WIDE, "button_width": "110px"})
        self.w_bits = widgets.SelectionSlider(options=list(self.BITS), value=w_bits,
                                              description="weight bits",
                                              continuous_update=False, style=WIDE,
                                              layout=widgets.Layout(width="300px"))
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"model": self.model, "w_bits": self.w_bits})
        super().__init__([self.model, self.w_bits, self.readout, self.output])

    def _numbers(self, model, w_bits):
        key = (model, w_bits)
        if key not in self.ptq:
            self.ptq[key] = numbers.ptq_accuracy(model, w_bits, 8)
            int8 = numbers.load_int8(model, w_bits, 8)

            x, y = digits_tensors("test")
            with torch.no_grad():
                self.measured[key] = top1(int8(x), y)
        return self.runs[numbers.run_name(model, w_bits, 8)], self.ptq[key], self.measured[key]

    def figure(self):
        model, w_bits = self.model.value, self.w_bits.value
        run, ptq, _ = self._numbers(model, w_bits)
        label = f"{w_bits}-bit weights"
        name = {v: k for k, v in CNN_MODELS.items()}[model]
        return figures.plot_qat_curves({label: (run["steps"], run["accuracy"])}, {label: ptq}, run["frozen"],
                                     title=f"{name}: QAT with {label} (recorded run) against PTQ")

    def _draw(self, model, w_bits):
        run, ptq, measured = self._numbers(model, w_bits)
        name = {v: k for k, v in CNN_MODELS.items()}[model]
        self.readout.value = (f"{name}, {w_bits}-bit weights, 8-bit activations — PTQ {100 * ptq:.1f} %, "
                              f"<b>QAT {100 * measured:.1f} %</b> (the recorded run's int8 model, loaded and "
                              "measured here; fake-quant at the end of training "
                              f"{100 * run['fake_accuracy']:.1f} %)")
        show(self.figure())


def qat_curve_panel(model: str = "mobilenet_v2", w_bits: int = 4) -> QATCurvePanel:
    """Lesson 05's panel: pick a model and a weight bit width; see PTQ's accuracy and QAT's
    training curve (recorded by `make checkpoints`) and its int8 model's accuracy (measured)."""
    return QATCurvePanel(model, w_bits)
