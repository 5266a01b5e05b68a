"""quantize, dequantize and fake_quantize: the three operations of quantization.

    quantize:      q     = clamp(round(x * (1 / scale)) + zero_point, qmin, qmax)
    dequantize:    x_hat = (q - zero_point) * scale
    fake_quantize: y     = dequantize(quantize(x))       (float in, float out)

round is half-to-even, and x is multiplied by 1 / scale (not divided by scale) in float32,
as PyTorch's CPU kernels do; that is what makes the results bit-exact with torch.

fake_quantize's backward is the straight-through estimator (STE): round has zero
gradient almost everywhere, so we pretend it is the identity. The gradient passes
(dy/dx = 1) where x lands inside the grid and is 0 where it was clamped.
"""

from __future__ import annotations

import torch

from .qparams import QParams
from .qtypes import along_axis, is_int


def _check_input(x, qp: QParams, axis: int | None) -> int | None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a float tensor (float32, float16, bfloat16 or float64), got {x.dtype}; "
            "to turn integers back into floats use qlab.dequantize"
        )
    _check_qparams(qp)
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf; only finite values can be quantized")
    return _resolve_axis(x, qp, axis)


def _check_qparams(qp) -> None:
    if not isinstance(qp, QParams):
        raise TypeError(f"qp must be QParams (from qlab.qparams_from_range), got {type(qp).__name__}")


def _resolve_axis(t: torch.Tensor, qp: QParams, axis: int | None) -> int | None:
    """The channel axis for per-channel qparams (None for per-tensor), checked against t."""
    if axis is not None and not is_int(axis):
        raise TypeError(f"axis must be None or an int (a dimension of the tensor), got {axis!r}")
    axis = None if axis is None else int(axis)
    if not qp.per_channel:
        if axis is not None:
            raise ValueError(f"axis={axis} was given but qp is per-tensor (one scale)")
        return None
    axis = qp.axis if axis is None else axis
    if axis is None:
        axis = 0
    if not -t.dim() <= axis < t.dim():
        raise ValueError(
            f"axis={axis} does not exist for a tensor of shape {tuple(t.shape)}; "
            f"allowed axes are {-t.dim()}..{t.dim() - 1}"
        )
    axis = axis % t.dim()
    if t.shape[axis] != qp.scale.numel():
        raise ValueError(
            f"per-channel qparams have {qp.scale.numel()} channels but the tensor has "
            f"{t.shape[axis]} along axis {axis} (shape {tuple(t.shape)}); they must match"
        )
    return axis


def _round_clamp(x: torch.Tensor, qp: QParams, axis: int | None):
    """(clamped q as float32, unclamped q) = round(x * (1/scale)) + zero_point."""
    inv_scale = along_axis(1.0 / qp.scale, x.dim(), axis)
    zp = along_axis(qp.zero_point, x.dim(), axis).to(torch.float32)
    q = torch.round(x.to(torch.float32) * inv_scale) + zp
    return torch.clamp(q, qp.qmin, qp.qmax), q


def quantize(x: torch.Tensor, qp: QParams, axis: int | None = None) -> torch.Tensor:
    """q = clamp(round(x * (1 / scale)) + zero_point, qmin, qmax) as integers; round half to even."""
    axis = _check_input(x, qp, axis)
    q, _ = _round_clamp(x, qp, axis)
    return q.to(qp.qdtype.storage)


def dequantize(q: torch.Tensor, qp: QParams, axis: int | None = None) -> torch.Tensor:
    """x_hat = (q - zero_point) * scale, in float32. q must hold codes of qp's grid."""
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"q must be a torch.Tensor, got {type(q).__name__}")
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"q must be an integer tensor (from qlab.quantize), got {q.dtype}")
    _check_qparams(qp)
    axis = _resolve_axis(q, qp, axis)
    _check_codes(q, qp)
    zp = along_axis(qp.zero_point, q.dim(), axis)
    return (q.to(torch.int64) - zp).to(torch.float32) * along_axis(qp.scale, q.dim(), axis)


def _check_codes(q: torch.Tensor, qp: QParams) -> None:
    """Codes outside [qmin, qmax] do not come from quantize on this grid: refuse them."""
    if q.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(q))
    if lo < qp.qmin or hi > qp.qmax:
        raise ValueError(
            f"q holds codes from {lo} to {hi}, outside the grid [qmin, qmax] = [{qp.qmin}, {qp.qmax}] "
            f"of {qp.qdtype!r}; dequantize takes the codes quantize made with the same qparams"
        )


class _FakeQuantizeSTE(torch.autograd.Function):
    """Forward: quantize then dequantize. Backward: the straight-through estimator."""

    @staticmethod
    def forward(ctx, x, qp, axis):
        q, unclamped = _round_clamp(x, qp, axis)
        inside = (unclamped >= qp.qmin) & (unclamped <= qp.qmax)
        ctx.save_for_backward(inside)
        zp = along_axis(qp.zero_point, x.dim(), axis).to(torch.float32)
        return ((q - zp) * along_axis(qp.scale, x.dim(), axis)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (inside,) = ctx.saved_tensors
        return grad_out * inside, None, None


def fake_quantize(x: torch.Tensor, qp: QParams, axis: int | None = None) -> torch.Tensor:
    """y = (clamp(round(x * (1/scale)) + zp, qmin, qmax) - zp) * scale, in x's dtype;
    dy/dx = 1 inside the grid, 0 outside."""
    axis = _check_input(x, qp, axis)
    y = _FakeQuantizeSTE.apply(x, qp, axis)
    if x.dtype in (torch.float16, torch.bfloat16) and not torch.isfinite(y).all():
        raise ValueError(
            f"fake_quantize's output overflows {x.dtype}: a grid level it reached is beyond "
            f"{torch.finfo(x.dtype).max:.6g}; pass x as float32, or use a range that fits {x.dtype}"
        )
    return y
