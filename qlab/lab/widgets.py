"""Interactive panels: sliders wired to experiments.py or bench.py (the numbers) and plots.py (the figure).

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

import qlab

from . import bench, experiments, plots
from .experiments import (
    GRANULARITIES,
    SCHEMES,
    check_factories,
    check_granularity,
    check_scheme,
    clip_range,
    inject_outliers,
    quantization_report,
    quantize_with,
    score_observers,
    with_settings,
)

# clip_range, quantize_with, inject_outliers and score_observers are the lessons' names for the
# math behind the panels; they live in experiments.py and stay importable from here.
__all__ = ["CNNSpeedPanel", "DynamicSpeedPanel", "OutlierPanel", "QuantizationPanel", "ShiftPanel",
           "StepperPanel", "clip_range", "shift_panel", "stepper_panel",
           "cnn_speed_panel", "dynamic_speed_panel", "inject_outliers", "outlier_panel",
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


def _tensors(x, name: str) -> dict[str, torch.Tensor]:
    """{name: values} from one tensor (array, list) or a dict of them, each checked by _values."""
    if isinstance(x, dict):
        if not x:
            raise ValueError("x is an empty dict; give at least one tensor, e.g. {'weight': w}")
        for key in x:
            if not isinstance(key, str):
                raise TypeError(f"the dict's keys are the tensors' names and must be str, got {key!r}")
        return {key: _values(v) for key, v in x.items()}
    return {name: _values(x)}


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
        if tensor not in self.tensors:
            raise ValueError(f"tensor must be one of {tuple(self.tensors)}, got {tensor!r}")
        _check_slider("bits", bits, *BITS, kind=numbers.Integral)
        check_scheme(scheme)
        check_granularity(granularity)
        _check_slider("clip", clip, *CLIP)
        self.tensor = widgets.Dropdown(
            options=list(self.tensors), value=tensor, description="tensor", style=_WIDE,
            layout=widgets.Layout(width="380px", display=None if len(self.tensors) > 1 else "none"),
        )
        self.bits = widgets.IntSlider(
            value=bits, min=BITS[0], max=BITS[1], step=1, description="bits",
            continuous_update=False, layout=widgets.Layout(width="250px"),
        )
        self.scheme = widgets.ToggleButtons(
            options=list(SCHEMES), value=scheme, description="scheme",
            tooltips=["signed grid centred on 0", "unsigned grid with a zero point"],
            style={**_WIDE, "button_width": "90px"},
        )
        self.granularity = widgets.ToggleButtons(
            options=list(GRANULARITIES), value=granularity, description="granularity",
            tooltips=["one scale for the whole tensor",
                      "one scale per row: a weight's output channel, an activation's token"],
            style={**_WIDE, "button_width": "100px"},
        )
        self.clip = widgets.FloatSlider(
            value=clip, min=CLIP[0], max=CLIP[1], step=0.05, description="clip range",
            readout_format=".0%", continuous_update=False, style=_WIDE,
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
        return plots.plot_quantization(x, r.x_hat, r.levels, r.clip_range, title=title, scale=r.scale,
                                       row=r.row)

    def _draw(self, tensor, bits, scheme, granularity, clip):
        _show(self._compute(tensor, bits, scheme, granularity, clip))

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


# ---------------------------------------------------------------------------------------
# Lesson 02: observers and calibration
# ---------------------------------------------------------------------------------------

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
        self.x, self.name, self.axis = _values(x), name, axis
        check_factories(observers)
        self.observers = observers
        _check_slider("outliers", outliers, *OUTLIERS, kind=numbers.Integral)
        _check_slider("size", size, *SIZE)
        _check_slider("bits", bits, *OUTLIER_BITS, kind=numbers.Integral)
        _check_option("percentile", percentile, {f"{p:g}": p for p in PERCENTILES})
        _check_option("pattern", pattern, {p: p for p in experiments.PATTERNS})
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
                                        style=_WIDE, layout=widgets.Layout(width="320px"))
        self.pattern = widgets.ToggleButtons(
            options=list(experiments.PATTERNS), value=pattern, description="pattern", disabled=not channels,
            tooltips=["a few single values", "whole channels scaled up (a transformer's outlier features)"],
            style={**_WIDE, "button_width": "90px"},
        )
        self.bits = widgets.IntSlider(value=bits, min=OUTLIER_BITS[0], max=OUTLIER_BITS[1],
                                      description="bits", continuous_update=False,
                                      layout=widgets.Layout(width="250px"))
        self.percentile = widgets.SelectionSlider(
            options=[(f"{p:g}", p) for p in PERCENTILES], value=percentile, description="percentile",
            continuous_update=False, style=_WIDE, layout=widgets.Layout(width="320px"),
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
        fig = plots.plot_observer_ranges(seen, ranges, legend, title=title)
        self._last = (key, fig)
        return fig

    def _draw(self, outliers, size, pattern, bits, percentile):
        _show(self._compute(outliers, size, pattern, bits, percentile))

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


# ---------------------------------------------------------------------------------------
# Lessons 03 and 04: speed panels (real timings: bench.py measures, plots.py draws)
# ---------------------------------------------------------------------------------------

HIDDEN, BATCH, SEQ, WIDTH = (128, 1024), (1, 64), (1, 64), (0.25, 4.0)  # the sliders' ranges
PANEL_RUN_TIME = 0.05  # seconds of timed calls per configuration and draw: a draw takes seconds
DYNAMIC_KINDS = {"LSTM": "lstm", "Linear": "linear"}
CNN_MODELS = {"ResNet": "resnet", "MobileNetV2": "mobilenet_v2"}


def _threads_range() -> tuple[int, int]:
    return 1, bench.max_threads()


def _threads(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def _busy(r: dict) -> str:
    """A warning when the timing rounds disagreed: other work ran during the draw."""
    spread = r.get("spread", 1.0)
    if spread > bench.UNSTABLE:
        return f" · ⚠ busy machine: timing rounds differed {spread:.1f}x, move a slider to remeasure"
    return ""


def _check_run_time(min_run_time) -> None:
    if isinstance(min_run_time, bool) or not isinstance(min_run_time, numbers.Real) or not min_run_time > 0:
        raise ValueError(f"min_run_time must be a number of seconds > 0, got {min_run_time!r}")


def _check_option(name: str, value, options: dict) -> None:
    if value not in options.values():
        raise ValueError(f"{name} must be one of {tuple(options.values())}, got {value!r}")


def _int_slider(value, lo, hi, description, step=1):
    return widgets.IntSlider(value=value, min=lo, max=hi, step=step, description=description,
                             continuous_update=False, style=_WIDE, layout=widgets.Layout(width="300px"))


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
        fig = plots.plot_latency(self.result, title)
        self._last = (key, fig)
        return fig

    def _draw(self, **settings):
        _show(self._compute(**settings))

    def figure(self):
        return self._compute(**{name: w.value for name, w in self.controls.items()})


class DynamicSpeedPanel(SpeedPanel):
    """Latency of fp32, torch.ao dynamic int8 and qlab dynamic int8 on a random LSTM or Linear stack.

    Controls: "model" (ToggleButtons LSTM / Linear), "hidden size" (IntSlider 128..1024),
    "batch size" (1..64), "sequence length" (1..64), "threads" (1..CPU count). Readout:
    "LSTM, hidden 256, batch 32, seq 32, 2 threads — torch.ao int8 1.23x fp32, qlab int8 0.80x fp32".
    Numbers: qlab.lab.bench.time_dynamic, measured anew on every draw.
    """

    def __init__(self, kind: str = "lstm", hidden: int = 256, batch: int = 32, seq: int = 32,
                 threads: int | None = None, min_run_time: float = PANEL_RUN_TIME):
        _check_option("kind", kind, DYNAMIC_KINDS)
        _check_slider("hidden", hidden, *HIDDEN, kind=numbers.Integral)
        _check_slider("batch", batch, *BATCH, kind=numbers.Integral)
        _check_slider("seq", seq, *SEQ, kind=numbers.Integral)
        threads = torch.get_num_threads() if threads is None else threads
        _check_slider("threads", threads, *_threads_range(), kind=numbers.Integral)
        _check_run_time(min_run_time)
        self.min_run_time = min_run_time
        self.kind = widgets.ToggleButtons(options=list(DYNAMIC_KINDS.items()), value=kind,
                                          description="model", style={**_WIDE, "button_width": "80px"})
        self.hidden = _int_slider(hidden, *HIDDEN, "hidden size", step=64)
        self.batch = _int_slider(batch, *BATCH, "batch size")
        self.seq = _int_slider(seq, *SEQ, "sequence length")
        self.threads = _int_slider(threads, *_threads_range(), "threads")
        self.readout = widgets.HTML()
        self.controls = {"kind": self.kind, "hidden": self.hidden, "batch": self.batch, "seq": self.seq,
                         "threads": self.threads}
        self.output = widgets.interactive_output(self._draw, self.controls)
        super().__init__([self.kind, widgets.HBox([self.hidden, self.batch]),
                          widgets.HBox([self.seq, self.threads]), self.readout, self.output])

    def _measure(self, kind, hidden, batch, seq, threads):
        return bench.time_dynamic(kind, hidden, batch, seq, threads, self.min_run_time)

    def _describe(self, r):
        name = {v: k for k, v in DYNAMIC_KINDS.items()}[r["kind"]]
        s = r["speedup"]
        size = f"{name}, hidden {r['hidden']}, batch {r['batch']}, seq {r['seq']}, {_threads(r['threads'])}"
        readout = (f"{size} — <b>torch.ao int8 {s['torch.ao int8']:.2f}x fp32</b>, "
                   f"qlab int8 {s['qlab int8']:.2f}x fp32 (fp32 {plots.fmt_ms(r['ms']['fp32'])} ms; "
                   f"above 1x is faster){_busy(r)}")
        return readout, f"Dynamic int8, {size}"


def dynamic_speed_panel(**defaults) -> DynamicSpeedPanel:
    """Lesson 03's panel: drag "hidden size", "batch size" and "sequence length"; watch where
    dynamic int8 starts to pay. defaults: kind ("lstm" or "linear"), hidden (128..1024),
    batch (1..64), seq (1..64), threads (1..CPU count; default torch's), min_run_time (s)."""
    return DynamicSpeedPanel(**defaults)


class CNNSpeedPanel(SpeedPanel):
    """Latency of a lesson CNN: best fp32 (contiguous or channels_last, named), torch.ao static
    int8, qlab static int8 and dynamic int8 (only the fc), with the ratios vs the best fp32.

    Controls: "model" (ToggleButtons ResNet / MobileNetV2), "batch size" (1..64), "threads"
    (1..CPU count), "width multiplier" (0.25..4, the lesson model's channel widths times this).
    Readout: "ResNet ×1.00, batch 64, 2 threads — best fp32: channels_last 3.1 ms · torch.ao
    int8 2.05x fp32 · qlab int8 0.15x fp32 · dynamic int8 (fc only) 1.00x fp32".
    Numbers: qlab.lab.bench.time_cnn (random weights; the first draw at a width builds and
    calibrates its int8 models).
    """

    def __init__(self, model: str = "resnet", batch: int = 64, threads: int | None = None,
                 width: float = 1.0, min_run_time: float = PANEL_RUN_TIME):
        _check_option("model", model, CNN_MODELS)
        _check_slider("batch", batch, *BATCH, kind=numbers.Integral)
        threads = torch.get_num_threads() if threads is None else threads
        _check_slider("threads", threads, *_threads_range(), kind=numbers.Integral)
        _check_slider("width", width, *WIDTH)
        _check_run_time(min_run_time)
        self.min_run_time = min_run_time
        self.model = widgets.ToggleButtons(options=list(CNN_MODELS.items()), value=model,
                                           description="model", style={**_WIDE, "button_width": "110px"})
        self.batch = _int_slider(batch, *BATCH, "batch size")
        self.threads = _int_slider(threads, *_threads_range(), "threads")
        self.width = widgets.FloatSlider(value=width, min=WIDTH[0], max=WIDTH[1], step=0.25,
                                         description="width multiplier", readout_format=".2f",
                                         continuous_update=False, style=_WIDE,
                                         layout=widgets.Layout(width="320px"))
        self.readout = widgets.HTML()
        self.controls = {"model": self.model, "batch": self.batch, "threads": self.threads,
                         "width": self.width}
        self.output = widgets.interactive_output(self._draw, self.controls)
        super().__init__([self.model, widgets.HBox([self.batch, self.threads, self.width]),
                          self.readout, self.output])

    def _measure(self, model, batch, threads, width):
        return bench.time_cnn(model, batch, threads, width, self.min_run_time)

    def _describe(self, r):
        name = {v: k for k, v in CNN_MODELS.items()}[r["model"]]
        s, base = r["speedup"], r["baseline"]
        size = f"{name} ×{r['width']:.2f}, batch {r['batch']}, {_threads(r['threads'])}"
        readout = (f"{size} — best fp32: {r['fp32_layout']} {plots.fmt_ms(r['ms'][base])} ms · "
                   f"<b>torch.ao int8 {s['torch.ao int8']:.2f}x fp32</b> · "
                   f"qlab int8 {s['qlab int8']:.2f}x fp32 · "
                   f"dynamic int8 (fc only) {s['dynamic int8']:.2f}x fp32 (above 1x is faster){_busy(r)}")
        return readout, f"Static int8, {size}"


def cnn_speed_panel(**defaults) -> CNNSpeedPanel:
    """Lesson 04's panel: drag "batch size", "threads" and "width multiplier"; watch static
    int8 against the best fp32. defaults: model ("resnet" or "mobilenet_v2"), batch (1..64),
    threads (1..CPU count; default torch's), width (0.25..4), min_run_time (s)."""
    return CNNSpeedPanel(**defaults)


# ---------------------------------------------------------------------------------------
# Lesson 03: SmoothQuant's α
# ---------------------------------------------------------------------------------------


class SmoothQuantPanel(Panel):
    """Drag "α" (SmoothQuant's migration strength, 0..1): `evaluate(α)` smooths, quantizes and
    scores the model (the lesson passes it; it returns {"cosine": .., "nn_agreement": ..}). The
    figure shows every α measured so far; the readout the current one, e.g.
    "α = 0.80 — mean cosine 0.9944, NN agreement 86.7 %". Each α is measured once."""

    def __init__(self, evaluate, alpha: float = 0.8, alphas=(0.0, 0.5, 1.0)):
        if not callable(evaluate):
            raise TypeError(f"evaluate must be a function alpha -> quality dict, got {evaluate!r}")
        for a in (alpha, *alphas):
            _check_slider("alpha", a, 0.0, 1.0)
        self.evaluate, self.results = evaluate, {}
        for a in alphas:
            self._result(a)
        self.alpha = widgets.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="α",
                                         readout_format=".2f", continuous_update=False, style=_WIDE,
                                         layout=widgets.Layout(width="320px"))
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"alpha": self.alpha})
        super().__init__([self.alpha, self.readout, self.output])

    def _result(self, alpha: float) -> dict:
        key = round(float(alpha), 4)
        if key not in self.results:
            self.results[key] = self.evaluate(key)
        return self.results[key]

    def figure(self):
        alphas = sorted(self.results)
        quality = {"mean cosine": [self.results[a]["cosine"] for a in alphas],
                   "nearest-neighbour agreement": [self.results[a]["nn_agreement"] for a in alphas]}
        return plots.plot_alpha_curve(alphas, quality, self.alpha.value)

    def _draw(self, alpha):
        r = self._result(alpha)
        self.readout.value = (f"α = {alpha:.2f} — <b>mean cosine {r['cosine']:.4f}</b>, "
                              f"NN agreement {100 * r['nn_agreement']:.1f} %")
        _show(self.figure())


def smoothquant_panel(evaluate, alpha: float = 0.8, alphas=(0.0, 0.5, 1.0)) -> SmoothQuantPanel:
    """Lesson 03's SmoothQuant panel: evaluate(α) -> {"cosine", "nn_agreement"} for α in [0, 1];
    `alphas` are measured up front so the curve has a shape before the slider moves."""
    return SmoothQuantPanel(evaluate, alpha, alphas)


# ---------------------------------------------------------------------------------------
# Lesson 04: the integer stepper, and calibrating on shifted images
# ---------------------------------------------------------------------------------------


def _m_text(m: float, m0: int, shift: int) -> str:
    return f"M = {m:.3g} = {m0:,} · 2<sup>−31</sup> · 2<sup>{-shift}</sup>".replace("<sup>-", "<sup>−")


class StepperPanel(Panel):
    """One int8 layer of a converted model on one image, step by step (static_ptq.step_layer).

    Controls: "layer" (Dropdown of the model's int8 layers, in call order) and "image"
    (IntSlider, an index into `images`). Readout, e.g. "layer1.0.conv1 (conv 3×3 + ReLU), image 7 —
    int32 accumulator in [-1234, 5678] · M = 0.00123 = 1,234,567,890 · 2^−31 · 2^−9 (channel 0) ·
    output codes equal to torch.ao's: 100.00 % (max 0 steps); int32 bias rule 99.12 % (max 1)".
    """

    def __init__(self, model, images: torch.Tensor, layer: str | None = None, image: int = 0):
        from .static_ptq import int8_layers

        names = list(int8_layers(model))
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
            raise ValueError("images must be a non-empty float batch (N, C, H, W), e.g. the test images")
        layer = names[0] if layer is None else layer
        if layer not in names:
            raise ValueError(f"layer {layer!r} is not an int8 layer of this model; "
                             f"they are: {', '.join(names)}")
        _check_slider("image", image, 0, len(images) - 1, kind=numbers.Integral)
        self.model, self.images = model, images
        self.layer = widgets.Dropdown(options=names, value=layer, description="layer", style=_WIDE,
                                      layout=widgets.Layout(width="320px"))
        self.image = _int_slider(image, 0, len(images) - 1, "image")
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"layer": self.layer, "image": self.image})
        super().__init__([widgets.HBox([self.layer, self.image]), self.readout, self.output])

    def _step(self, layer: str, image: int) -> dict:
        from .static_ptq import step_layer

        key = (layer, image)
        if getattr(self, "_last", (None,))[0] != key:
            self._last = (key, step_layer(self.model, layer, self.images[image]))
        return self._last[1]

    def figure(self):
        return plots.plot_stepper(self._step(self.layer.value, self.image.value))

    def _draw(self, layer, image):
        r = self._step(layer, image)
        same, int32 = r["steps"]["float"], r["steps"]["int32"]
        m = _m_text(float(r["multiplier"].flatten()[0]), r["m0"][0], r["shift"][0])
        self.readout.value = (
            f"{layer} ({r['kind']}), image {image} — int32 accumulator in "
            f"[{r['acc_min']}, {r['acc_max']}] · {m} (channel 0) · <b>output codes equal to torch.ao's: "
            f"{100 * (1 - same['differ']):.2f} %</b> (max {same['max']} steps); int32 bias rule "
            f"{100 * (1 - int32['differ']):.2f} % (max {int32['max']})")
        _show(self.figure())


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
    """Calibrate static int8 on shifted images, test on the real ones (static_ptq.calibrate_shifted).

    Controls: "shift" (ToggleButtons brightness / contrast / noise) and "shift amount" (its
    range is the shift's, static_ptq.SHIFTS). Readout, e.g. "brightness a = 1.00 — int8
    accuracy ResNet 23.1 %, MobileNetV2 55.3 % (calibrated on unshifted images: 100.0 %,
    99.2 %)". Every accuracy is measured once (about 0.1 s) and kept.
    """

    def __init__(self, float_models: dict, calib, x: torch.Tensor, y: torch.Tensor,
                 shift: str = "brightness", amount: float = 0.5, max_images: int = 128, qconfig=None):
        from . import static_ptq

        if not isinstance(float_models, dict) or not float_models:
            raise ValueError("float_models must be a non-empty dict: name -> fp32 model")
        _check_option("shift", shift, {k: k for k in SHIFT_SLIDERS})
        static_ptq._check_shift(shift, amount)
        static_ptq._check_xy(x, y)
        self.sp, self.models, self.calib, self.x, self.y = static_ptq, float_models, calib, x, y
        self.max_images, self.results = max_images, {}
        self.qconfig = qlab.minmax_qconfig if qconfig is None else qconfig
        images, _ = static_ptq._images_labels(calib)
        self.images = static_ptq._check_calib(images)
        self.baseline = {name: static_ptq.calibrated_accuracy(m, calib, x, y, self.qconfig, max_images)
                         for name, m in float_models.items()}
        self.shift = widgets.ToggleButtons(options=list(SHIFT_SLIDERS), value=shift, description="shift",
                                           style={**_WIDE, "button_width": "90px"})
        lo, hi = static_ptq.SHIFTS[shift]
        self.amount = widgets.FloatSlider(value=amount, min=lo, max=hi, step=SHIFT_SLIDERS[shift][2],
                                          description="shift amount", readout_format=".2f",
                                          continuous_update=False, style=_WIDE,
                                          layout=widgets.Layout(width="360px"))
        self.shift.observe(self._new_shift, names="value")  # before interactive_output's observer
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"shift": self.shift, "amount": self.amount})
        super().__init__([self.shift, self.amount, self.readout, self.output])

    def _new_shift(self, change):
        """A new shift: its range on the slider, and the slider at "no shift"."""
        lo, hi = self.sp.SHIFTS[change["new"]]
        self.amount.min, self.amount.max = min(lo, self.amount.min), max(hi, self.amount.max)
        self.amount.value = self.sp.NO_SHIFT[change["new"]]
        self.amount.min, self.amount.max, self.amount.step = lo, hi, SHIFT_SLIDERS[change["new"]][2]

    def _accuracy(self, name: str, shift: str, amount: float) -> float:
        key = (name, shift, round(float(amount), 4))
        if key not in self.results:
            self.results[key] = self.sp.calibrate_shifted(self.models[name], self.calib, self.x, self.y,
                                                          shift, key[2], self.qconfig, self.max_images)
        return self.results[key]

    def figure(self):
        shift, amount = self.shift.value, float(self.amount.value)
        label, grid, _ = SHIFT_SLIDERS[shift]
        amounts = sorted({*grid, round(amount, 4)})
        curves = {name: [self._accuracy(name, shift, a) for a in amounts] for name in self.models}
        shifted = self.sp.shift_images(self.images, shift, amount)[: self.max_images]
        calib_range = (float(shifted.min()), float(shifted.max()))
        return plots.plot_shift(amounts, curves, amount, f"shift amount a   ({label})", self.x, shifted,
                                calib_range)

    def _draw(self, shift, amount):
        lo, hi = self.sp.SHIFTS[shift]
        if not lo <= amount <= hi:
            return  # the slider is moving to the new shift's range; the next call draws
        now = ", ".join(f"{n} {100 * self._accuracy(n, shift, amount):.1f} %" for n in self.models)
        base = ", ".join(f"{100 * a:.1f} %" for a in self.baseline.values())
        self.readout.value = (f"{shift} a = {amount:.2f} — <b>int8 accuracy {now}</b> "
                              f"(calibrated on unshifted images: {base})")
        _show(self.figure())


def shift_panel(float_models: dict, calib, x: torch.Tensor, y: torch.Tensor, shift: str = "brightness",
                amount: float = 0.5, max_images: int = 128, qconfig=None) -> ShiftPanel:
    """Lesson 04's panel: drag "shift amount"; each fp32 model in float_models (name -> model) is
    calibrated on the shifted calib images (qconfig: default qlab.minmax_qconfig) and tested on
    the unshifted (x, y)."""
    return ShiftPanel(float_models, calib, x, y, shift, amount, max_images, qconfig)


# ---------------------------------------------------------------------------------------
# Lesson 05: the straight-through estimator, and QAT against PTQ per bit width
# ---------------------------------------------------------------------------------------

STE_BITS, STE_RANGE = (2, 8), (0.25, 2.0)


class STEPanel(Panel):
    """fake_quantize's forward staircase and its autograd gradient (qlab.lab.qat.ste_curves).

    Controls: "bits" (2..8) and "range max" (the grid covers [-range max, range max]).
    Readout, e.g. "3 bits: 8 levels, step 0.286 — the gradient is 1 for x in [-1.14, 0.857],
    0 outside (the true derivative of the staircase: 0 wherever it exists)".
    """

    def __init__(self, bits: int = 3, range_max: float = 1.0):
        _check_slider("bits", bits, *STE_BITS, kind=numbers.Integral)
        _check_slider("range_max", range_max, *STE_RANGE)
        self.bits = _int_slider(bits, *STE_BITS, "bits")
        self.range_max = widgets.FloatSlider(value=range_max, min=STE_RANGE[0], max=STE_RANGE[1], step=0.25,
                                             description="range max", continuous_update=False, style=_WIDE,
                                             layout=widgets.Layout(width="300px"))
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"bits": self.bits, "range_max": self.range_max})
        super().__init__([widgets.HBox([self.bits, self.range_max]), self.readout, self.output])

    def _curves(self, bits, range_max):
        from .qat import ste_curves

        return ste_curves(bits, -range_max, range_max, pad=0.5 * range_max)

    def figure(self):
        return plots.plot_ste(self._curves(self.bits.value, self.range_max.value))

    def _draw(self, bits, range_max):
        c = self._curves(bits, range_max)
        lo, hi = c["inside"]
        self.readout.value = (f"{bits} bits: {c['levels']} levels, <b>step {c['step']:.4g}</b> — the "
                              f"gradient is 1 for x in [{lo:.3g}, {hi:.3g}] (and half a step beyond: it "
                              "rounds in), "
                              "0 outside; the true derivative of the staircase is 0 wherever it exists")
        _show(plots.plot_ste(c))


def ste_panel(bits: int = 3, range_max: float = 1.0) -> STEPanel:
    """Lesson 05's panel: drag "bits" and "range max"; see the staircase and the STE gradient."""
    return STEPanel(bits, range_max)


class QATCurvePanel(Panel):
    """QAT against PTQ for one weight bit width (qlab.lab.qat's recorded runs; PTQ measured here).

    Controls: "model" (ToggleButtons) and "weight bits" (2..8: 8, 6, 4, 3, 2 are recorded).
    Readout, e.g. "MobileNetV2, 4-bit weights, 8-bit activations — PTQ 91.4 %, QAT 99.2 %
    (int8 model loaded and measured: 99.2 %)".
    """

    BITS = (2, 3, 4, 6, 8)

    def __init__(self, model: str = "mobilenet_v2", w_bits: int = 4):
        from . import qat

        _check_option("model", model, CNN_MODELS)
        if w_bits not in self.BITS:
            raise ValueError(f"w_bits must be one of the recorded widths {self.BITS}, got {w_bits!r}")
        self.qat, self.runs, self.ptq, self.measured = qat, qat.recorded_runs(), {}, {}
        self.model = widgets.ToggleButtons(options=list(CNN_MODELS.items()), value=model, description="model",
                                           style={**_WIDE, "button_width": "110px"})
        self.w_bits = widgets.SelectionSlider(options=list(self.BITS), value=w_bits,
                                              description="weight bits",
                                              continuous_update=False, style=_WIDE,
                                              layout=widgets.Layout(width="300px"))
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"model": self.model, "w_bits": self.w_bits})
        super().__init__([self.model, self.w_bits, self.readout, self.output])

    def _numbers(self, model, w_bits):
        key = (model, w_bits)
        if key not in self.ptq:
            self.ptq[key] = self.qat.ptq_accuracy(model, w_bits, 8)
            int8 = self.qat.load_int8(model, w_bits, 8)
            from .data import digits_tensors

            x, y = digits_tensors("test")
            with torch.no_grad():
                self.measured[key] = float((int8(x).argmax(1) == y).float().mean())
        return self.runs[self.qat.run_name(model, w_bits, 8)], self.ptq[key], self.measured[key]

    def figure(self):
        model, w_bits = self.model.value, self.w_bits.value
        run, ptq, _ = self._numbers(model, w_bits)
        label = f"{w_bits}-bit weights"
        name = {v: k for k, v in CNN_MODELS.items()}[model]
        return plots.plot_qat_curves({label: (run["steps"], run["accuracy"])}, {label: ptq}, run["frozen"],
                                     title=f"{name}: QAT with {label} (recorded run) against PTQ")

    def _draw(self, model, w_bits):
        run, ptq, measured = self._numbers(model, w_bits)
        name = {v: k for k, v in CNN_MODELS.items()}[model]
        self.readout.value = (f"{name}, {w_bits}-bit weights, 8-bit activations — PTQ {100 * ptq:.1f} %, "
                              f"<b>QAT {100 * measured:.1f} %</b> (the recorded run's int8 model, loaded and "
                              "measured here; fake-quant at the end of training "
                              f"{100 * run['fake_accuracy']:.1f} %)")
        _show(self.figure())


def qat_curve_panel(model: str = "mobilenet_v2", w_bits: int = 4) -> QATCurvePanel:
    """Lesson 05's panel: pick a model and a weight bit width; see PTQ's accuracy and QAT's
    training curve (recorded by `make checkpoints`) and its int8 model's accuracy (measured)."""
    return QATCurvePanel(model, w_bits)


# ---------------------------------------------------------------------------------------
# Lesson 06: which method the workflow chooses, as the tolerance moves
# ---------------------------------------------------------------------------------------

TOLERANCE = (0.0, 10.0)  # % of fp32's quality


class WorkflowPanel(Panel):
    """The five-step workflow (qlab.lab.workflow.decide) over measured rows, for every model at once.

    Controls: "tolerance (% of fp32)" (0..10, step 0.25: the loss each model may take, as a share
    of its fp32 quality) and "model" (whose decision flow is drawn). Readout, e.g. "tolerance 0.50 %
    — int8 deployed for 4 of 4 models: resnet static (1.95x), ... ". No timing happens here: the
    rows were measured once, by workflow.method_rows.
    """

    def __init__(self, rows_by_model: dict, tolerance: float = 0.0, model: str | None = None):
        if not isinstance(rows_by_model, dict) or not rows_by_model:
            raise ValueError("rows_by_model must be a non-empty dict: model -> workflow.method_rows(model)")
        _check_slider("tolerance", tolerance, *TOLERANCE)
        model = next(iter(rows_by_model)) if model is None else model
        if model not in rows_by_model:
            raise ValueError(f"model must be one of {list(rows_by_model)}, got {model!r}")
        self.rows = rows_by_model
        self.tolerance = widgets.FloatSlider(value=tolerance, min=TOLERANCE[0], max=TOLERANCE[1], step=0.25,
                                             description="tolerance (% of fp32)", readout_format=".2f",
                                             continuous_update=False, style=_WIDE,
                                             layout=widgets.Layout(width="420px"))
        self.model = widgets.Dropdown(options=list(rows_by_model), value=model, description="model",
                                      style=_WIDE)
        self.readout = widgets.HTML()
        self.trail = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, {"tolerance": self.tolerance,
                                                              "model": self.model})
        super().__init__([widgets.HBox([self.tolerance, self.model]), self.readout, self.output, self.trail])

    def decisions(self, tolerance: float) -> dict:
        from .workflow import decide

        out = {}
        for name, rows in self.rows.items():
            fp32 = next(r for r in rows if r["method"] == "fp32")
            out[name] = decide(rows, tolerance / 100 * abs(fp32["quality"]))
        return out

    def _title(self, d: dict, model: str, tolerance: float) -> str:
        chosen = d["chosen"]["method"] if d["chosen"] else "keep fp32"
        return f"{model} at a tolerance of {tolerance:.2f} % of fp32: {chosen}"

    def figure(self):
        d = self.decisions(self.tolerance.value)[self.model.value]
        return plots.plot_decision_flow(d, title=self._title(d, self.model.value, self.tolerance.value))

    def _draw(self, tolerance, model):
        d = self.decisions(tolerance)
        deployed = [n for n, v in d.items() if v["chosen"]]
        parts = [f"{n} {v['chosen']['method']} ({v['chosen']['speedup']:.2f}x)" if v["chosen"]
                 else f"{n} fp32" for n, v in d.items()]
        self.readout.value = (f"tolerance {tolerance:.2f} % — <b>int8 deployed for {len(deployed)} of "
                              f"{len(d)} models</b>: " + " · ".join(parts))
        self.trail.value = "<pre>" + "\n".join(d[model]["trail"]) + "</pre>"
        _show(plots.plot_decision_flow(d[model], title=self._title(d[model], model, tolerance)))


def workflow_panel(rows_by_model: dict, tolerance: float = 0.0, model: str | None = None) -> WorkflowPanel:
    """Lesson 06's panel: drag the tolerance; see which method the five-step workflow deploys for
    each model, and the path it took for one."""
    return WorkflowPanel(rows_by_model, tolerance, model)


# ---------------------------------------------------------------------------------------
# Lesson 07: the classic and the modern path, eager and compiled
# ---------------------------------------------------------------------------------------


class PathsPanel(SpeedPanel):
    """Choose a model, a method (fp32, classic torch.ao int8, modern torchao / PT2E int8) and eager or
    compiled; every path of that model is timed now, interleaved (the chosen one outlined), and the
    readout gives the chosen path's latency, its ratio to the best fp32 path measured in the same
    draw, and its quality (measured once by the lesson: accuracy, or MiniLM's mean cosine).

    choices: qlab.lab.modern.panel_choices(...). Readout, e.g. "ResNet · modern int8 (torchao / PT2E)
    · compiled: latency 1.40 ms per batch of 64 images · 1.76x the best fp32 (fp32 compiled) ·
    accuracy 100.00 %".
    """

    def __init__(self, choices: dict, model: str | None = None, method: str = "modern int8 (torchao / PT2E)",
                 mode: str = "compiled", threads: int = 2, min_run_time: float = 0.3):
        from .modern import METHODS, MODES

        if not isinstance(choices, dict) or not choices:
            raise ValueError("choices must be a non-empty dict: qlab.lab.modern.panel_choices(...)")
        model = next(iter(choices)) if model is None else model
        _check_option("model", model, {m: m for m in choices})
        _check_option("method", method, {m: m for m in METHODS})
        _check_option("mode", mode, {m: m for m in MODES})
        _check_slider("threads", threads, *_threads_range(), kind=numbers.Integral)
        _check_run_time(min_run_time)
        self.choices, self.threads, self.min_run_time = choices, threads, min_run_time
        self.controls = {
            "model": widgets.Dropdown(options=list(choices), value=model, description="model", style=_WIDE),
            "method": widgets.Dropdown(options=list(METHODS), value=method, description="method", style=_WIDE,
                                       layout=widgets.Layout(width="330px")),
            "mode": widgets.ToggleButtons(options=list(MODES), value=mode, description="run", style=_WIDE),
            "threads": _int_slider(threads, *_threads_range(), "threads"),
        }
        self.readout = widgets.HTML()
        self.output = widgets.interactive_output(self._draw, self.controls)
        top = widgets.HBox([self.controls["model"], self.controls["method"]])
        super().__init__([top, widgets.HBox([self.controls["mode"], self.controls["threads"]]), self.readout,
                          self.output])

    def _measure(self, model: str, method: str, mode: str, threads: int) -> dict:
        c = self.choices[model]
        with bench.settings(threads):
            ms, spread = bench._timed(c["runs"], self.min_run_time)
        fp32 = [p for p in ms if p.startswith("fp32")]
        best = min(fp32, key=ms.get)
        path = c["paths"].get((method, mode))
        quality = {p: _quality(c, p) for p in ms}
        return {"ms": ms, "speedup": bench.speedups(ms, best), "baseline": best, "marked": path,
                "labels": quality, "spread": spread, "model": model, "method": method, "mode": mode,
                "threads": threads,
                "note": c["notes"].get((method, mode), "not a path of this model")}

    def _describe(self, r: dict) -> tuple[str, str]:
        c = self.choices[r["model"]]
        head = f"<b>{r['model']} · {r['method']} · {r['mode']}</b>"
        path = r["marked"]
        if path is None:
            title = f"{r['model']}: {r['method']}, {r['mode']}: not measured"
            return f"{head}: {r['note']}" + _busy(r), title
        readout = (f"{head}: latency {r['ms'][path]:.2f} ms per {c['unit']} · {r['speedup'][path]:.2f}x the "
                   f"best fp32 ({r['baseline']}, measured now) · {_quality(c, path)}"
                   f" · {_threads(r['threads'])}" + _busy(r))
        return readout, f"{r['model']}: every path timed now (the selected one outlined)"


def _quality(choice: dict, path: str) -> str:
    q = choice["quality"][path]
    if choice["quality_name"] == "accuracy":
        return f"accuracy {100 * q:.2f} %"
    return f"{choice['quality_name']} {q:.4f}"


def paths_panel(choices: dict, **defaults) -> PathsPanel:
    """Lesson 07's panel: model x method x eager / compiled, timed live (see PathsPanel)."""
    return PathsPanel(choices, **defaults)
