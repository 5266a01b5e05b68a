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
            continuous_update=False, layout=widgets.Layout(width="250px"),
        )
        self.scheme = widgets.ToggleButtons(
            options=["symmetric", "affine"], value=scheme, description="scheme",
            tooltips=["signed grid centred on 0", "unsigned grid with a zero point"],
            style={**_WIDE, "button_width": "90px"},
        )
        self.clip = widgets.FloatSlider(
            value=clip, min=0.05, max=1.0, step=0.05, description="clip range",
            readout_format=".0%", continuous_update=False, style=_WIDE,
            layout=widgets.Layout(width="320px"),
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


# ---------------------------------------------------------------------------------------
# Lesson 02: observers and calibration
# ---------------------------------------------------------------------------------------


def score_observers(x: torch.Tensor, observers: dict, reference: torch.Tensor | None = None) -> dict:
    """Run each observer (name -> factory) on x; quantize with its qparams and score it.

    Returns name -> {"range": (min, max) the grid really covers, "qparams", "mse", "sqnr"}.
    The scores compare `reference` (default x) with its fake-quantized self, so injected
    outliers can be left out of the score while the observers still see them.
    """
    ref = x if reference is None else reference
    out = {}
    for name, make in observers.items():
        obs = make()
        obs(x)
        qp = obs.qparams()
        x_hat = qlab.fake_quantize(ref, qp)
        lo, hi = qlab.dequantize(torch.tensor([qp.qmin, qp.qmax]), qp).tolist()
        out[name] = {"range": (lo, hi), "qparams": qp,
                     "mse": qlab.metrics.mse(ref, x_hat), "sqnr": qlab.metrics.sqnr(ref, x_hat)}
    return out


def inject_outliers(x: torch.Tensor, count: int, size: float) -> torch.Tensor:
    """x (flattened) with `count` evenly spaced values replaced by size * max|x|."""
    x = x.detach().flatten().clone()
    if count > 0:
        idx = torch.linspace(0, x.numel() - 1, count).long()
        x[idx] = size * x.abs().max()
    return x


class OutlierPanel(Panel):
    """Inject a few outliers into an activation and watch each observer's range.

    Controls: "outliers" (IntSlider 0..20, how many values are replaced) and "size"
    (FloatSlider 1..50, the outliers' value as a multiple of max|x|). The readout and legend
    give each observer's SQNR on the original values, so the score is what the bulk of the
    activations suffers from the outliers the observer saw.
    """

    def __init__(self, x: torch.Tensor, observers: dict, name: str = "activation",
                 outliers: int = 0, size: float = 10.0):
        self.x, self.observers, self.name = x.detach().float().flatten(), observers, name
        self.outliers = widgets.IntSlider(value=outliers, min=0, max=20, description="outliers",
                                          continuous_update=False,
                                          layout=widgets.Layout(width="250px"))
        self.size = widgets.FloatSlider(value=size, min=1.0, max=50.0, step=1.0,
                                        description="size (× max|x|)", continuous_update=False,
                                        style=_WIDE, layout=widgets.Layout(width="320px"))
        self.readout = widgets.HTML()
        controls = {"outliers": self.outliers, "size": self.size}
        self.output = widgets.interactive_output(self._draw, controls)
        super().__init__([widgets.HBox([self.outliers, self.size]), self.readout, self.output])

    def _compute(self, outliers, size):
        if getattr(self, "_last", (None,))[0] == (outliers, size):  # drawn once, shown twice
            return self._last[1]
        seen = inject_outliers(self.x, outliers, size)
        scores = score_observers(seen, self.observers, reference=self.x)
        self.readout.value = " · ".join(
            f"{n}: <b>{s['sqnr']:.1f} dB</b>" for n, s in scores.items()
        ) + " (SQNR on the original values)"
        ranges = {n: s["range"] for n, s in scores.items()}
        legend = {n: f"SQNR {s['sqnr']:.1f} dB" for n, s in scores.items()}
        title = f"{self.name}: {outliers} outliers at {size:g} × max|x|"
        fig = plots.plot_observer_ranges(seen, ranges, legend, title=title)
        self._last = ((outliers, size), fig)
        return fig

    def _draw(self, outliers, size):
        _show(self._compute(outliers, size))

    def figure(self):
        return self._compute(self.outliers.value, self.size.value)


def outlier_panel(x: torch.Tensor, observers: dict, name: str = "activation", **defaults):
    """Lesson 02's panel: drag "outliers" and "size"; min-max's range follows the outliers."""
    return OutlierPanel(x, observers, name, **defaults)
