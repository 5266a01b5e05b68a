"""Scale and zero point: how a float range maps onto an integer grid.

Affine (asymmetric), with the range first widened to include 0 so that 0.0 is exact:

    scale      = (max - min) / (qmax - qmin)
    zero_point = clamp(qmin - round(min / scale), qmin, qmax)

Symmetric, centred on 0:

    scale      = max(|min|, |max|) / ((qmax - qmin) / 2)
    zero_point = 0 for a signed grid, the grid's middle for an unsigned one

scale is never below eps (float32 eps, as PyTorch), so a zero-width range still works.
Everything is computed in float32 with round-half-to-even, exactly as torch.ao's observers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .qtypes import QDType, uint8

EPS = torch.finfo(torch.float32).eps


@dataclass
class QParams:
    """Quantization parameters: x ≈ (q - zero_point) * scale, q in [qmin, qmax].

    Per-tensor when scale is 0-d; per-channel along `axis` when scale is 1-d.
    """

    scale: torch.Tensor  # float32, 0-d or 1-d
    zero_point: torch.Tensor  # int64, same shape as scale
    qdtype: QDType
    qmin: int
    qmax: int
    axis: int | None = None

    @property
    def per_channel(self) -> bool:
        return self.scale.dim() == 1

    def __repr__(self) -> str:
        def show(t):
            return f"{t.item():.6g}" if t.dim() == 0 else f"<{t.numel()} channels>"

        where = "" if self.axis is None else f", axis={self.axis}"
        return (
            f"QParams(scale={show(self.scale)}, zero_point={show(self.zero_point)}, "
            f"grid=[{self.qmin}, {self.qmax}]{where})"
        )


def _as_range_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise TypeError(f"{name} must be a number or a float tensor, got {type(value).__name__}")
    t = torch.as_tensor(value, dtype=torch.float32) if not isinstance(value, torch.Tensor) else value
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {t.dtype}")
    if t.dim() > 1:
        raise ValueError(
            f"{name} must be 0-d (per-tensor) or 1-d (per-channel), got shape {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf ({t.tolist()}); a range must be finite")
    return t.detach().to(torch.float32)


def grid(qdtype: QDType, reduce_range: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of `qdtype`, one bit narrower with reduce_range (uint8 -> 0..127)."""
    if reduce_range:
        if qdtype.bits <= 2:
            raise ValueError("reduce_range needs at least 3 bits; it removes one bit from the grid")
        qdtype = qdtype.reduced()
    return qdtype.qmin, qdtype.qmax


def qparams_from_range(
    min_val,
    max_val,
    qdtype: QDType = uint8,
    symmetric: bool = False,
    reduce_range: bool = False,
    axis: int | None = None,
    eps: float = EPS,
) -> QParams:
    """Scale and zero point that map [min_val, max_val] onto the grid of `qdtype`.

    min_val, max_val: numbers or 0-d tensors (per-tensor), or 1-d tensors (per-channel,
    along `axis`, default 0). See the module docstring for the formulas.
    """
    if not isinstance(qdtype, QDType):
        raise TypeError(f"qdtype must be a qlab QDType such as qlab.uint8, got {qdtype!r}")
    min_val = _as_range_tensor(min_val, "min_val")
    max_val = _as_range_tensor(max_val, "max_val")
    if min_val.shape != max_val.shape:
        raise ValueError(
            f"min_val and max_val must have the same shape, got "
            f"{tuple(min_val.shape)} and {tuple(max_val.shape)}"
        )
    if (min_val > max_val).any():
        raise ValueError(
            f"min_val must be <= max_val, got min_val={min_val.tolist()} max_val={max_val.tolist()}"
        )
    if min_val.dim() == 1:
        axis = 0 if axis is None else axis
    elif axis is not None:
        raise ValueError(f"axis={axis} needs 1-d (per-channel) min_val and max_val")
    qmin, qmax = grid(qdtype, reduce_range)

    min_neg = torch.minimum(min_val, torch.zeros_like(min_val))
    max_pos = torch.maximum(max_val, torch.zeros_like(max_val))
    eps_t = torch.tensor(eps, dtype=torch.float32)
    if symmetric:
        amax = torch.maximum(-min_neg, max_pos)
        scale = torch.maximum(amax / (float(qmax - qmin) / 2), eps_t)
        middle = 0 if qdtype.signed else _unsigned_middle(qdtype, reduce_range, qmin, qmax)
        zero_point = torch.full_like(scale, middle, dtype=torch.int64)
    else:
        scale = torch.maximum((max_pos - min_neg) / float(qmax - qmin), eps_t)
        zero_point = qmin - torch.round(min_neg / scale).to(torch.int64)
        zero_point = torch.clamp(zero_point, qmin, qmax)
    return QParams(scale, zero_point, qdtype, qmin, qmax, axis)


def _unsigned_middle(qdtype: QDType, reduce_range: bool, qmin: int, qmax: int) -> int:
    """Zero point of a symmetric unsigned grid: 128 for the full uint8 grid (as torch.ao),
    otherwise the middle rounded down, (qmin + qmax) // 2, as torch.ao with a custom range.

    With reduce_range (grid 0..127) that is 63, what torch.ao computes for that grid given
    explicitly (its default observer refuses symmetric quint8 with reduce_range).
    """
    if qdtype.bits == 8 and not reduce_range:
        return 128
    return (qmin + qmax) // 2
