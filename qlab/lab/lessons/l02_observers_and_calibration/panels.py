"""Lesson 02: its panels, sliders wired to the numbers and the figures."""

from __future__ import annotations

from numbers import Integral

import ipywidgets as widgets

from qlab.lab.kit.panel import WIDE, Panel, check_option, check_slider, finite_values, show

from . import figures, numbers
from .numbers import check_factories, inject_outliers, score_observers, with_settings

OUTLIERS, SIZE = (0, 20), (1.0, 50.0)  # the sliders' ranges


OUTLIER_BITS = (2, 8)


PERCENTILES = (99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0)  # the percentile slider's stops


class OutlierPanel(Panel):
    """Inject outliers into an activation and watch each observer's range.

    Controls: "outliers" (IntSlider 0..20: how many values, or channels, become outliers), "size"
    (FloatSlider 1..50, the outliers' max as a multiple of max|x|), "pattern" (ToggleButtons:
    "scattered" values, or whole "channel"s scaled up, as in transformers; "channel" needs x with
    its channel dimension, `axis`), "bits" (IntSlider 2..8, every observer's grid) and
    "percentile" (SelectionSlider over PERCENTILES, 99 to 100 by their nines: the percentile
    observer's p). The readout and legend give
    each observer's SQNR on the original values, so the score is what the bulk of the activations
    suffers from the outliers the observer saw.
    """

    def __init__(self, x, observers: dict, name: str = "activation", outliers: int = 0, size: float = 10.0,
                 pattern: str = "scattered", bits: int = 8, percentile: float = 99.99, axis: int = 1):
        self.x, self.name, self.axis = finite_values(x), name, axis
        check_factories(observers)
        self.observers = observers
        check_slider("outliers", outliers, *OUTLIERS, kind=Integral)
        check_slider("size", size, *SIZE)
        check_slider("bits", bits, *OUTLIER_BITS, kind=Integral)
        check_option("percentile", percentile, {f"{p:g}": p for p in PERCENTILES})
        check_option("pattern", pattern, {p: p for p in numbers.PATTERNS})
        channels = self.x.dim() >= 2 and -self.x.dim() <= axis < self.x.dim()
        if pattern == "channel" and not channels:
            raise ValueError(f"pattern='channel' needs x with channels along axis={axis}; x has shape "
                             f"{tuple(self.x.shape)}: pass it unflattened (e.g. [N, C, H, W]) "
                             "or use 'scattered'")
        self.outliers = widgets.IntSlider(value=outliers, min=OUTLIERS[0], max=OUTLIERS[1],
                                          description="outliers", continuous_update=False,
                                          layout=widgets.Layout(width="250px"))
        self.size = widgets.FloatSlider(value=size, min=SIZE[0], max=SIZE[1], step=1.0,
                                        description="size (× max|x|)", continuous_update=False,
                                        style=WIDE, layout=widgets.Layout(width="320px"))
        self.pattern = widgets.ToggleButtons(
            options=list(numbers.PATTERNS), value=pattern, description="pattern", disabled=not channels,
            tooltips=["a few single values", "whole channels scaled up (a transformer's outlier features)"],
            style={**WIDE, "button_width": "90px"},
        )
        self.bits = widgets.IntSlider(value=bits, min=OUTLIER_BITS[0], max=OUTLIER_BITS[1],
                                      description="bits", continuous_update=False,
                                      layout=widgets.Layout(width="250px"))
        self.percentile = widgets.SelectionSlider(
            options=[(f"{p:g}", p) for p in PERCENTILES], value=percentile, description="percentile",
            continuous_update=False, style=WIDE, layout=widgets.Layout(width="320px"),
        )
        self.readout = widgets.HTML()
        controls = {"outliers": self.outliers, "size": self.size, "pattern": self.pattern,
                    "bits": self.bits, "percentile": self.percentile}
        self.output = widgets.interactive_output(self._draw, controls)
        super().__init__([widgets.HBox([self.outliers, self.size, self.pattern]),
                          widgets.HBox([self.bits, self.percentile]), self.readout, self.output])

    def _compute(self, outliers, size, pattern, bits, percentile):
        key = (outliers, size, pattern, bits, percentile)
        if getattr(self, "_last", (None,))[0] == key:  # drawn once, shown twice
            return self._last[1]
        seen = inject_outliers(self.x, outliers, size, pattern, self.axis)
        observers = with_settings(self.observers, bits=bits, percentile=percentile)
        scores = score_observers(seen, observers, reference=self.x.flatten())
        self.readout.value = " · ".join(
            f"{n}: <b>{s['sqnr']:.1f} dB</b>" for n, s in scores.items()
        ) + f" (SQNR on the original values; {bits}-bit grid, percentile {percentile:g})"
        ranges = {n: s["range"] for n, s in scores.items()}
        legend = {n: f"SQNR {s['sqnr']:.1f} dB" for n, s in scores.items()}
        what = "values" if pattern == "scattered" else "channels"
        title = (f"{self.name}: {outliers} outlier {what} at {size:g} × max|x| · {bits}-bit grid · "
                 f"percentile {percentile:g}")
        fig = figures.plot_observer_ranges(seen, ranges, legend, title=title)
        self._last = (key, fig)
        return fig

    def _draw(self, outliers, size, pattern, bits, percentile):
        show(self._compute(outliers, size, pattern, bits, percentile))

    def figure(self):
        return self._compute(self.outliers.value, self.size.value, self.pattern.value, self.bits.value,
                             self.percentile.value)


def outlier_panel(x, observers: dict, name: str = "activation", **defaults):
    """Lesson 02's panel: drag "outliers", "size", "bits" and "percentile", pick a "pattern";
    min-max's range follows the outliers.

    x: the activation (keep its channel dimension, `axis`, for the "channel" pattern);
    observers: name -> observer class or functools.partial (a fresh observer per draw);
    defaults: outliers (0..20), size (1..50), pattern ("scattered" or "channel"), bits (2..8),
    percentile (one of PERCENTILES, 99 to 100), the controls' starting values, and axis (the channel
    dimension, 1).
    """
    return OutlierPanel(x, observers, name, **defaults)
