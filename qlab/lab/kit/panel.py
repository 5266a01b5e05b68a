"""The panel base every lesson's sliders use.

A panel is an ipywidgets box built with `interactive_output`; it draws its default state once
when built. Displaying a panel also carries a PNG of its current state, so a notebook stored
with outputs shows the figure where no kernel runs (GitHub, nbval); a live kernel shows the
widget instead.

    Panel                  the base: a box whose display carries a PNG of its current figure
    SpeedPanel             the shared speed panel: sliders in, timed ratios out (lessons 03, 04, 07)
    check_slider, check_option, check_run_time   checked before a panel draws, with clear errors
    show(fig), png(fig)    a Figure as a PNG inside a panel's output
    WIDE, PANEL_RUN_TIME, int_slider, threads_range, threads_text, busy_warning, finite_values
                           the shared widget style, slider and readout helpers"""

from __future__ import annotations

import base64
import io
import numbers

import ipywidgets as widgets
import torch
from IPython.display import Image, display

from . import figure, timing, torch_ao
from .check import check_choice

WIDE = {"description_width": "initial"}


class Panel(widgets.VBox):
    """A VBox whose display also includes a PNG of `figure()` (the current state)."""

    def figure(self):  # overridden per panel
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(png(self.figure())).decode("ascii")
        return bundle


def png(fig, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def show(fig):
    """Display a Figure as a PNG (inside a panel's Output widget), whatever the backend."""
    display(Image(png(fig)))


def finite_values(x) -> torch.Tensor:
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


def check_slider(name: str, value, lo, hi, kind=numbers.Real) -> None:
    """ValueError unless lo <= value <= hi: a slider would silently clamp it to its range."""
    if isinstance(value, bool) or not isinstance(value, kind):
        allowed = "an int" if kind is numbers.Integral else "a number"
        raise TypeError(f"{name} must be {allowed} in {lo}..{hi}, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is outside the panel's range; {name} must be in {lo}..{hi}")


PANEL_RUN_TIME = 0.05  # seconds of timed calls per configuration and draw: a draw takes seconds


def threads_range() -> tuple[int, int]:
    return 1, timing.max_threads()


def threads_text(n: int) -> str:
    """"2 threads" (and, off x86, the int8 engine the timing ran on: "2 threads, qnnpack int8")."""
    return f"{n} thread" + ("" if n == 1 else "s") + ("" if torch_ao.X86 else f", {torch_ao.ENGINE} int8")


def busy_warning(r: dict) -> str:
    """A warning when the timing rounds disagreed: other work ran during the draw."""
    spread = r.get("spread", 1.0)
    if spread > timing.UNSTABLE:
        return f" · ⚠ busy machine: timing rounds differed {spread:.1f}x, move a slider to remeasure"
    return ""


def check_run_time(min_run_time) -> None:
    if isinstance(min_run_time, bool) or not isinstance(min_run_time, numbers.Real) or not min_run_time > 0:
        raise ValueError(f"min_run_time must be a number of seconds > 0, got {min_run_time!r}")


def check_option(name: str, value, options: dict) -> None:
    check_choice(name, value, tuple(options.values()), what=f"one of {tuple(options.values())}")


def int_slider(value, lo, hi, description, step=1):
    return widgets.IntSlider(value=value, min=lo, max=hi, step=step, description=description,
                             continuous_update=False, style=WIDE, layout=widgets.Layout(width="300px"))


class SpeedPanel(Panel):
    """A panel whose draw is a timing: the last settings' result and figure are kept, so the
    PNG shown with the widget is the draw the readout describes, not a second, different timing."""

    controls: dict

    def _measure(self, **settings) -> dict:  # overridden per panel
        raise NotImplementedError

    def _describe(self, r: dict) -> tuple[str, str]:  # -> (readout HTML, figure title)
        raise NotImplementedError

    def _compute(self, **settings):
        key = tuple(sorted(settings.items()))
        if getattr(self, "_last", (None,))[0] == key:
            return self._last[1]
        self.result = self._measure(**settings)
        readout, title = self._describe(self.result)
        self.readout.value = readout
        fig = figure.plot_latency(self.result, title)
        self._last = (key, fig)
        return fig

    def _draw(self, **settings):
        show(self._compute(**settings))

    def figure(self):
        return self._compute(**{name: w.value for name, w in self.controls.items()})
