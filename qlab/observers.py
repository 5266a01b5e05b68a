"""Observers watch tensors during calibration and turn what they saw into QParams.

One interface for all of them:

    obs = MinMaxObserver(qdtype=qlab.uint8, symmetric=False, axis=None)
    obs(x)                   # records x, returns x unchanged
    obs.calibrated_range()   # the (min, max) it chose from what it saw
    obs.qparams()            # QParams from that range
    obs.reset()              # forget everything

State lives in buffers, so an observer travels in a model's state_dict; the settings the
state depends on (class, axis, bins) travel with it and are checked when it is loaded.
axis=None is per-tensor; axis=k keeps one range per index along dimension k.
Everything is computed in float32, so calibration data must fit float32.

They differ only in how they choose the range:

    MinMaxObserver               [min, max] of everything seen                      (axis ok)
    MovingAverageMinMaxObserver  moving average of each batch's min and max         (axis ok)
    HistogramObserver            torch.ao's greedy L2-error search on a histogram   (per-tensor)
    PercentileObserver           the (100-p)th and p-th percentiles                 (axis ok)
    MSEObserver                  the shrunken range with the least quantization MSE (axis ok)
    EntropyObserver              TensorRT's minimum-KL threshold                    (per-tensor)
"""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from .ops import fake_quantize
from .qparams import EPS, FLOAT32_MAX, QParams, check_eps, grid, qparams_from_range
from .qtypes import QDType, is_int, round_to_float32, uint8


class Observer(nn.Module):
    """Base class: records the running min and max; subclasses choose the range.

    Subclasses override `_update(x_min, x_max, x)` (what to remember of a batch) and/or
    `_range()` (the (min, max) to quantize with, read by `calibrated_range()`).
    """

    def __init__(
        self,
        qdtype: QDType = uint8,
        symmetric: bool = False,
        axis: int | None = None,
        reduce_range: bool = False,
        eps: float = EPS,
    ):
        super().__init__()
        if not isinstance(qdtype, QDType):
            raise TypeError(f"qdtype must be a qlab QDType such as qlab.uint8, got {qdtype!r}")
        if axis is not None and not is_int(axis):
            raise TypeError(f"axis must be None (per-tensor) or an int, got {axis!r}")
        self.qdtype, self.symmetric, self.axis = qdtype, symmetric, None if axis is None else int(axis)
        self.reduce_range, self.eps = reduce_range, check_eps(eps)
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    def extra_repr(self) -> str:
        """The settings, then the range seen so far, e.g.
        'qdtype=uint8[0..255], reduce_range=True (codes 0..127), min=-1, max=2'."""
        settings = [f"qdtype={self.qdtype!r}"] + [f"{k}={v}" for k, v in (
            ("symmetric", self.symmetric), ("axis", self.axis)) if v not in (False, None)]
        if self.reduce_range:
            grid = self.qdtype.reduced()
            settings.append(f"reduce_range=True (codes {grid.qmin}..{grid.qmax})")
        if self.has_data() and self.min_val.dim() == 0:
            settings.append(f"min={self.min_val.item():.4g}, max={self.max_val.item():.4g}")
        elif self.has_data():
            settings.append(f"{self.min_val.numel()} channels seen")
        return ", ".join(settings)

    # -- what every observer does with a batch ---------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_min, x_max = self._batch_range(x)
        self._update(x_min, x_max, x.detach())
        return x

    def _batch_range(self, x: torch.Tensor):
        """The batch's (min, max): 0-d per-tensor, 1-d per-channel along self.axis."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{type(self).__name__} observes float tensors, got {got}")
        if x.numel() == 0:
            raise ValueError(f"{type(self).__name__} got an empty tensor; it needs values to observe")
        x32 = x.detach().to(torch.float32)
        if not torch.isfinite(x32).all():
            if not torch.isfinite(x).all():
                raise ValueError(f"{type(self).__name__} got NaN or Inf; calibration data must be finite")
            raise ValueError(
                f"{type(self).__name__} got {x.dtype} values up to |x| = {x.abs().max().item():.4g}, "
                f"beyond float32 (|x| <= {FLOAT32_MAX:.4g}); observers compute in float32, so "
                "calibration data must fit it"
            )
        x = x32
        if self.axis is None:
            return torch.aminmax(x)
        if not -x.dim() <= self.axis < x.dim():
            raise ValueError(
                f"axis={self.axis} does not exist for a tensor of shape {tuple(x.shape)}; "
                f"allowed axes are {-x.dim()}..{x.dim() - 1}"
            )
        flat = x.movedim(self.axis, 0).flatten(start_dim=1)
        return torch.aminmax(flat, dim=1)

    def _check_channels(self, x_min: torch.Tensor) -> None:
        if self.has_data() and x_min.shape != self.min_val.shape:
            raise ValueError(
                f"{type(self).__name__} saw {self.min_val.numel()} channels before and "
                f"{x_min.numel()} now; every batch must have the same channels along axis {self.axis}"
            )

    def _update(self, x_min: torch.Tensor, x_max: torch.Tensor, x: torch.Tensor) -> None:
        self._check_channels(x_min)
        self.min_val = torch.minimum(x_min, self.min_val) if self.has_data() else x_min.clone()
        self.max_val = torch.maximum(x_max, self.max_val) if self.has_data() else x_max.clone()

    # -- what every observer gives back ------------------------------------------------
    def has_data(self) -> bool:
        return bool(torch.isfinite(self.min_val).all()) and self.min_val.numel() > 0

    def _check_has_data(self) -> None:
        if not self.has_data():
            raise ValueError(
                f"{type(self).__name__} has seen no data yet; call it on calibration "
                "batches before asking for qparams() or calibrated_range()"
            )

    def calibrated_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) this observer chose from everything it saw: the range qparams() maps onto
        the grid. 0-d tensors per-tensor, 1-d (one per channel) with axis."""
        self._check_has_data()
        return self._range()

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.min_val, self.max_val

    def qparams(self) -> QParams:
        """QParams of calibrated_range() (qlab.qparams_from_range with this observer's settings)."""
        lo, hi = self.calibrated_range()
        return qparams_from_range(
            lo, hi, self.qdtype, self.symmetric, self.reduce_range,
            axis=self.axis, eps=self.eps,
        )  # fmt: skip

    def reset(self) -> None:
        self.min_val = torch.tensor(float("inf"))
        self.max_val = torch.tensor(float("-inf"))

    # -- state_dict: the recorded state, and the settings it only makes sense with -----------
    def _layout(self) -> dict:
        """The settings the recorded state depends on; saved with it as extra state."""
        return {"observer": type(self).__name__, "axis": self.axis}

    def _state_shapes(self, channels: tuple) -> dict:
        """Buffer shapes for `channels` = () (per-tensor, or nothing seen yet) or (C,)."""
        return {"min_val": channels, "max_val": channels}

    def get_extra_state(self) -> dict:
        return self._layout()

    def set_extra_state(self, state) -> None:
        """Nothing to restore: the settings come from the constructor, and _load_from_state_dict
        has already checked that the saved ones are the same."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Check the saved state fits this observer (same class, axis and bins; buffer shapes
        that go with them), then load it. Buffers take the saved shapes: a per-channel
        observer's grow from 0-d to one value per channel when data arrives."""
        here = self._layout()
        saved = state_dict.get(prefix + "_extra_state", here)
        where = f"{prefix.rstrip('.')}: " if prefix else ""
        if saved != here:
            raise ValueError(
                f"{where}cannot load the state of {_describe(saved)} into {_describe(here)}: an "
                "observer's recorded state only loads into an observer with the same class, axis and bins"
            )
        buffers = {n: state_dict[prefix + n] for n in self._buffers if prefix + n in state_dict}
        self._check_state_shapes({n: tuple(t.shape) for n, t in buffers.items()}, where)
        for name, t in buffers.items():
            setattr(self, name, torch.empty_like(t))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check_state_shapes(self, shapes: dict, where: str = "") -> None:
        """A clear error at load time, instead of a reshape error at qparams() later."""
        channels = shapes.get("min_val", ())
        channels_ok = channels == () or (self.axis is not None and len(channels) == 1)
        expected = self._state_shapes(channels if channels_ok else ())
        if not channels_ok or any(shapes[n] != expected[n] for n in shapes if n in expected):
            kind = "0-d" if self.axis is None else "1-d, one value per channel (0-d before any data)"
            raise ValueError(
                f"{where}cannot load buffers of shapes {shapes} into {_describe(self._layout())}: its "
                f"min_val and max_val are {kind}, and its buffers must have the shapes {expected}"
            )


def _describe(layout) -> str:
    """HistogramObserver(axis=None, bins=2048) from a saved layout dict."""
    if not isinstance(layout, dict):
        return f"an observer whose saved settings are {layout!r}"
    args = ", ".join(f"{k}={v!r}" for k, v in layout.items() if k != "observer")
    return f"{layout.get('observer', 'an observer')}({args})"


class MinMaxObserver(Observer):
    """Range = [min over all batches, max over all batches]. Exact, but one outlier stretches it."""


class MovingAverageMinMaxObserver(Observer):
    """Range = exponential moving average of each batch's min and max:

    min <- min + c * (batch_min - min)        (c = averaging_constant; the first batch sets min)
    """

    def __init__(self, averaging_constant: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < averaging_constant <= 1.0:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = averaging_constant

    def _update(self, x_min, x_max, x):
        if not self.has_data():
            return super()._update(x_min, x_max, x)
        self._check_channels(x_min)
        c = self.averaging_constant
        self.min_val = _moving_average(self.min_val, x_min, c)
        self.max_val = _moving_average(self.max_val, x_max, c)

    def _range(self):
        # Averaged separately, min can pass max by a rounding error when a batch is constant.
        return torch.minimum(self.min_val, self.max_val), self.max_val


def _moving_average(old: torch.Tensor, new: torch.Tensor, c: float) -> torch.Tensor:
    """old + c * (new - old) in float32, as torch.ao. Where new - old overflows float32
    (old = -3e38, new = 3e38) it is computed in float64 instead: the result lies between old
    and new, so it fits float32."""
    out = old + c * (new - old)
    wide = (old.double() + c * (new.double() - old.double())).to(torch.float32)
    return torch.where(torch.isfinite(out), out, wide)


# =====================================================================================
# Histogram-based observers: they keep a histogram of everything they saw, then choose
# the range from it. The histogram is kept as torch.ao's HistogramObserver keeps it.
# =====================================================================================


def _rebin(hist, old_min, old_max, new_min, new_max, upsample_rate):
    """Move a histogram over [old_min, old_max] onto the same number of bins over the
    wider [new_min, new_max] (torch.ao's _upscale_histogram).

    Each old bin is cut into `upsample_rate` equal pieces; each piece carries
    count / upsample_rate and lands in the new bin that holds the piece's centre.
    """
    bins = hist.numel()
    pieces = hist.repeat_interleave(upsample_rate) / upsample_rate
    piece_width = (old_max - old_min) / (bins * upsample_rate)
    centres = torch.linspace(old_min, old_max, bins * upsample_rate + 1)[:-1] + 0.5 * piece_width
    new_edges = torch.linspace(new_min, new_max, bins + 1)
    new_bin = torch.bucketize(centres, new_edges, right=True) - 1
    new_bin = new_bin.clamp(0, bins - 1)  # float round-off can push a centre past an edge
    return torch.bincount(new_bin, weights=pieces, minlength=bins)


def _unit(lo: torch.Tensor, hi: torch.Tensor) -> float:
    """The power of two a histogram's values are divided by so that |value| < 2**32: 1.0 for
    everyday data.

    Near float32's limit (|x| up to 3.4e38), (x - min) * bins inside torch.histc, squared
    errors and cubed widths overflow float32. Divided by a power of two they do not, and the
    division is exact, so the same bins and the same candidates are chosen.
    """
    amax = max(abs(lo.item()), abs(hi.item()))
    return 2.0 ** max(0, math.frexp(amax)[1] - 32)


class _HistogramBase(Observer):
    """Keeps a `bins`-bin histogram (one per channel with axis) over [min, max] seen so far.

    First batch: histogram over its own [min, max]. Later batches: the range grows to the
    union; the new batch is binned over it and the old histogram is re-binned onto it
    (`_rebin`). Subclasses choose the range from the histogram in `_range()`, one channel
    at a time (`_per_row`). Both work on values divided by `_unit` (exact; 1 for everyday data).
    """

    per_channel_ok = True

    def __init__(self, bins: int = 2048, upsample_rate: int = 16, **kwargs):
        super().__init__(**kwargs)
        if self.axis is not None and not self.per_channel_ok:
            raise ValueError(
                f"{type(self).__name__} is per-tensor only (axis=None), got axis={self.axis}; "
                "for per-channel ranges use MinMaxObserver, PercentileObserver or MSEObserver"
            )
        if not is_int(bins) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, got {bins!r}")
        if not is_int(upsample_rate) or upsample_rate < 1:
            raise ValueError(f"upsample_rate must be an int >= 1, got {upsample_rate!r}")
        self.bins, self.upsample_rate = int(bins), int(upsample_rate)
        self.register_buffer("histogram", torch.zeros(bins))

    # What is histogrammed, and over which bounds (EntropyObserver histograms |x|).
    def _values(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.min_val, self.max_val

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        """t as (channels, values): one row per tensor, or per channel along axis."""
        if self.axis is None:
            return t.reshape(1, -1)
        return t.movedim(self.axis, 0).flatten(start_dim=1)

    def _update(self, x_min, x_max, x):
        first = not self.has_data()
        old_min, old_max = (None, None) if first else [b.reshape(-1) for b in self._bounds()]
        old_hist = self.histogram.reshape(-1, self.bins)
        super()._update(x_min, x_max, x)
        new_min, new_max = [b.reshape(-1) for b in self._bounds()]
        rows = self._rows(self._values(x.to(torch.float32)))
        hist = torch.empty(rows.shape[0], self.bins)
        for c, row in enumerate(rows):
            u = _unit(new_min[c], new_max[c])
            lo, hi = new_min[c] / u, new_max[c] / u
            batch = torch.histc(row / u, self.bins, min=lo.item(), max=hi.item())
            if first:
                hist[c] = batch
            elif old_min[c] == new_min[c] and old_max[c] == new_max[c]:
                hist[c] = old_hist[c] + batch
            elif old_min[c] == old_max[c]:  # everything so far was one value
                one = torch.histc(old_min[c] / u, self.bins, min=lo.item(), max=hi.item())
                hist[c] = one * old_hist[c].sum() + batch
            else:
                moved = _rebin(old_hist[c], old_min[c] / u, old_max[c] / u, lo, hi, self.upsample_rate)
                hist[c] = (batch + moved).to(torch.float32)
        self.histogram = hist[0] if self.axis is None else hist

    def reset(self) -> None:
        super().reset()
        self.histogram = torch.zeros(self.bins)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bins={self.bins}"

    def _layout(self) -> dict:
        return {**super()._layout(), "bins": self.bins}

    def _state_shapes(self, channels: tuple) -> dict:
        return {**super()._state_shapes(channels), "histogram": (*channels, self.bins)}

    def _per_row(self, choose) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply choose(hist_row, lo, hi) -> (min, max) to every channel, on values divided by
        `_unit`; stack the results, multiplied back."""
        lo, hi = [b.reshape(-1) for b in self._bounds()]
        hist = self.histogram.reshape(-1, self.bins)
        new_min, new_max = [], []
        for c in range(hist.shape[0]):
            u = _unit(lo[c], hi[c])
            a, b = choose(hist[c], lo[c] / u, hi[c] / u)
            new_min.append(torch.as_tensor(a, dtype=torch.float32) * u)
            new_max.append(torch.as_tensor(b, dtype=torch.float32) * u)
        new_min, new_max = torch.stack(new_min), torch.stack(new_max)
        if self.axis is None:
            return new_min[0], new_max[0]
        return new_min, new_max


def _cube_integral(a, b, density):
    """density * integral_a^b x^2 dx = density * (b^3 - a^3) / 3: the squared error of values
    spread evenly (at `density`) between a and b, measured from a reconstruction point at 0."""
    return density * ((b * b * b - a * a * a) / 3)


def _l2_error(hist, min_val, max_val, start_bin: int, end_bin: int, dst_nbins: int) -> float:
    """Squared quantization error of the histogram if [start_bin, end_bin] is the range
    (torch.ao's _compute_quantization_error).

    The range is cut into dst_nbins equal cells; every value is replaced by its cell's
    centre; values outside the range go to the first or last cell. Each histogram bin is
    taken as values spread evenly over the bin, so its error is an integral of x^2.
    """
    bins = hist.numel()
    bin_width = (max_val.item() - min_val.item()) / bins
    cell_width = bin_width * (end_bin - start_bin + 1) / dst_nbins
    if cell_width == 0.0:
        return 0.0
    # each source bin's edges, measured from the start of the range
    begin = (torch.arange(bins) - start_bin) * bin_width
    end = begin + bin_width
    first_cell = torch.clamp(torch.div(begin, cell_width, rounding_mode="floor"), 0, dst_nbins - 1)
    last_cell = torch.clamp(torch.div(end, cell_width, rounding_mode="floor"), 0, dst_nbins - 1)
    density = hist / bin_width
    half = cell_width / 2
    # from the bin's begin to the end of its first cell ...
    error = _cube_integral(begin - (first_cell + 0.5) * cell_width, torch.ones(bins) * half, density)
    # ... the whole cells in between (-1 cancels the double count when first == last) ...
    error = error + (last_cell - first_cell - 1) * _cube_integral(
        torch.tensor(-half), torch.tensor(half), density
    )
    # ... and from the start of its last cell to the bin's end.
    last_centre = last_cell * cell_width + half
    error = error + _cube_integral(torch.tensor(-half), end - last_centre, density)
    return error.sum().item()


class HistogramObserver(_HistogramBase):
    """Range = the [start, end] of histogram bins with the smallest L2 quantization error,
    found by PyTorch's greedy search (torch.ao's HistogramObserver; from caffe2's
    NormMinimization). Per-tensor only, as torch.ao's.

    The search shrinks the range from [all bins] inwards, one quantile step at a time:

        alpha, beta = 0, 1                  (the range holds the alpha..beta quantiles)
        repeat while alpha < beta:
            step alpha up or beta down by 1e-5, whichever side moves its bin further
            (that clips the side whose tail is longer and thinner)
            if the bins did not move: continue
            error = _l2_error(candidate range)
            if error went up: stop          (greedy: the first rise ends the search)
            keep the candidate              (the first move is always kept: nothing to compare)

        min = min_val + start * bin_width,  max = min_val + (end + 1) * bin_width

    The error assumes 2**bits cells (256 for 8 bits) even with reduce_range, as torch.ao
    does; the final scale then uses the reduced grid. Everything mirrors torch.ao's float32
    arithmetic, so the two agree (tests/test_observers.py measures how closely).
    """

    per_channel_ok = False
    step = 1e-5

    def _range(self):
        return self._per_row(self._choose)

    def _choose(self, hist, lo, hi):
        start, end = self._search(hist, lo, hi)
        bin_width = (hi - lo) / self.bins
        return lo + bin_width * start, lo + bin_width * (end + 1)

    def _search(self, hist, lo, hi) -> tuple[int, int]:
        dst_nbins = 2**self.qdtype.bits
        total = hist.sum().item()
        cumsum = torch.cumsum(hist, dim=0).tolist()  # float32 values, exact as Python floats
        start, end = 0, self.bins - 1
        alpha, beta, best = 0.0, 1.0, float("inf")
        while alpha < beta:
            next_alpha, next_beta = alpha + self.step, beta - self.step
            # first bin whose cumulative count reaches next_alpha of the total ...
            l = bisect.bisect_left(cumsum, round_to_float32(next_alpha * total))
            l = min(end, max(start, l))
            # ... and last bin whose cumulative count stays within next_beta of it
            r = bisect.bisect_right(cumsum, round_to_float32(next_beta * total)) - 1
            r = max(start, min(end, r))
            new_start, new_end = start, end
            if l - start > end - r:
                new_start, alpha = l, next_alpha
            else:
                new_end, beta = r, next_beta
            if (new_start, new_end) == (start, end):
                continue
            error = _l2_error(hist, lo, hi, new_start, new_end, dst_nbins)
            if error > best:
                break
            best, start, end = error, new_start, new_end
        return start, end


class PercentileObserver(_HistogramBase):
    """Range = [the (100 - p)-th percentile, the p-th percentile] of everything seen.

    Read off the running histogram: the first bin where the cumulative count reaches
    q * total, interpolated linearly inside that bin (values in a bin are taken as evenly
    spread). Exact to within one bin width. p = 100 gives min-max.
    """

    def __init__(self, percentile: float = 99.99, **kwargs):
        super().__init__(**kwargs)
        if isinstance(percentile, bool) or not 50.0 < float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile!r}")
        self.percentile = float(percentile)

    def _range(self):
        p = self.percentile / 100.0
        return self._per_row(lambda h, lo, hi: (_quantile(h, lo, hi, 1.0 - p), _quantile(h, lo, hi, p)))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", percentile={self.percentile}"


def _quantile(hist, lo, hi, q: float) -> float:
    """The value below which a fraction q of the histogram's count lies."""
    hist = hist.double()
    cum = torch.cumsum(hist, 0)
    target = q * cum[-1].item()
    k = min(int(torch.searchsorted(cum, torch.tensor(target, dtype=torch.float64))), len(hist) - 1)
    before = cum[k - 1].item() if k > 0 else 0.0
    inside = (target - before) / hist[k].item() if hist[k] > 0 else 0.0
    width = (hi.item() - lo.item()) / len(hist)
    value = lo.item() + (k + min(max(inside, 0.0), 1.0)) * width
    return min(max(value, lo.item()), hi.item())


class MSEObserver(_HistogramBase):
    """Range = the clipping range with the smallest quantization mean squared error.

    Candidates shrink the min-max range towards 0: [a * min, a * max] for
    a = 1/n, 2/n, ..., 1 (n = num_candidates). For each, the histogram is fake-quantized
    with exactly the qparams that range gives (qlab.fake_quantize) and

        mse(a) = sum_bins count * (fake_quantize(v) - v)^2 / total

    where each bin is represented by `points_per_bin` evenly spaced values v. The widest
    of the candidates with the smallest error wins. Per-tensor or per-channel (axis).
    """

    def __init__(self, num_candidates: int = 100, points_per_bin: int = 4, **kwargs):
        super().__init__(**kwargs)
        if not is_int(num_candidates):
            raise TypeError(f"num_candidates must be an int, got {num_candidates!r}")
        if num_candidates < 1 or points_per_bin < 1:
            raise ValueError("num_candidates and points_per_bin must be >= 1")
        self.num_candidates, self.points_per_bin = int(num_candidates), points_per_bin

    def candidates(self) -> torch.Tensor:
        """The shrink factors a searched: 1/n, 2/n, ..., 1."""
        n = self.num_candidates
        return torch.arange(1, n + 1, dtype=torch.float32) / n

    def search_curve(self, channel: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(shrink factors a, mse of each) for one channel (or the tensor): what was searched.
        (The mse is inf where it overflows float32, for |x| beyond about 1e19.)"""
        self._check_has_data()
        lo, hi = [b.reshape(-1)[channel] for b in self._bounds()]
        u = _unit(lo, hi)
        errors = self._errors(self.histogram.reshape(-1, self.bins)[channel], lo / u, hi / u)
        return self.candidates(), errors * u**2

    def _errors(self, hist, lo, hi) -> torch.Tensor:
        a = self.candidates()
        qp = qparams_from_range(
            a * lo, a * hi, self.qdtype, self.symmetric, self.reduce_range, axis=0, eps=self.eps
        )
        k = self.points_per_bin
        width = (hi - lo) / self.bins
        offsets = (torch.arange(k, dtype=torch.float32) + 0.5) / k
        values = lo + (torch.arange(self.bins, dtype=torch.float32)[:, None] + offsets) * width
        values, weights = values.reshape(1, -1), (hist / k).repeat_interleave(k)
        y = fake_quantize(values.expand(len(a), -1), qp, axis=0)
        return ((y - values) ** 2 * weights).sum(dim=1) / hist.sum()

    def _range(self):
        def choose(hist, lo, hi):
            errors = self._errors(hist, lo, hi)
            best = len(errors) - 1 - int(torch.argmin(errors.flip(0)))  # widest among ties
            a = self.candidates()[best]
            return a * lo, a * hi

        return self._per_row(choose)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_candidates={self.num_candidates}"


class EntropyObserver(_HistogramBase):
    """Range = [-T, T] (cut to the data's range) with the threshold T that minimises the
    KL divergence between the float distribution and its quantized version: TensorRT's
    entropy calibration (Migacz, "8-bit Inference with TensorRT", GTC 2017).

    Histogram of |x| over [0, max|x|] in `bins` bins. For each candidate i = L .. bins
    (keep the first i bins, T = i * bin_width; L = number of grid levels on [0, T]:
    128 for int8 or symmetric, 256 for uint8 with data >= 0):

        P = hist[:i], with everything beyond (the clipped outliers) added to P[i-1]
        Q = hist[:i] merged into L equal groups, each group's count spread evenly
            over the group's non-empty bins (what L levels can represent)
        KL(P || Q) = sum P log(P / Q)          (P and Q normalised to sum 1)

    Empty bins get a count of 1e-4 before normalising, as ONNX Runtime's and MXNet's
    versions of this method smooth them: without it, a kept range that ends on an empty bin
    with outliers folded in has Q = 0 where P > 0 (KL = inf), and a few far outliers would
    force the threshold onto a bin that holds one of them.

    The i with the smallest KL wins (the widest among ties). Bin 0 is set to bin 1's
    count first, as NVIDIA's pytorch-quantization does: the spike of exact zeros (after
    ReLU) is representable in any range and would otherwise dominate P. Per-tensor only.

    `kl_divergence_loop` computes one candidate's KL with plain loops: read it first. The
    observer uses `_kl_divergences`, which gets all candidates at once from running sums.
    """

    per_channel_ok = False

    def _values(self, x):
        return x.abs()

    def _bounds(self):
        amax = torch.maximum(self.min_val.abs(), self.max_val.abs())
        return torch.zeros_like(amax), amax

    def levels(self) -> int:
        """Grid levels that cover [0, T]."""
        qmin, qmax = grid(self.qdtype, self.reduce_range)
        if self.symmetric or self.min_val < 0:
            return (qmax - qmin + 1) // 2
        return qmax - qmin + 1

    def search_curve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(thresholds T searched, KL divergence of each)."""
        self._check_has_data()
        kept, kl = _kl_divergences(self.histogram, self.levels())
        return kept * (self._bounds()[1] / self.bins), kl

    def _range(self):
        thresholds, kl = self.search_curve()
        best = len(kl) - 1 - int(torch.argmin(kl.flip(0)))  # widest among ties
        t = thresholds[best]
        hi = torch.minimum(self.max_val, t)
        # T underflows to 0 for subnormal data (T = kept * max|x| / bins): keep min <= max
        return torch.minimum(torch.maximum(self.min_val, -t), hi), hi


def kl_divergence_loop(hist, kept: int, levels: int, eps: float = 1e-4) -> float:
    """KL(P || Q) when the first `kept` bins of `hist` are kept (see EntropyObserver), with
    plain loops: the readable twin of `_kl_divergences` (a test checks that they agree)."""
    h = [float(v) for v in hist]
    h[0] = h[1]  # the spike of exact zeros is representable anyway
    p = h[:kept]
    p[-1] += sum(h[kept:])  # the clipped outliers land in the last kept bin
    q = [0.0] * kept
    for g in range(levels):  # bin j is in group j * levels // kept
        members = [j for j in range(kept) if j * levels // kept == g]
        nonzero = [j for j in members if h[j] > 0]
        for j in nonzero:  # the group's count, spread over its non-empty bins
            q[j] = sum(h[m] for m in members) / len(nonzero)
    p = [v if v > 0 else eps for v in p]  # smoothing: empty bins count eps
    q = [v if v > 0 else eps for v in q]
    sp, sq = sum(p), sum(q)
    return sum(pj / sp * math.log((pj / sp) / (qj / sq)) for pj, qj in zip(p, q, strict=True))


def _kl_divergences(hist, levels: int, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(P_i || Q_i) for every number of kept bins i = levels .. bins (see EntropyObserver).

    Computed for all candidates at once from running sums, group by group rather than bin by
    bin (the fast path of `kl_divergence_loop`; tests/test_observers.py checks they agree). With counts
    p_j, q_j and their totals Zp, Zq:

        KL = sum_j (p_j / Zp) log((p_j / Zp) / (q_j / Zq))
           = (1 / Zp) sum_j p_j log(p_j / q_j) + log(Zq / Zp)

    An empty bin has p_j = q_j = eps and adds nothing to the sum. A non-empty bin of group g
    has q_j = S_g / N_g (the group's count over its non-empty bins), so the group adds
    sum(h log h) - S_g log(S_g / N_g). The last kept bin, which also holds the outliers,
    is then corrected by hand.
    """
    h = hist.double().clone()
    bins = len(h)
    if bins > 1:
        h[0] = h[1]
    nonzero = (h > 0).double()

    def running(v):  # running[k] = sum of v[:k]
        return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(v, 0)])

    count, filled = running(h), running(nonzero)
    hlogh = running(torch.where(h > 0, h * torch.log(h.clamp(min=1e-300)), 0.0))
    total = count[-1]

    kept = torch.arange(min(levels, bins), bins + 1)  # candidates, one per row
    g = torch.arange(levels + 1)
    edges = -(-(g[None, :] * kept[:, None]) // levels)  # group g holds bins edges[g] .. edges[g+1]-1
    group_count = count[edges[:, 1:]] - count[edges[:, :-1]]  # S_g
    group_filled = filled[edges[:, 1:]] - filled[edges[:, :-1]]  # N_g
    used = group_filled > 0
    group_q = torch.where(used, group_count / group_filled.clamp(min=1), 1.0)  # q of its bins
    terms = hlogh[kept] - torch.where(used, group_count * torch.log(group_q), 0.0).sum(1)

    # the last kept bin: remove its ordinary term, add it back with the outliers folded in
    last = h[kept - 1]
    q_last = torch.where(last > 0, group_q[:, -1], torch.full_like(last, eps))
    p_last = last + (total - count[kept])
    terms -= torch.where(last > 0, last * torch.log(last.clamp(min=1e-300) / q_last), 0.0)
    p_last_smoothed = torch.where(p_last > 0, p_last, torch.full_like(p_last, eps))
    terms += p_last_smoothed * torch.log(p_last_smoothed / q_last)

    empty = kept - filled[kept]  # empty bins among the kept ones
    zq = count[kept] + eps * empty
    zp = total + eps * (empty - ((last == 0) & (p_last > 0)).double())
    return kept, terms / zp + torch.log(zq / zp)
