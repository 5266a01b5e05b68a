"""Lesson 04: its panels, sliders wired to the measurements (numbers, speed) and the figures."""

from __future__ import annotations

from numbers import Integral

import ipywidgets as widgets
import torch

import qlab
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
from qlab.lab.lessons.l03_dynamic_quantization.panels import BATCH

from . import figures, numbers, speed
from .numbers import int8_layers, step_layer

CNN_MODELS = {"ResNet": "resnet", "MobileNetV2": "mobilenet_v2"}
WIDTH = (0.25, 4.0)  # the width slider's range


class CNNSpeedPanel(SpeedPanel):
    """Latency of a lesson CNN: best fp32 (contiguous or channels_last, named), torch.ao static
    int8, qlab static int8 and dynamic int8 (only the fc), with the ratios vs the best fp32.

    Controls: "model" (ToggleButtons ResNet / MobileNetV2), "batch size" (1..64), "threads"
    (1..CPU count), "width multiplier" (0.25..4, the lesson model's channel widths times this).
    Readout: "ResNet ×1.00, batch 64, 2 threads — best fp32: channels_last 3.1 ms · torch.ao
    int8 2.05x fp32 · qlab int8 0.15x fp32 · dynamic int8 (fc only) 1.00x fp32".
    Numbers: speed.time_cnn (random weights; the first draw at a width builds and
    calibrates its int8 models).
    """

    def __init__(self, model: str = "resnet", batch: int = 64, threads: int | None = None,
                 width: float = 1.0, min_run_time: float = PANEL_RUN_TIME):
        check_option("model", model, CNN_MODELS)
        check_slider("batch", batch, *BATCH, kind=Integral)
        threads = torch.get_num_threads() if threads is None else threads
        check_slider("threads", threads, *threads_range(), kind=Integral)
        check_slider("width", width, *WIDTH)
        check_run_time(min_run_time)
        self.min_run_time = min_run_time
        self.model = widgets.ToggleButtons(options=list(CNN_MODELS.items()), value=model,
                                           description="model", style={**WIDE, "button_width": "110px"})
        self.batch = int_slider(batch, *BATCH, "batch size")
        self.threads = int_slider(threads, *threads_range(), "threads")
        self.width = widgets.FloatSlider(value=width, min=WIDTH[0], max=WIDTH[1], step=0.25,
                                         description="width multiplier", readout_format=".2f",
                                         continuous_update=False, style=WIDE,
                                         layout=widgets.Layout(width="320px"))
        self.readout = widgets.HTML()
        self.controls = {"model": self.model, "batch": self.batch, "threads": self.threads,
                         "width": self.width}
        self.output = widgets.interactive_output(self._draw, self.controls)
        super().__init__([self.model, widgets.HBox([self.batch, self.threads, self.width]),
                          self.readout, self.output])

    def _measure(self, model, batch, threads, width):
        return speed.time_cnn(model, batch, threads, width, self.min_run_time)

    def _describe(self, r):
        name = {v: k for k, v in CNN_MODELS.items()}[r["model"]]
        s, base = r["speedup"], r["baseline"]
        size = f"{name} ×{r['width']:.2f}, batch {r['batch']}, {threads_text(r['threads'])}"
        readout = (f"{size} — best fp32: {r['fp32_layout']} {figure.fmt_ms(r['ms'][base])} ms · "
                   f"<b>torch.ao int8 {s['torch.ao int8']:.2f}x fp32</b> · "
                   f"qlab int8 {s['qlab int8']:.2f}x fp32 · "
                   f"dynamic int8 (fc only) {s['dynamic int8']:.2f}x fp32 (above 1x is faster)"
                   f"{busy_warning(r)}")
        return readout, f"Static int8, {size}"


def cnn_speed_panel(**defaults) -> CNNSpeedPanel:
    """Lesson 04's panel: drag "batch size", "threads" and "width multiplier"; watch static
    int8 against the best fp32. defaults: model ("resnet" or "mobilenet_v2"), batch (1..64),
    threads (1..CPU count; default torch's), width (0.25..4), min_run_time (s)."""
    return CNNSpeedPanel(**defaults)


def _m_text(m: float, m0: int, shift: int) -> str:
    return f"M = {m:.3g} = {m0:,} · 2<sup>−31</sup> · 2<sup>{-shift}</sup>".replace("<sup>-", "<sup>−")


class StepperPanel(Panel):
    """One int8 layer of a converted model on one image, step by step (numbers.step_layer).

    Controls: "layer" (Dropdown of the model's int8 layers, in call order) and "image"
    (IntSlider, an index into `images`). Readout, e.g. "layer1.0.conv1 (conv 3×3 + ReLU), image 7 —
    int32 accumulator in [-1234, 5678] · M = 0.00123 = 1,234,567,890 · 2^−31 · 2^−9 (channel 0) ·
    output codes equal to torch.ao's: 100.00 % (max 0 steps); int32 bias rule 99.12 % (max 1)".
    """

    def __init__(self, model, images: torch.Tensor, layer: str | None = None, image: int = 0):
        names = list(int8_layers(model))
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
            raise ValueError("images must be a non-empty float batch (N, C, H, W), e.g. the test images")
        layer = names[0] if layer is None else layer
        if layer not in names:
            raise ValueError(f"layer {layer!r} is not an int8 layer of this model; "
                             f"they are: {', '.join(names)}")
        check_slider("image", image, 0, len(images) - 1, kind=Integral)
        self.model, self.images = model, images
        self.layer = widgets.Dropdown(options=names, value=layer, description="layer", style=WIDE,
                                      layout=widgets.Layout(width="320px"))
        self.image = int_slider(image, 0, len(images) - 1, "image")
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"layer": self.layer, "image": self.image})
        super().__init__([widgets.HBox([self.layer, self.image]), self.readout, self.output])

    def _step(self, layer: str, image: int) -> dict:
        key = (layer, image)
        if getattr(self, "_last", (None,))[0] != key:
            self._last = (key, step_layer(self.model, layer, self.images[image]))
        return self._last[1]

    def figure(self):
        return figures.plot_stepper(self._step(self.layer.value, self.image.value))

    def _draw(self, layer, image):
        r = self._step(layer, image)
        same, int32 = r["steps"]["float"], r["steps"]["int32"]
        m = _m_text(float(r["multiplier"].flatten()[0]), r["m0"][0], r["shift"][0])
        self.readout.value = (
            f"{layer} ({r['kind']}), image {image} — int32 accumulator in "
            f"[{r['acc_min']}, {r['acc_max']}] · {m} (channel 0) · <b>output codes equal to torch.ao's: "
            f"{100 * (1 - same['differ']):.2f} %</b> (max {same['max']} steps); int32 bias rule "
            f"{100 * (1 - int32['differ']):.2f} % (max {int32['max']})")
        show(self.figure())


def stepper_panel(model, images: torch.Tensor, layer: str | None = None, image: int = 0) -> StepperPanel:
    """Lesson 04's integer stepper: pick a "layer" of a model made by qlab.convert and an "image"
    (index into images); see its input codes, int32 accumulator, (M0, shift) and output codes
    against torch.ao's."""
    return StepperPanel(model, images, layer, image)


#: shift -> (slider label, the amounts the curve is measured at, slider step)
SHIFT_SLIDERS = {
    "brightness": ("brightness: x + a", (-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0), 0.25),
    "contrast": ("contrast: m + a·(x − m)", (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0), 0.25),
    "noise": ("noise: x + a·N(0, 1)", (0.0, 0.25, 0.5, 1.0, 1.5, 2.0), 0.25),
}


class ShiftPanel(Panel):
    """Calibrate static int8 on shifted images, test on the real ones (numbers.calibrate_shifted).

    Controls: "shift" (ToggleButtons brightness / contrast / noise) and "shift amount" (its
    range is the shift's, numbers.SHIFTS). Readout, e.g. "brightness a = 1.00 — int8
    accuracy ResNet 23.1 %, MobileNetV2 55.3 % (calibrated on unshifted images: 100.0 %,
    99.2 %)". Every accuracy is measured once (about 0.1 s) and kept.
    """

    def __init__(self, float_models: dict, calib, x: torch.Tensor, y: torch.Tensor,
                 shift: str = "brightness", amount: float = 0.5, max_images: int = 128, qconfig=None):

        if not isinstance(float_models, dict) or not float_models:
            raise ValueError("float_models must be a non-empty dict: name -> fp32 model")
        check_option("shift", shift, {k: k for k in SHIFT_SLIDERS})
        numbers._check_shift(shift, amount)
        numbers._check_xy(x, y)
        self.models, self.calib, self.x, self.y = float_models, calib, x, y
        self.max_images, self.results = max_images, {}
        self.qconfig = qlab.minmax_qconfig if qconfig is None else qconfig
        images, _ = numbers._images_labels(calib)
        self.images = numbers._check_calib(images)
        self.baseline = {name: numbers.calibrated_accuracy(m, calib, x, y, self.qconfig, max_images)
                         for name, m in float_models.items()}
        self.shift = widgets.ToggleButtons(options=list(SHIFT_SLIDERS), value=shift, description="shift",
                                           style={**WIDE, "button_width": "90px"})
        lo, hi = numbers.SHIFTS[shift]
        self.amount = widgets.FloatSlider(value=amount, min=lo, max=hi, step=SHIFT_SLIDERS[shift][2],
                                          description="shift amount", readout_format=".2f",
                                          continuous_update=False, style=WIDE,
                                          layout=widgets.Layout(width="360px"))
        self.shift.observe(self._new_shift, names="value")  # before interactive_output's observer
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"shift": self.shift, "amount": self.amount})
        super().__init__([self.shift, self.amount, self.readout, self.output])

    def _new_shift(self, change):
        """A new shift: its range on the slider, and the slider at "no shift"."""
        lo, hi = numbers.SHIFTS[change["new"]]
        self.amount.min, self.amount.max = min(lo, self.amount.min), max(hi, self.amount.max)
        self.amount.value = numbers.NO_SHIFT[change["new"]]
        self.amount.min, self.amount.max, self.amount.step = lo, hi, SHIFT_SLIDERS[change["new"]][2]

    def _accuracy(self, name: str, shift: str, amount: float) -> float:
        key = (name, shift, round(float(amount), 4))
        if key not in self.results:
            self.results[key] = numbers.calibrate_shifted(self.models[name], self.calib, self.x, self.y,
                                                          shift, key[2], self.qconfig, self.max_images)
        return self.results[key]

    def figure(self):
        shift, amount = self.shift.value, float(self.amount.value)
        label, grid, _ = SHIFT_SLIDERS[shift]
        amounts = sorted({*grid, round(amount, 4)})
        curves = {name: [self._accuracy(name, shift, a) for a in amounts] for name in self.models}
        shifted = numbers.shift_images(self.images, shift, amount)[: self.max_images]
        calib_range = (float(shifted.min()), float(shifted.max()))
        return figures.plot_shift(amounts, curves, amount, f"shift amount a   ({label})", self.x, shifted,
                                calib_range)

    def _draw(self, shift, amount):
        lo, hi = numbers.SHIFTS[shift]
        if not lo <= amount <= hi:
            return  # the slider is moving to the new shift's range; the next call draws
        now = ", ".join(f"{n} {100 * self._accuracy(n, shift, amount):.1f} %" for n in self.models)
        base = ", ".join(f"{100 * a:.1f} %" for a in self.baseline.values())
        self.readout.value = (f"{shift} a = {amount:.2f} — <b>int8 accuracy {now}</b> "
                              f"(calibrated on unshifted images: {base})")
        show(self.figure())


def shift_panel(float_models: dict, calib, x: torch.Tensor, y: torch.Tensor, shift: str = "brightness",
                amount: float = 0.5, max_images: int = 128, qconfig=None) -> ShiftPanel:
    """Lesson 04's panel: drag "shift amount"; each fp32 model in float_models (name -> model) is
    calibrated on the shifted calib images (qconfig: default qlab.minmax_qconfig) and tested on
    the unshifted (x, y)."""
    return ShiftPanel(float_models, calib, x, y, shift, amount, max_images, qconfig)
