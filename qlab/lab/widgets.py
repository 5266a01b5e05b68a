"""Interactive panels: sliders wired to qlab (for the numbers) and plots.py (for the figure).

A panel is an ipywidgets box built with `interactive_output`; it draws its default state
once when built. Displaying a panel also carries a PNG of its current state, so a notebook
stored with outputs shows the figure where no kernel runs (GitHub, nbval); a live kernel
shows the widget instead.

One section per lesson; add yours at the end.
"""

from __future__ import annotations

import base64
import io

import ipywidgets as widgets
import torch
from IPython.display import Image, display

import qlab

from . import plots

_WIDE = {"description_width": "initial"}


class Panel(widgets.VBox):
    """A VBox whose display also includes a PNG of `figure()` (the current state)."""

    def figure(self):  # overridden per panel
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(_png(self.figure())).decode("ascii")
        return bundle


def _png(fig, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _show(fig):
    """Display a Figure as a PNG (inside a panel's Output widget), whatever the backend."""
    display(Image(_png(fig)))


# ---------------------------------------------------------------------------------------
# Lesson 01: quantization math
# ---------------------------------------------------------------------------------------


def clip_range(x: torch.Tensor, scheme: str, clip: float) -> tuple[float, float]:
    """The range the grid covers: clip * [min, max] (affine) or clip * [-max|x|, max|x|]."""
    if scheme == "symmetric":
        a = clip * x.abs().max().item()
        return -a, a
    return clip * x.min().item(), clip * x.max().item()


def quantize_with(x: torch.Tensor, bits: int, scheme: str, clip: float):
    """qparams and fake-quantized x for the panel's settings (all the math is qlab's).

    'symmetric' uses a signed grid centred on 0 (PyTorch's default for weights), 'affine'
    an unsigned grid with a zero point (PyTorch's default for activations).
    """
    symmetric = scheme == "symmetric"
    lo, hi = clip_range(x, scheme, clip)
    qp = qlab.qparams_from_range(lo, hi, qlab.qdtype(bits, signed=symmetric), symmetric=symmetric)
    return qp, qlab.fake_quantize(x, qp)


class QuantizationPanel(Panel):
    """Histogram of x with the grid, the error histogram, and a live SQNR / MSE readout.

    Controls (descriptions as shown): "bits" (IntSlider 2..8), "scheme" (ToggleButtons
    symmetric / affine), "clip range" (FloatSlider, fraction of x's min..max kept).
    Readout: an HTML widget "SQNR = 10.14 dB · MSE = 8.3e-03 · scale = ... ".
    """

    def __init__(self, x: torch.Tensor, name: str = "x", bits: int = 4,
                 scheme: str = "symmetric", clip: float = 1.0):
        self.x, self.name = x.detach().float(), name
        self.bits = widgets.IntSlider(
            value=bits, min=2, max=8, step=1, description="bits",
            continuous_update=False,
        )
        self.scheme = widgets.ToggleButtons(
            options=["symmetric", "affine"], value=scheme, description="scheme",
            tooltips=["signed grid centred on 0", "unsigned grid with a zero point"],
            style={**_WIDE, "button_width": "80px"},
        )
        self.clip = widgets.FloatSlider(
            value=clip, min=0.05, max=1.0, step=0.05, description="clip range",
            readout_format=".0%", continuous_update=False, style=_WIDE,
        )
        self.readout = widgets.HTML(description="")
        controls = {"bits": self.bits, "scheme": self.scheme, "clip": self.clip}
        self.output = widgets.interactive_output(self._draw, controls)
        super().__init__([widgets.HBox([self.bits, self.scheme, self.clip]),
                          self.readout, self.output])

    def _compute(self, bits, scheme, clip):
        qp, x_hat = quantize_with(self.x, bits, scheme, clip)
        sqnr, mse = qlab.metrics.sqnr(self.x, x_hat), qlab.metrics.mse(self.x, x_hat)
        levels = qlab.dequantize(torch.arange(qp.qmin, qp.qmax + 1), qp)
        lo, hi = clip_range(self.x, scheme, clip)
        clipped = ((self.x < lo) | (self.x > hi)).float().mean().item()
        self.readout.value = (
            f"<b>SQNR = {sqnr:.2f} dB</b> · MSE = {mse:.2e} · "
            f"scale = {qp.scale.item():.4g}, zero_point = {qp.zero_point.item()} · "
            f"grid [{qp.qmin}, {qp.qmax}] · {clipped:.2%} of values clipped"
        )
        title = f"{self.name}: {bits}-bit {scheme}, clip range {clip:.0%} · SQNR {sqnr:.2f} dB"
        return plots.plot_quantization(self.x, x_hat, levels, (lo, hi), title=title)

    def _draw(self, bits, scheme, clip):
        _show(self._compute(bits, scheme, clip))

    def figure(self):
        return self._compute(self.bits.value, self.scheme.value, self.clip.value)


def quantization_panel(x: torch.Tensor, name: str = "x", **defaults) -> QuantizationPanel:
    """Lesson 01's panel: drag "bits", "scheme" and "clip range"; watch x, grid and error."""
    return QuantizationPanel(x, name, **defaults)
