"""Scale and zero point: how a float range maps onto an integer grid.

Affine (asymmetric), with the range first widened to include 0 so that 0.0 is exact:

    scale      = (max - min) / (qmax - qmin)
    zero_point = clamp(qmin - round(min / scale), qmin, qmax)

Symmetric, centred on 0:

    scale      = max(|min|, |max|) / ((qmax - qmin) / 2)
    zero_point = 0 for a signed grid, the grid's middle for an unsigned one

scale is never below eps (float32 eps, as PyTorch), so a zero-width range still works.
Everything is computed in float32 with round-half-to-even, exactly as torch.ao's observers;
a range whose scale would not fit float32 (wider than 3.4e38) is refused with a clear error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .qtypes import QDType, is_int, is_real, uint8

EPS = torch.finfo(torch.float32).eps
FLOAT32_MAX = torch.finfo(torch.float32).max


@dataclass
class QParams:
    """Quantization parameters: x ≈ (q - zero_point) * scale, q in [qmin, qmax].

    Per-tensor when scale is 0-d; per-channel along `axis` (None means 0) when scale is 1-d.
    Made by qparams_from_range, or by hand: plain numbers become 0-d tensors, scale becomes
    float32 and zero_point int64. Checked when built (`_check`): the grid lies inside qdtype's,
    zero points lie on it, scales are > 0 and every level (q - zero_point) * scale fits
    float32. So a hand-built QParams cannot flip signs, saturate everything or wrap around
    its storage dtype.
    """

    scale: torch.Tensor  # float32, 0-d or 1-d
    zero_point: torch.Tensor  # int64, same shape as scale
    qdtype: QDType
    qmin: int
    qmax: int
    axis: int | None = None

    def __post_init__(self):
        self.scale = _as_param(self.scale, "scale", torch.float32)
        self.zero_point = _as_param(self.zero_point, "zero_point", torch.int64)
        _check(self)
        self.qmin, self.qmax = int(self.qmin), int(self.qmax)  # numpy integers become ints
        self.axis = None if self.axis is None else int(self.axis)

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


def _as_param(value, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A QParams field as a tensor of `dtype`: a plain number (or numpy scalar) becomes a 0-d
    tensor; a float that float32 cannot hold (1e300) is refused, not turned into inf."""
    floating = dtype.is_floating_point
    if is_real(value) if floating else is_int(value):
        value = torch.tensor(value, dtype=torch.float64 if floating else dtype)
    if (
        not isinstance(value, torch.Tensor)
        or value.dtype == torch.bool
        or value.is_complex()
        or value.is_floating_point() != floating
    ):
        allowed = "a number or a float tensor" if floating else "an int or an integer tensor"
        got = f"dtype {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise TypeError(f"QParams {name} must be {allowed}, got {got}")
    if value.dtype == dtype:
        return value
    cast = value.to(dtype)
    if floating and bool((torch.isfinite(value) & ~torch.isfinite(cast)).any()):
        raise ValueError(f"QParams {name}={_show_values(value)} does not fit float32 "
                         f"(largest {FLOAT32_MAX:.4g}); scales are float32")
    return cast


def _show_values(t: torch.Tensor) -> str:
    return repr(t.item()) if t.numel() == 1 else f"<values up to {t.abs().max().item():.4g}>"


def _check(qp: QParams) -> None:
    """What makes QParams usable: a grid [qmin, qmax] inside qdtype's, a scale of at most one
    dimension with one zero point per scale, then the values (`_check_values`)."""
    if not isinstance(qp.qdtype, QDType):
        raise TypeError(f"QParams qdtype must be a qlab QDType such as qlab.uint8, got {qp.qdtype!r}")
    if not (is_int(qp.qmin) and is_int(qp.qmax)):
        raise TypeError(f"QParams qmin and qmax must be ints, got {qp.qmin!r} and {qp.qmax!r}")
    if not qp.qdtype.qmin <= qp.qmin < qp.qmax <= qp.qdtype.qmax:
        raise ValueError(
            f"QParams grid [qmin, qmax] = [{qp.qmin}, {qp.qmax}] must have qmin < qmax and lie "
            f"inside the {qp.qdtype!r} grid of qdtype (stored as {qp.qdtype.storage})"
        )
    if not (qp.axis is None or is_int(qp.axis)):
        raise TypeError(f"QParams axis must be None (per-tensor) or an int, got {qp.axis!r}")
    scale, zp = qp.scale, qp.zero_point
    if scale.dim() > 1 or scale.numel() == 0:
        raise ValueError(
            "QParams scale must be 0-d (per-tensor) or 1-d with one value per channel, "
            f"got shape {tuple(scale.shape)}"
        )
    if zp.shape != scale.shape:
        raise ValueError(
            f"QParams scale and zero_point must have the same shape, got "
            f"{tuple(scale.shape)} and {tuple(zp.shape)}"
        )
    if scale.dim() == 0 and qp.axis is not None:
        raise ValueError(
            f"QParams axis={qp.axis} needs a 1-d (per-channel) scale; per-tensor qparams take axis=None"
        )
    _check_values(qp)


def _check_values(qp: QParams) -> None:
    """Zero points on the grid; scales > 0 and finite; and every grid level
    (q - zero_point) * scale inside float32, checked as
    max(qmax - min(zero_point), max(zero_point) - qmin) * max(scale) <= float32 max.
    Two reductions and four numbers, so it is cheap enough to run on every call."""
    z_lo, z_hi = (int(v) for v in torch.aminmax(qp.zero_point))
    s_lo, s_hi = (float(v) for v in torch.aminmax(qp.scale.detach()))
    if z_lo < qp.qmin or z_hi > qp.qmax:
        raise ValueError(
            f"QParams zero_point must lie on the grid [qmin, qmax] = [{qp.qmin}, {qp.qmax}], "
            f"got values from {z_lo} to {z_hi}"
        )
    if not (s_lo > 0 and s_hi < math.inf):
        raise ValueError(f"QParams scale must be > 0 and finite, got values from {s_lo} to {s_hi}")
    reach = max(qp.qmax - z_lo, z_hi - qp.qmin) * s_hi
    if reach > FLOAT32_MAX:
        raise ValueError(
            f"QParams scale up to {s_hi:.4g} puts grid levels (q - zero_point) * scale at up to "
            f"{reach:.4g}; every level must fit float32 (|value| <= {FLOAT32_MAX:.4g})"
        )


def _as_range_tensor(value, name: str) -> torch.Tensor:
    if not (is_real(value) or isinstance(value, torch.Tensor)):
        raise TypeError(f"{name} must be a number or a float tensor, got {type(value).__name__}")
    t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=torch.float64)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {t.dtype}")
    if t.dim() > 1:
        raise ValueError(
            f"{name} must be 0-d (per-tensor) or 1-d (per-channel), got shape {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf ({t.tolist()}); a range must be finite")
    t32 = t.detach().to(torch.float32)
    if not torch.isfinite(t32).all():  # a float64 beyond float32's range becomes inf here
        raise ValueError(
            f"{name}={t.tolist()} does not fit float32 (largest {FLOAT32_MAX:.4g}); "
            "scales are computed in float32, so the range must fit it"
        )
    return t32


def check_eps(eps) -> float:
    """eps, checked: a finite float > 0 that stays > 0 and finite in float32 (the smallest scale)."""
    if not is_real(eps):
        raise TypeError(f"eps must be a float (the smallest scale allowed), got {type(eps).__name__}")
    eps = float(eps)
    as_f32 = float(torch.tensor(eps, dtype=torch.float32))
    if not (math.isfinite(eps) and eps > 0 and 0 < as_f32 < math.inf):
        raise ValueError(
            f"eps must be a finite float > 0 that float32 can hold (the smallest scale allowed; "
            f"default {EPS:.4g}), got {eps!r}"
        )
    return eps


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
    eps = check_eps(eps)
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
    if not torch.isfinite(scale).all():
        raise ValueError(
            f"the range min_val={min_val.tolist()} max_val={max_val.tolist()} is too wide: its width "
            f"max(max_val, 0) - min(min_val, 0) overflows float32, so the scale is inf; the width "
            f"must fit float32 (at most {FLOAT32_MAX:.4g})"
        )
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
