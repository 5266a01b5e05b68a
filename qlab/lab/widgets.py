"""Interactive panels: sliders wired to experiments.py (the numbers) and plots.py (the figure).

A panel is an ipywidgets box built with `interactive_output`; it draws its default state
once when built. Displaying a panel also carries a PNG of its current state, so a notebook
stored with outputs shows the figure where no kernel runs (GitHub, nbval); a live kernel
shows the widget instead.

One section per lesson; add yours at the end.
"""

from __future__ import annotations

import base64
import io
import numbers

import ipywidgets as widgets
import torch
from IPython.display import Image, display

from . import plots
from .experiments import (
    SCHEMES,
    check_factories,
    check_scheme,
    clip_range,
    inject_outliers,
    quantization_report,
    quantize_with,
    score_observers,
)

# clip_range, quantize_with, inject_outliers and score_observers are the lessons' names for the
# math behind the panels; they live in experiments.py and stay importable from here.
__all__ = ["OutlierPanel", "QuantizationPanel", "clip_range", "inject_outliers", "outlier_panel",
           "quantization_panel", "quantize_with", "score_observers"]  # fmt: skip

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


def _values(x) -> torch.Tensor:
    """x (a tensor, numpy array or list of numbers) as a float32 tensor with finite values.

    Checked here, before the panel draws: inside a notebook an error during the draw only
    shows in the panel's output area, and the cell that built the panel would not fail.
    """
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"x must be a tensor, numpy array or list of numbers, got {type(x).__name__}") from e
    if t.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(t.shape)}); the panel needs at least one value")
    t = t.detach().float()
    if not torch.isfinite(t).all():
        raise ValueError("x contains NaN or Inf; the panel needs finite values")
    return t


def _check_slider(name: str, value, lo, hi, kind=numbers.Real) -> None:
    """ValueError unless lo <= value <= hi: a slider would silently clamp it to its range."""
    if isinstance(value, bool) or not isinstance(value, kind):
        allowed = "an int" if kind is numbers.Integral else "a number"
        raise TypeError(f"{name} must be {allowed} in {lo}..{hi}, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is outside the panel's range; {name} must be in {lo}..{hi}")


# ---------------------------------------------------------------------------------------
# Lesson 01: quantization math
# ---------------------------------------------------------------------------------------

BITS, CLIP = (2, 8), (0.05, 1.0)  # the sliders' ranges


class QuantizationPanel(Panel):
    """Histogram of x with the grid, the error histogram, and a live SQNR / MSE readout.

    Controls (descriptions as shown): "bits" (IntSlider 2..8), "scheme" (ToggleButtons
    symmetric / affine), "clip range" (FloatSlider, fraction of x's min..max kept, 0.05..1).
    Readout: an HTML widget "SQNR = 10.14 dB · MSE = 8.3e-03 · scale = ... ".
    """

    def __init__(self, x, name: str = "x", bits: int = 4, scheme: str = "symmetric", clip: float = 1.0):
        self.x, self.name = _values(x), name
        _check_slider("bits", bits, *BITS, kind=numbers.Integral)
        check_scheme(scheme)
        _check_slider("clip", clip, *CLIP)
        self.bits = widgets.IntSlider(
            value=bits, min=BITS[0], max=BITS[1], step=1, description="bits",
            continuous_update=False, layout=widgets.Layout(width="250px"),
        )
        self.scheme = widgets.ToggleButtons(
            options=list(SCHEMES), value=scheme, description="scheme",
            tooltips=["signed grid centred on 0", "unsigned grid with a zero point"],
            style={**_WIDE, "button_width": "90px"},
        )
        self.clip = widgets.FloatSlider(
            value=clip, min=CLIP[0], max=CLIP[1], step=0.05, description="clip range",
            readout_format=".0%", continuous_update=False, style=_WIDE,
            layout=widgets.Layout(width="320px"),
        )
        self.readout = widgets.HTML(description="")
        controls = {"bits": self.bits, "scheme": self.scheme, "clip": self.clip}
        self.output = widgets.interactive_output(self._draw, controls)
        super().__init__([widgets.HBox([self.bits, self.scheme, self.clip]),
                          self.readout, self.output])

    def _compute(self, bits, scheme, clip):
        r = quantization_report(self.x, bits, scheme, clip)
        qp = r.qparams
        self.readout.value = (
            f"<b>SQNR = {r.sqnr:.2f} dB</b> · MSE = {r.mse:.2e} · "
            f"scale = {qp.scale.item():.4g}, zero_point = {qp.zero_point.item()} · "
            f"grid [{qp.qmin}, {qp.qmax}] · {r.clipped:.2%} of values clipped"
        )
        title = f"{self.name}: {bits}-bit {scheme}, clip range {clip:.0%} · SQNR {r.sqnr:.2f} dB"
        return plots.plot_quantization(self.x, r.x_hat, r.levels, r.clip_range, title=title,
                                       scale=qp.scale.item())

    def _draw(self, bits, scheme, clip):
        _show(self._compute(bits, scheme, clip))

    def figure(self):
        return self._compute(self.bits.value, self.scheme.value, self.clip.value)


def quantization_panel(x, name: str = "x", **defaults) -> QuantizationPanel:
    """Lesson 01's panel: drag "bits", "scheme" and "clip range"; watch x, grid and error.

    x: a tensor, numpy array or list of numbers; defaults: bits (2..8), scheme
    ("symmetric" or "affine") and clip (0.05..1), the sliders' starting values.
    """
    return QuantizationPanel(x, name, **defaults)


# ---------------------------------------------------------------------------------------
# Lesson 02: observers and calibration
# ---------------------------------------------------------------------------------------

OUTLIERS, SIZE = (0, 20), (1.0, 50.0)  # the sliders' ranges


class OutlierPanel(Panel):
    """Inject a few outliers into an activation and watch each observer's range.

    Controls: "outliers" (IntSlider 0..20, how many values are replaced) and "size"
    (FloatSlider 1..50, the outliers' value as a multiple of max|x|). The readout and legend
    give each observer's SQNR on the original values, so the score is what the bulk of the
    activations suffers from the outliers the observer saw.
    """

    def __init__(self, x, observers: dict, name: str = "activation", outliers: int = 0, size: float = 10.0):
        self.x, self.name = _values(x).flatten(), name
        check_factories(observers)
        self.observers = observers
        _check_slider("outliers", outliers, *OUTLIERS, kind=numbers.Integral)
        _check_slider("size", size, *SIZE)
        self.outliers = widgets.IntSlider(value=outliers, min=OUTLIERS[0], max=OUTLIERS[1],
                                          description="outliers", continuous_update=False,
                                          layout=widgets.Layout(width="250px"))
        self.size = widgets.FloatSlider(value=size, min=SIZE[0], max=SIZE[1], step=1.0,
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


def outlier_panel(x, observers: dict, name: str = "activation", **defaults):
    """Lesson 02's panel: drag "outliers" and "size"; min-max's range follows the outliers.

    observers: name -> observer class or functools.partial (a fresh observer per draw);
    defaults: outliers (0..20) and size (1..50), the sliders' starting values.
    """
    return OutlierPanel(x, observers, name, **defaults)
