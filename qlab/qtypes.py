"""Integer grids: a bit width and a sign give the grid [qmin, qmax] and a storage dtype.

    signed:   qmin = -2**(bits-1),  qmax = 2**(bits-1) - 1     (int8: -128..127)
    unsigned: qmin = 0,             qmax = 2**bits - 1         (uint8: 0..255)
"""

from __future__ import annotations

import math
import numbers
import struct
from dataclasses import dataclass

import torch

MIN_BITS, MAX_BITS = 2, 16


def is_int(v) -> bool:
    """An integer: an int or a numpy integer scalar (numbers.Integral), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A plain number: an int, a float or a numpy scalar (numbers.Real), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class QDType:
    """An integer grid: `bits` wide, `signed` or not. Values live in [qmin, qmax]."""

    bits: int
    signed: bool

    def __post_init__(self):
        if not is_int(self.bits):
            raise TypeError(f"bits must be an int, got {type(self.bits).__name__}")
        object.__setattr__(self, "bits", int(self.bits))  # a numpy integer becomes an int
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(
                f"bits={self.bits} is outside the supported range; "
                f"bits must be between {MIN_BITS} and {MAX_BITS}"
            )
        if not isinstance(self.signed, bool):
            raise TypeError(f"signed must be True or False, got {self.signed!r}")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def storage(self) -> torch.dtype:
        """The smallest torch integer dtype that holds the grid."""
        if self.bits <= 8:
            return torch.int8 if self.signed else torch.uint8
        return torch.int16 if self.signed else torch.int32

    def reduced(self) -> QDType:
        """The grid one bit narrower: what `reduce_range` uses (uint8 -> 0..127, int8 -> -64..63)."""
        return QDType(self.bits - 1, self.signed)

    def __repr__(self) -> str:
        kind = "int" if self.signed else "uint"
        return f"{kind}{self.bits}[{self.qmin}..{self.qmax}]"


def qdtype(bits: int = 8, signed: bool = True) -> QDType:
    """The integer grid with `bits` bits, signed or unsigned. bits must be in 2..16."""
    return QDType(bits, signed)


int8, uint8 = qdtype(8, True), qdtype(8, False)
int4, uint4 = qdtype(4, True), qdtype(4, False)
int16 = qdtype(16, True)


def round_to_float32(v: float) -> float:
    """v rounded to the nearest float32 (ties to even), as a Python float; +-inf beyond float32's
    range. What torch does when it compares a float32 tensor with a Python float, or stores one."""
    try:
        return struct.unpack("f", struct.pack("f", v))[0]
    except OverflowError:
        return math.copysign(math.inf, v)


def along_axis(v: torch.Tensor, ndim: int, axis: int | None) -> torch.Tensor:
    """v (one value per channel, 1-d) reshaped to broadcast along `axis` of an ndim-dim tensor:
    shape [1, ..., -1, ..., 1]. A 0-d v, or axis None, comes back as it is (it broadcasts already).
    The one per-channel reshape of qlab: ops, fake_quant, integer and nn.static use it."""
    if axis is None or v.dim() != 1:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)
