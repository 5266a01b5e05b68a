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
        # Per-channel buffers change shape once data arrives; adopt the saved shape.
        for name in ("min_val", "max_val"):
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
