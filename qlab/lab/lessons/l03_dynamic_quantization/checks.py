"""Lesson 03, the self-checks of its exercises."""

from __future__ import annotations

import math
import numbers

import torch

from qlab.lab.kit.check import Student, checker, describe, is_number, verdict
from qlab.lab.kit.torch_ao import PARITY_ENGINE, engine
from qlab.nn.dynamic import dynamic_qparams
from qlab.qtypes import round_to_float32

#: fbgemm raises scales below this (qlab.nn.dynamic.SMALL_SCALE_THRESHOLD)
_SMALL_SCALE = 6.1e-5


def _dynamic_cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [
        ("mixed signs", torch.randn(4, 16, generator=g)),
        ("positive only (min > 0)", torch.rand(64, generator=g) * 3 + 0.5),
        ("negative only (max < 0)", -(torch.rand(64, generator=g) * 2 + 0.3)),
        ("a constant tensor (2.5 everywhere)", torch.full((8,), 2.5)),
        ("all zeros (zero-width range)", torch.zeros(8)),
        ("a tiny range (values about 1e-6)", torch.randn(32, generator=g) * 1e-6),
    ]


def _wrong_qparams(x: torch.Tensor, reduce_range: bool) -> list[tuple[float, int | float, str]]:
    """The (scale, zero_point) that the usual mistakes give for x, each with its hint."""
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    x_lo, x_hi = x.min().item(), x.max().item()
    qmax = 127 if reduce_range else 255
    out = []

    def add(scale, zp, hint):
        if scale > 0 and math.isfinite(scale):
            out.append((round_to_float32(scale), zp, hint))

    other = 255 if reduce_range else 127
    add((hi - lo) / other, round(-lo / ((hi - lo) / other)) if hi > lo else 0,
        "reduce_range=True means 7-bit activations, qmax = 127; without it qmax = 255"
        if reduce_range else "reduce_range=False uses the full uint8 grid, qmax = 255; only "
        "reduce_range=True shrinks it to 127")
    if x_hi > x_lo:
        s = (x_hi - x_lo) / qmax
        for zp in (round(-x_lo / s), min(max(round(-x_lo / s), 0), qmax)):
            add(s, zp, "widen the range to include 0 first: min = min(x.min(), 0), "
                       "max = max(x.max(), 0), so that 0.0 is exactly representable")
    if hi > lo:
        add((hi - lo) / (qmax + 1), round(-lo / ((hi - lo) / (qmax + 1))),
            "divide by the number of steps, qmax - qmin, not the number of levels qmax - qmin + 1")
        s = (hi - lo) / qmax
        add(s, math.trunc(-lo / s), "int() truncates toward 0; round the zero point to the nearest "
                                    "integer with round() (half to even, as PyTorch)")
    return out


def _dynamic_hint(x, reduce_range, scale, zp, expected) -> str:
    """The most likely mistake behind a wrong (scale, zero_point)."""
    qmax = 127 if reduce_range else 255
    exp_scale, exp_zp = expected
    if math.isclose(scale, exp_zp, rel_tol=1e-5) and math.isclose(zp, exp_scale, rel_tol=1e-5):
        return "return (scale, zero_point) in that order"
    if zp != round(zp):
        return "round the zero point to an integer: zero_point = round(qmin - min / scale)"
    if zp > qmax or zp < 0:
        return (f"the zero point {zp} lies outside the grid 0..{qmax}: clamp it to [qmin, qmax] "
                "(with the range widened to include 0 it always lies inside)")
    if x.min() == x.max() == 0:
        return ("a zero-width range (all values 0) has scale 0 by the formula; PyTorch (fbgemm) "
                "uses scale = 0.1 and zero_point = 0 instead")
    if exp_scale == round_to_float32(_SMALL_SCALE) and scale < exp_scale:
        return (f"the range is tiny: fbgemm never uses a scale below {_SMALL_SCALE} "
                "(SMALL_SCALE_THRESHOLD); use scale = max(scale, 6.1e-5), and keep the zero point "
                "you computed from the unclamped scale")
    for wrong_scale, wrong_zp, hint in _wrong_qparams(x, reduce_range):
        if math.isclose(scale, wrong_scale, rel_tol=1e-5) and zp == wrong_zp:
            return hint
    for wrong_scale, _, hint in _wrong_qparams(x, reduce_range):
        if math.isclose(scale, wrong_scale, rel_tol=1e-5) and not math.isclose(scale, exp_scale,
                                                                               rel_tol=1e-6):
            return hint
    if math.isclose(scale, exp_scale, rel_tol=1e-5):
        return "the scale is right; zero_point = clamp(round(qmin - min / scale), qmin, qmax)"
    return ("scale = (max - min) / (qmax - qmin) over the range widened to include 0, "
            "zero_point = clamp(round(qmin - min / scale), qmin, qmax); qmax = 127 with reduce_range")


def _as_qparams(got) -> tuple[tuple[float, int | float] | None, str]:
    """The student's (scale, zero_point) as Python numbers, or None and what is wrong."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        hint = " (did you forget `return`?)" if got is None else ""
        return None, (f"it returned {type(got).__name__}{hint}; return a pair (scale, zero_point)")
    scale, zp = got
    if isinstance(scale, torch.Tensor) or isinstance(zp, torch.Tensor):
        return None, ("it returned tensors; return plain numbers: scale as a Python float "
                      "(float(t) or t.item()) and zero_point as a Python int (int(t))")
    for what, v, kind in (("scale", scale, "float"), ("zero_point", zp, "int")):
        if not is_number(v):
            return None, (f"it returned {describe(got)}: {what} is a {type(v).__name__}; "
                          f"return it as a Python {kind}")
    if not (math.isfinite(scale) and math.isfinite(zp)):
        return None, (f"it returned scale = {scale}, zero_point = {zp}: NaN or Inf. A zero-width "
                      "range (all values 0) must not divide by 0: PyTorch (fbgemm) uses scale 0.1, "
                      "zero_point 0")
    if not isinstance(zp, numbers.Integral):
        if zp != round(zp):
            return (float(scale), float(zp)), ""
        return None, (f"zero_point is the float {zp}; the zero point is a grid integer, return it "
                      "as a Python int (int(round(...)))")
    return (float(scale), int(zp)), ""


def _dynamic_raised_hint(args: tuple, e: Exception) -> str:
    """A hint for a qparams(x, reduce_range) that raised: most often the all-zero batch."""
    if isinstance(e, NotImplementedError):
        return ""
    if isinstance(e, ZeroDivisionError):
        return ("a zero-width range (all values 0) gives scale 0; PyTorch (fbgemm) uses "
                "scale = 0.1, zero_point = 0 instead of dividing by it")
    return "see the formula in the exercise"


#: where the expected qparams come from: torch's own function on fbgemm, or (a machine without
#: fbgemm: ARM, whose qnnpack ignores reduce_range) qlab's copy of fbgemm's rule, tested equal to it
REFERENCE = ("torch._choose_qparams_per_tensor" if PARITY_ENGINE
             else "fbgemm's rule, as qlab.nn.dynamic.dynamic_qparams computes it")


def _fbgemm_qparams(x: torch.Tensor, reduce_range: bool) -> tuple[float, int]:
    """(scale, zero_point) fbgemm's dynamic quantization chooses for x."""
    if PARITY_ENGINE is None:
        qp = dynamic_qparams(float(x.min()), float(x.max()), reduce_range)
        return float(qp.scale), int(qp.zero_point)
    with engine(PARITY_ENGINE):
        s, zp = torch._choose_qparams_per_tensor(x, reduce_range)
    return round_to_float32(s), int(zp)


@checker("a pair (scale, zero_point): a Python float and a Python int", hint_if_raised=_dynamic_raised_hint)
def check_dynamic_qparams(student: Student) -> bool:
    """Check a student's per-batch activation qparams against PyTorch's dynamic quantization.

    fn(x, reduce_range) must return (scale: float, zero_point: int) for x on uint8, the grid
    0..255 (0..127 with reduce_range), as torch._choose_qparams_per_tensor (fbgemm) chooses:

        min, max   = min(x.min(), 0), max(x.max(), 0)       (the range always holds 0)
        scale      = (max - min) / (qmax - qmin)
        zero_point = clamp(round(qmin - min / scale), qmin, qmax)
        fbgemm's two special cases: scale 0 -> scale 0.1, zero_point 0;
                                    scale < 6.1e-5 -> scale 6.1e-5, same zero_point

    The scale must match in float32 (to 1e-6 relative: float32 or float64 arithmetic both pass),
    the zero point exactly. Prints which case failed, expected vs got and a hint.
    """
    name = student.name
    cases = _dynamic_cases()
    for case, x in cases:
        for reduce_range in (True, False):
            where = f"case '{case}', reduce_range={reduce_range}"
            expected = _fbgemm_qparams(x, reduce_range)
            got, problem = _as_qparams(student(where, x.clone(), reduce_range))
            if got is None:
                return verdict(False, name, f"{where}: {problem}")
            scale, z = got
            if not (math.isclose(scale, expected[0], rel_tol=1e-6) and z == expected[1]):
                return verdict(False, name, (
                    f"{where} (x from {x.min().item():.6g} to {x.max().item():.6g}):\n"
                    f"   expected scale = {expected[0]:.8g}, zero_point = {expected[1]} "
                    f"({REFERENCE}), got scale = {scale:.8g}, "
                    f"zero_point = {z}.\n"
                    f"   Hint: {_dynamic_hint(x, reduce_range, scale, z, expected)}"
                ))
    return verdict(True, name, (
        f"all {len(cases)} cases match torch's dynamic qparams with and without reduce_range "
        "(one-sided ranges, a constant, zeros, a tiny range)"
    ))
