"""Observers watch tensors during calibration and turn what they saw into QParams.

One interface for all of them:

    obs = MinMaxObserver(qdtype=qlab.uint8, symmetric=False, axis=None)
    obs(x)               # records x, returns x unchanged
    obs.qparams()        # QParams from the range chosen so far
    obs.reset()          # forget everything

State lives in buffers, so an observer travels in a model's state_dict.
axis=None is per-tensor; axis=k keeps one range per index along dimension k.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch
from torch import nn

from .qparams import EPS, QParams, qparams_from_range
from .qtypes import QDType, uint8


class Observer(nn.Module):
    """Base class: records the running min and max; subclasses choose the range.

    Subclasses override `_update(x_min, x_max, x)` (what to remember of a batch) and/or
    `_range()` (the (min, max) to quantize with).
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
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise TypeError(f"axis must be None (per-tensor) or an int, got {axis!r}")
        self.qdtype, self.symmetric, self.axis = qdtype, symmetric, axis
        self.reduce_range, self.eps = reduce_range, eps
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

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
        if not torch.isfinite(x).all():
            raise ValueError(f"{type(self).__name__} got NaN or Inf; calibration data must be finite")
        x = x.detach().to(torch.float32)
        if self.axis is None:
            return torch.aminmax(x)
        if not -x.dim() <= self.axis < x.dim():
            raise ValueError(
                f"axis={self.axis} does not exist for a tensor of shape {tuple(x.shape)}; "
                f"allowed axes are {-x.dim()}..{x.dim() - 1}"
            )
        flat = x.movedim(self.axis, 0).flatten(start_dim=1)
        return torch.aminmax(flat, dim=1)

    def _update(self, x_min: torch.Tensor, x_max: torch.Tensor, x: torch.Tensor) -> None:
        if self.has_data() and x_min.shape != self.min_val.shape:
            raise ValueError(
                f"{type(self).__name__} saw {self.min_val.numel()} channels before and "
                f"{x_min.numel()} now; every batch must have the same channels along axis {self.axis}"
            )
        self.min_val = torch.minimum(x_min, self.min_val) if self.has_data() else x_min.clone()
        self.max_val = torch.maximum(x_max, self.max_val) if self.has_data() else x_max.clone()

    # -- what every observer gives back ------------------------------------------------
    def has_data(self) -> bool:
        return bool(torch.isfinite(self.min_val).all()) and self.min_val.numel() > 0

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.min_val, self.max_val

    def qparams(self) -> QParams:
        if not self.has_data():
            raise ValueError(
                f"{type(self).__name__} has seen no data yet; call it on calibration "
                "batches before asking for qparams()"
            )
        lo, hi = self._range()
        return qparams_from_range(
            lo, hi, self.qdtype, self.symmetric, self.reduce_range,
            axis=self.axis, eps=self.eps,
        )  # fmt: skip

    def reset(self) -> None:
        self.min_val = torch.tensor(float("inf"))
        self.max_val = torch.tensor(float("-inf"))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Buffers change shape once data arrives (per-channel); adopt the saved shape.
        for name in self._buffers:
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "affine"
        where = "per-tensor" if self.axis is None else f"axis={self.axis}"
        return f"{self.qdtype!r}, {kind}, {where}, reduce_range={self.reduce_range}"


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
        c = self.averaging_constant
        self.min_val = self.min_val + c * (x_min - self.min_val)
        self.max_val = self.max_val + c * (x_max - self.max_val)


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


class _HistogramBase(Observer):
    """Keeps a `bins`-bin histogram (one per channel with axis) over [min, max] seen so far.

    First batch: histogram over its own [min, max]. Later batches: the range grows to the
    union; the new batch is binned over it and the old histogram is re-binned onto it
    (`_rebin`). Subclasses choose the range from the histogram in `_range()`.
    """

    per_channel_ok = True

    def __init__(self, bins: int = 2048, upsample_rate: int = 16, **kwargs):
        super().__init__(**kwargs)
        if self.axis is not None and not self.per_channel_ok:
            raise ValueError(
                f"{type(self).__name__} is per-tensor only (axis=None), got axis={self.axis}; "
                "for per-channel ranges use MinMaxObserver, PercentileObserver or MSEObserver"
            )
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, got {bins!r}")
        if isinstance(upsample_rate, bool) or not isinstance(upsample_rate, int) or upsample_rate < 1:
            raise ValueError(f"upsample_rate must be an int >= 1, got {upsample_rate!r}")
        self.bins, self.upsample_rate = bins, upsample_rate
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
            lo, hi = new_min[c], new_max[c]
            batch = torch.histc(row, self.bins, min=lo.item(), max=hi.item())
            if first:
                hist[c] = batch
            elif old_min[c] == lo and old_max[c] == hi:
                hist[c] = old_hist[c] + batch
            elif old_min[c] == old_max[c]:  # everything so far was one value
                one = torch.histc(old_min[c], self.bins, min=lo.item(), max=hi.item())
                hist[c] = one * old_hist[c].sum() + batch
            else:
                moved = _rebin(old_hist[c], old_min[c], old_max[c], lo, hi, self.upsample_rate)
                hist[c] = (batch + moved).to(torch.float32)
        self.histogram = hist[0] if self.axis is None else hist

    def reset(self) -> None:
        super().reset()
        self.histogram = torch.zeros(self.bins)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bins={self.bins}"

    def _per_row(self, choose) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply choose(hist_row, lo, hi) -> (min, max) to every channel; stack the results."""
        lo, hi = [b.reshape(-1) for b in self._bounds()]
        hist = self.histogram.reshape(-1, self.bins)
        picks = [choose(hist[c], lo[c], hi[c]) for c in range(hist.shape[0])]
        new_min = torch.stack([torch.as_tensor(p[0], dtype=torch.float32) for p in picks])
        new_max = torch.stack([torch.as_tensor(p[1], dtype=torch.float32) for p in picks])
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
            keep the candidate

        min = min_val + start * bin_width,  max = min_val + (end + 1) * bin_width

    The error assumes 2**bits cells (256 for 8 bits) even with reduce_range, as torch.ao
    does; the final scale then uses the reduced grid. Everything mirrors torch.ao's float32
    arithmetic, so the two agree (tests/test_observers.py measures how closely).
    """

    per_channel_ok = False
    step = 1e-5

    def _range(self):
        start, end = self._search(self.histogram)
        bin_width = (self.max_val - self.min_val) / self.bins
        return self.min_val + bin_width * start, self.min_val + bin_width * (end + 1)

    def _search(self, hist) -> tuple[int, int]:
        dst_nbins = 2**self.qdtype.bits
        total = hist.sum().item()
        cumsum = torch.cumsum(hist, dim=0).tolist()  # float32 values, exact as Python floats
        start, end = 0, self.bins - 1
        alpha, beta, best = 0.0, 1.0, float("inf")
        while alpha < beta:
            next_alpha, next_beta = alpha + self.step, beta - self.step
            # first bin whose cumulative count reaches next_alpha of the total ...
            l = bisect.bisect_left(cumsum, _f32(next_alpha * total))
            l = min(end, max(start, l))
            # ... and last bin whose cumulative count stays within next_beta of it
            r = bisect.bisect_right(cumsum, _f32(next_beta * total)) - 1
            r = max(start, min(end, r))
            new_start, new_end = start, end
            if l - start > end - r:
                new_start, alpha = l, next_alpha
            else:
                new_end, beta = r, next_beta
            if (new_start, new_end) == (start, end):
                continue
            error = _l2_error(hist, self.min_val, self.max_val, new_start, new_end, dst_nbins)
            if error > best:
                break
            best, start, end = error, new_start, new_end
        return start, end


def _f32(v: float) -> float:
    """v rounded to float32: torch compares a float32 tensor with a Python float in float32."""
    return float(np.float32(v))
