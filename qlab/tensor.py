"""QTensor: what flows between int8 modules, integers plus their QParams.

    x ≈ (int_repr - zero_point) * scale          int_repr: uint8 (or int8) storage

A QTensor is not a float tensor in disguise: it holds only the integers. The few torch
functions an int8 model calls between its int8 layers work on it directly, and never change
the qparams: relu, max_pool2d, adaptive_avg_pool2d, flatten/reshape/view and dropout in
eval (add and cat go through qlab.nn.QFunctional). Anything else raises a TypeError that
says to dequantize first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .integer import requantize, to_codes
from .ops import dequantize, quantize
from .qparams import QParams


class QTensor:
    """An integer tensor with per-tensor qparams: x ≈ (int_repr - zero_point) * scale."""

    def __init__(self, int_repr: torch.Tensor, qparams: QParams):
        if not isinstance(int_repr, torch.Tensor) or int_repr.is_floating_point():
            got = int_repr.dtype if isinstance(int_repr, torch.Tensor) else type(int_repr).__name__
            raise TypeError(f"int_repr must be an integer tensor (from qlab.quantize), got {got}")
        if not isinstance(qparams, QParams) or qparams.per_channel:
            raise TypeError(f"qparams must be per-tensor QParams (activations have one scale), "
                            f"got {qparams!r}")
        self.int_repr, self.qparams = int_repr, qparams

    @classmethod
    def quantize(cls, x: torch.Tensor, qparams: QParams) -> QTensor:
        """The QTensor of float x on the grid of `qparams` (qlab.quantize)."""
        return cls(quantize(x, qparams), qparams)

    def dequantize(self) -> torch.Tensor:
        """x_hat = (q - zero_point) * scale, float32 (qlab.dequantize)."""
        return dequantize(self.int_repr, self.qparams)

    @property
    def scale(self) -> float:
        return float(self.qparams.scale)

    @property
    def zero_point(self) -> int:
        return int(self.qparams.zero_point)

    @property
    def shape(self) -> torch.Size:
        return self.int_repr.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.int_repr.dtype

    def size(self, dim: int | None = None):
        return self.int_repr.shape if dim is None else self.int_repr.shape[dim]

    def dim(self) -> int:
        return self.int_repr.dim()

    def numel(self) -> int:
        return self.int_repr.numel()

    def _like(self, int_repr: torch.Tensor) -> QTensor:
        return QTensor(int_repr, self.qparams)

    # -- shape methods: the integers move, the qparams stay -----------------------------
    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> QTensor:
        return self._like(self.int_repr.flatten(start_dim, end_dim))

    def reshape(self, *shape) -> QTensor:
        return self._like(self.int_repr.reshape(*shape))

    def view(self, *shape) -> QTensor:
        return self._like(self.int_repr.view(*shape))

    def contiguous(self) -> QTensor:
        return self._like(self.int_repr.contiguous())

    def __getitem__(self, index) -> QTensor:
        return self._like(self.int_repr[index])

    def __len__(self) -> int:
        return len(self.int_repr)

    def __repr__(self) -> str:
        return (f"QTensor(shape={tuple(self.shape)}, dtype={self.dtype}, scale={self.scale:.6g}, "
                f"zero_point={self.zero_point})")

    # -- torch functions -----------------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        handler = _HANDLERS.get(func)
        if handler is None:
            name = getattr(func, "__name__", repr(func))
            allowed = sorted({getattr(f, "__name__", repr(f)) for f in _HANDLERS})
            raise TypeError(
                f"{name} has no int8 version for a QTensor; int8 activations support "
                f"{', '.join(allowed)}. Put a DeQuantStub before it to run it in float."
            )
        return handler(*args, **(kwargs or {}))


# -- int8 versions of the torch functions a quantized model calls between layers -------


def q_relu(x: QTensor, inplace: bool = False) -> QTensor:
    """relu in the integer domain: 0.0 is the zero point, so q -> max(q, zero_point)."""
    return x._like(torch.clamp(x.int_repr, min=x.zero_point))


def q_max_pool2d(x: QTensor, kernel_size, stride=None, padding=0, dilation=1,
                 ceil_mode=False, return_indices=False) -> QTensor:
    """max commutes with the (increasing) quantization map: take the max of the integers."""
    if return_indices:
        raise TypeError("max_pool2d with return_indices is not supported on a QTensor")
    # max_pool2d has no integer kernel; float32 holds 8-bit integers exactly.
    out = F.max_pool2d(x.int_repr.to(torch.float32), kernel_size, stride, padding, dilation,
                       ceil_mode=ceil_mode)
    return x._like(to_codes(out, x.int_repr.dtype))


def q_adaptive_avg_pool2d(x: QTensor, output_size) -> QTensor:
    """Mean of each window, same qparams: q = zp + round((sum(q) - zp * n) * float32(1 / n)).

    As torch's quantized kernel: an integer sum, then a float multiplier 1/n, half to even.
    Window (i, j) spans rows floor(i h / oh) .. ceil((i + 1) h / oh) - 1, columns alike.
    """
    out_size = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    h, w = x.int_repr.shape[-2:]
    oh = h if out_size[0] is None else out_size[0]
    ow = w if out_size[1] is None else out_size[1]
    q = x.int_repr.to(torch.int32) - x.zero_point
    if h % oh == 0 and w % ow == 0:  # equal windows (global pooling too): one reshape, one sum
        acc = q.unflatten(-1, (ow, w // ow)).unflatten(-3, (oh, h // oh)).sum((-3, -1))
        out = _mean(acc, (h // oh) * (w // ow), x.qparams)
    else:  # unequal (overlapping) windows: one window at a time
        rows = [torch.stack([_mean(q[..., h0:h1, w0:w1].sum((-2, -1)), (h1 - h0) * (w1 - w0), x.qparams)
                             for w0, w1 in _windows(w, ow)], -1) for h0, h1 in _windows(h, oh)]
        out = torch.stack(rows, -2)
    return x._like(to_codes(out, x.int_repr.dtype))


def _windows(size: int, out: int) -> list[tuple[int, int]]:
    """(start, end) of each of the `out` adaptive-pooling windows along a side of `size`."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _mean(acc: torch.Tensor, n: int, qp: QParams) -> torch.Tensor:
    """requantize(sum, 1/n): the window sum of q - zp times float32(1 / n), back on qp's grid."""
    mult = torch.tensor(1.0, dtype=torch.float32) / n
    return requantize(acc, mult, int(qp.zero_point), qp.qmin, qp.qmax)


def q_flatten(x: QTensor, start_dim: int = 0, end_dim: int = -1) -> QTensor:
    return x.flatten(start_dim, end_dim)


def q_reshape(x: QTensor, shape) -> QTensor:
    return x.reshape(shape)


def q_dropout(x: QTensor, p: float = 0.5, training: bool = False, inplace: bool = False):
    if training:
        raise TypeError("dropout in training mode is not supported on a QTensor; call model.eval()")
    return x


_HANDLERS = {
    F.relu: q_relu,
    torch.relu: q_relu,
    F.max_pool2d: q_max_pool2d,
    F.adaptive_avg_pool2d: q_adaptive_avg_pool2d,
    torch.flatten: q_flatten,
    torch.reshape: q_reshape,
    F.dropout: q_dropout,
}
