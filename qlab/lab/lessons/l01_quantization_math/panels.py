"""Lesson 01: its panels, sliders wired to the numbers and the figures."""

from __future__ import annotations

from numbers import Integral

import ipywidgets as widgets
import torch

from qlab.lab.kit.check import check_choice
from qlab.lab.kit.panel import WIDE, Panel, check_slider, finite_values, show

from . import figures
from .numbers import GRANULARITIES, SCHEMES, check_granularity, check_scheme, quantization_report

BITS, CLIP = (2, 8), (0.05, 1.0)  # the sliders' ranges


def _tensors(x, name: str) -> dict[str, torch.Tensor]:
    """{name: values} from one tensor (array, list) or a dict of them, each checked by finite_values."""
    if isinstance(x, dict):
        if not x:
            raise ValueError("x is an empty dict; give at least one tensor, e.g. {'weight': w}")
        for key in x:
            if not isinstance(key, str):
                raise TypeError(f"the dict's keys are the tensors' names and must be str, got {key!r}")
        return {key: finite_values(v) for key, v in x.items()}
    return {name: finite_values(x)}


class QuantizationPanel(Panel):
    """Histogram of x with the grid, the quantized values, the error histogram, and a live
    SQNR / MSE readout.

    Controls (descriptions as shown): "tensor" (Dropdown over the tensors given; hidden when
    there is one), "bits" (IntSlider 2..8), "scheme" (ToggleButtons symmetric / affine),
    "granularity" (ToggleButtons per-tensor / per-channel: one scale for the tensor, or one per
    row: a weight's output channel, an activation's token), "clip range" (FloatSlider,
    fraction of the range kept, 0.05..1).
    Readout: an HTML widget "SQNR = 10.14 dB · MSE = 8.3e-03 · scale = ... ".
    """

    def __init__(self, x, name: str = "x", bits: int = 4, scheme: str = "symmetric", clip: float = 1.0,
                 granularity: str = "per-tensor", tensor: str | None = None):
        self.tensors = _tensors(x, name)
        tensor = next(iter(self.tensors)) if tensor is None else tensor
        check_choice("tensor", tensor, self.tensors, what=f"one of {tuple(self.tensors)}")
        check_slider("bits", bits, *BITS, kind=Integral)
        check_scheme(scheme)
        check_granularity(granularity)
        check_slider("clip", clip, *CLIP)
        self.tensor = widgets.Dropdown(
            options=list(self.tensors), value=tensor, description="tensor", style=WIDE,
            layout=widgets.Layout(width="380px", display=None if len(self.tensors) > 1 else "none"),
        )
        self.bits = widgets.IntSlider(
            value=bits, min=BITS[0], max=BITS[1], step=1, description="bits",
            continuous_update=False, layout=widgets.Layout(width="250px"),
        )
        self.scheme = widgets.ToggleButtons(
            options=list(SCHEMES), value=scheme, description="scheme",
            tooltips=["signed grid centred on 0", "unsigned grid with a zero point"],
            style={**WIDE, "button_width": "90px"},
        )
        self.granularity = widgets.ToggleButtons(
            options=list(GRANULARITIES), value=granularity, description="granularity",
            tooltips=["one scale for the whole tensor",
                      "one scale per row: a weight's output channel, an activation's token"],
            style={**WIDE, "button_width": "100px"},
        )
        self.clip = widgets.FloatSlider(
            value=clip, min=CLIP[0], max=CLIP[1], step=0.05, description="clip range",
            readout_format=".0%", continuous_update=False, style=WIDE,
            layout=widgets.Layout(width="320px"),
        )
        self.readout = widgets.HTML(description="")
        controls = {"tensor": self.tensor, "bits": self.bits, "scheme": self.scheme,
                    "granularity": self.granularity, "clip": self.clip}
        self.output = widgets.interactive_output(self._draw, controls)
        super().__init__([widgets.HBox([self.tensor, self.granularity]),
                          widgets.HBox([self.bits, self.scheme, self.clip]),
                          self.readout, self.output])

    @property
    def x(self) -> torch.Tensor:
        """The tensor the panel shows now."""
        return self.tensors[self.tensor.value]

    def _compute(self, tensor, bits, scheme, granularity, clip):
        x = self.tensors[tensor]
        r = quantization_report(x, bits, scheme, clip, granularity)
        qp = r.qparams
        if r.row is None:
            where = f"scale = {r.scale:.4g}, zero_point = {r.zero_point}"
        else:
            where = (f"{qp.scale.numel()} scales, one per row; row {r.row} (median range): "
                     f"scale = {r.scale:.4g}, zero_point = {r.zero_point}")
        self.readout.value = (
            f"<b>SQNR = {r.sqnr:.2f} dB</b> · MSE = {r.mse:.2e} · {where} · "
            f"grid [{qp.qmin}, {qp.qmax}] · {r.clipped:.2%} of values clipped"
        )
        title = f"{tensor}: {bits}-bit {scheme} {granularity}, clip range {clip:.0%} · SQNR {r.sqnr:.2f} dB"
        return figures.plot_quantization(x, r.x_hat, r.levels, r.clip_range, title=title, scale=r.scale,
                                       row=r.row)

    def _draw(self, tensor, bits, scheme, granularity, clip):
        show(self._compute(tensor, bits, scheme, granularity, clip))

    def figure(self):
        return self._compute(self.tensor.value, self.bits.value, self.scheme.value,
                             self.granularity.value, self.clip.value)


def quantization_panel(x, name: str = "x", **defaults) -> QuantizationPanel:
    """Lesson 01's panel: pick a tensor and a granularity, drag "bits", "scheme" and "clip range";
    watch x, grid and error.

    x: a tensor, numpy array or list of numbers (shown as `name`), or a dict {name: tensor} to
    choose from; defaults: tensor (a key of that dict), bits (2..8), scheme ("symmetric" or
    "affine"), granularity ("per-tensor" or "per-channel") and clip (0.05..1), the controls'
    starting values.
    """
    return QuantizationPanel(x, name, **defaults)
