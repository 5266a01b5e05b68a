"""Lesson 01, the self-checks of its exercises."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import qlab
from qlab.lab.kit.check import Student, checker, describe, is_number, verdict
from qlab.lab.kit.torch_ao import quiet
from qlab.qparams import EPS, QParams


@dataclass
class _Case:
    name: str
    x: torch.Tensor
    qp: QParams
    hint: str


def _qp(scale: float, zero_point: int, qdtype: qlab.QDType) -> QParams:
    return QParams(
        torch.tensor(scale, dtype=torch.float32), torch.tensor(zero_point, dtype=torch.int64),
        qdtype, qdtype.qmin, qdtype.qmax,
    )


def _quantize_cases() -> list[_Case]:
    g = torch.Generator().manual_seed(0)
    ties = (torch.arange(-6, 6, dtype=torch.float32) + 0.5) * 0.25  # x / scale = k + 0.5
    near_ties = (torch.arange(-127, 128, dtype=torch.float32) + 0.5) * torch.tensor(0.3)
    return [
        _Case(
            "uint8 affine, values inside the range",
            torch.rand(64, generator=g) * 3 - 1,
            qlab.qparams_from_range(-1.0, 2.0, qlab.uint8),
            "q = round(x * (1/scale)) + zero_point, then clamp to [qp.qmin, qp.qmax]",
        ),
        _Case(
            "int8 symmetric, a 4x8 weight-like matrix",
            torch.randn(4, 8, generator=g) * 0.2,
            qlab.qparams_from_range(-0.5, 0.5, qlab.int8, symmetric=True),
            "keep the input's shape; zero_point is 0 here",
        ),
        _Case(
            "exact ties: x / scale = k + 0.5",
            ties,
            _qp(0.25, 3, qlab.uint8),
            "round half to even, as PyTorch: torch.round(2.5) = 2, torch.round(3.5) = 4. "
            "floor(v + 0.5) and Python's int(v + 0.5) round half up and disagree",
        ),
        _Case(
            "values outside the range (must clamp)",
            torch.tensor([-10.0, -1.5, -1.0, 0.0, 1.0, 2.0, 2.5, 10.0]),
            qlab.qparams_from_range(-1.0, 2.0, qlab.uint8),
            "clamp the result to [qp.qmin, qp.qmax] after adding the zero point",
        ),
        _Case(
            "scale 0.3, x near ties: x * (1/scale) vs x / scale",
            near_ties,
            _qp(0.3, 0, qlab.int8),
            "PyTorch multiplies by the inverse, x * (1.0 / scale), in float32; x / scale "
            "differs in the last bit and can round the other way near a tie",
        ),
        _Case(
            "4-bit signed grid [-8, 7]",
            torch.randn(32, generator=g),
            qlab.qparams_from_range(-2.0, 2.0, qlab.int4, symmetric=True),
            "use qp.qmin and qp.qmax, not 0 and 255: the grid depends on the bit width",
        ),
    ]


def _torch_reference(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """The same integers from PyTorch's own kernels (int64)."""
    scale, zp = float(qp.scale), int(qp.zero_point)
    with quiet():
        if (qp.qmin, qp.qmax) in ((0, 255), (-128, 127)):
            dtype = torch.quint8 if qp.qmin == 0 else torch.qint8
            return torch.quantize_per_tensor(x, scale, zp, dtype).int_repr().to(torch.int64)
        y = torch.fake_quantize_per_tensor_affine(x, scale, zp, qp.qmin, qp.qmax)
        return torch.round(y * (1.0 / qp.scale)).to(torch.int64) + zp


def _as_codes(got, like: torch.Tensor, qp: QParams) -> tuple[torch.Tensor | None, str]:
    """The student's result as int64 codes, or None and what is wrong with it."""
    if not isinstance(got, torch.Tensor):
        return None, f"it returned {type(got).__name__}, not a torch.Tensor"
    if got.shape != like.shape:
        return None, f"it returned shape {tuple(got.shape)}, expected {tuple(like.shape)}"
    if got.dtype == torch.bool or got.dtype.is_complex:
        return None, (f"it returned {describe(got)}; the codes are integers: return an integer "
                      "tensor that holds the grid (e.g. torch.int32) or whole-number floats")
    if not got.is_floating_point():
        info = torch.iinfo(got.dtype)
        if info.min > qp.qmin or info.max < qp.qmax:
            return None, (
                f"it returned {got.dtype}, which holds {info.min}..{info.max}, not the grid "
                f"[{qp.qmin}, {qp.qmax}]: the codes wrap around when stored (-1 becomes 255 in "
                "torch.uint8, 255 becomes -1 in torch.int8). Clamping was right; store the codes in "
                "a dtype that holds the grid, e.g. torch.int32, or return them unconverted"
            )
    if got.is_floating_point():
        if not torch.isfinite(got).all():
            return None, f"it returned NaN or Inf; codes are whole numbers in the grid [{qp.qmin}, {qp.qmax}]"
        if (got != torch.round(got)).any():
            i = int((got != torch.round(got)).nonzero()[0, 0]) if got.dim() else 0
            v = got.flatten()[i].item()
            return None, f"it returned non-integer codes (e.g. {v:g}); did you forget to round?"
    return got.to(torch.int64), ""


def _diagnose(x, qp: QParams, expected, got, case: _Case) -> str:
    """The most likely mistake, from how the wrong values differ from the right ones."""
    zp = int(qp.zero_point)
    if ((got < qp.qmin) | (got > qp.qmax)).any():
        return (f"some codes are outside the grid [{qp.qmin}, {qp.qmax}]: clamp to "
                "[qp.qmin, qp.qmax] (the grid depends on bits and sign; don't hard-code 0..255)")
    no_zp = torch.clamp(torch.round(x * (1.0 / qp.scale)), qp.qmin, qp.qmax).to(torch.int64)
    if zp != 0 and torch.equal(got, no_zp):
        return "the zero point is missing: add qp.zero_point after rounding, before clamping"
    divided = torch.clamp(torch.round(x / qp.scale) + zp, qp.qmin, qp.qmax).to(torch.int64)
    if torch.equal(got, divided):
        return ("you divide by scale; PyTorch multiplies by the inverse, x * (1.0 / scale), "
                "in float32. The two differ in the last bit and can round the other way "
                "near a tie")
    v = x * (1.0 / qp.scale)
    wrong = got != expected
    if (v - torch.floor(v) == 0.5)[wrong].all():
        return ("values exactly halfway between two grid points round the wrong way: "
                "round half to even, as torch.round does (2.5 -> 2, 3.5 -> 4)")
    return case.hint


@checker("the integer codes clamp(round(x * (1/scale)) + zero_point, qmin, qmax), a tensor shaped like x")
def check_quantize(student: Student) -> bool:
    """Check a student's quantize(x, qp) -> integer codes against qlab and torch.

    fn gets a float tensor x and QParams qp (qp.scale, qp.zero_point, qp.qmin, qp.qmax)
    and must return q = clamp(round(x * (1/scale)) + zero_point, qmin, qmax), bit-exact.
    Prints which case failed with expected vs got and a hint; returns True if all pass.
    """
    name = student.name
    cases = _quantize_cases()
    for case in cases:
        x, qp = case.x, case.qp
        expected = qlab.quantize(x, qp).to(torch.int64)
        reference = _torch_reference(x, qp)
        assert torch.equal(expected, reference), f"qlab and torch disagree on {case.name}"
        got, problem = _as_codes(student(f"case '{case.name}'", x.clone(), qp), expected, qp)
        if got is None:
            return verdict(False, name, f"case '{case.name}': {problem}")
        if not torch.equal(got, expected):
            i = int((got != expected).flatten().nonzero()[0, 0])
            xi = x.flatten()[i].item()
            ratio = (x.flatten()[i] * (1.0 / qp.scale)).item()
            return verdict(False, name, (
                f"case '{case.name}' failed at x = {xi:.8g} "
                f"(scale = {qp.scale.item():.6g}, zero_point = {int(qp.zero_point)}, "
                f"x * (1/scale) = {ratio:.8g}, grid [{qp.qmin}, {qp.qmax}]):\n"
                f"   expected q = {expected.flatten()[i].item()} (qlab.quantize and torch agree), "
                f"got {got.flatten()[i].item()}; "
                f"{int((got != expected).sum())} of {got.numel()} codes differ.\n"
                f"   Hint: {_diagnose(x, qp, expected, got, case)}"
            ))
    return verdict(True, name, (
        f"all {len(cases)} cases match qlab.quantize and PyTorch's kernels bit for bit "
        "(ties, clamping, 1/scale, 4-bit grid)"
    ))


def _qparams_cases() -> list[tuple[str, float, float, int, int, bool]]:
    """(name, x_min, x_max, qmin, qmax, symmetric); every x is a float32 value."""
    return [
        ("uint8 affine, mixed signs [-1, 2]", -1.0, 2.0, 0, 255, False),
        ("uint8 affine, all positive [0.5, 6] (a ReLU output)", 0.5, 6.0, 0, 255, False),
        ("uint8 affine, all negative [-4, -0.25]", -4.0, -0.25, 0, 255, False),
        ("int8 symmetric [-0.9, 0.4]", -0.9, 0.4, -128, 127, True),
        ("int8 symmetric, all positive [0.2, 2]", 0.2, 2.0, -128, 127, True),
        ("uint8 affine, a zero point tie: -x_min / scale = 2.5", -0.009765625, 0.986328125, 0, 255, False),
        ("uint8 affine [-0.7, 3.3], where float32 and float64 arithmetic differ", -0.7, 3.3, 0, 255, False),
        ("4-bit affine grid [0, 15], range [-1, 2]", -1.0, 2.0, 0, 15, False),
        ("4-bit symmetric grid [-8, 7], range [-2, 1]", -2.0, 1.0, -8, 7, True),
        ("a zero-width range [0, 0], uint8 affine", 0.0, 0.0, 0, 255, False),
        ("a zero-width range [0, 0], int8 symmetric", 0.0, 0.0, -128, 127, True),
    ]


def _qparams_reference(x_min: torch.Tensor, x_max: torch.Tensor, qmin: int, qmax: int,
                       symmetric: bool) -> tuple[float, int]:
    """(scale, zero_point) from qlab, asserted equal to torch.ao's MinMaxObserver."""
    from torch.ao.quantization.observer import MinMaxObserver

    qdtype = qlab.qdtype(bits=(qmax - qmin + 1).bit_length() - 1, signed=qmin < 0)
    qp = qlab.qparams_from_range(x_min, x_max, qdtype, symmetric=symmetric)
    with quiet():
        obs = MinMaxObserver(
            dtype=torch.qint8 if qmin < 0 else torch.quint8, quant_min=qmin, quant_max=qmax,
            qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine,
        )
        obs(torch.stack([x_min, x_max]))
        t_scale, t_zp = obs.calculate_qparams()
    assert torch.equal(t_scale.reshape(()), qp.scale) and int(t_zp) == int(qp.zero_point), (
        f"qlab and torch disagree on [{x_min.item()}, {x_max.item()}]")
    return qp.scale.item(), int(qp.zero_point)


def _round_half_away(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def _wrong_range_qparams(x_min, x_max, qmin, qmax, symmetric) -> list[tuple[float, int | None, str]]:
    """(scale, zero_point or None for "any", hint) of the usual mistakes, computed in float32."""
    lo, hi = x_min, x_max
    lo0, hi0 = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    eps = torch.tensor(EPS)
    steps = qmax - qmin
    out: list[tuple[float, int | None, str]] = []

    def add(scale, zp, hint):
        scale = float(scale)
        if scale > 0 and math.isfinite(scale):
            out.append((scale, zp, hint))

    def zp_of(scale, low=lo0, rounding=torch.round, clamp=True):
        z = qmin - int(rounding(low / scale))
        return min(max(z, qmin), qmax) if clamp else z

    if symmetric:
        amax = torch.maximum(-lo0, hi0)
        add(torch.maximum(amax / qmax, eps), 0,
            f"PyTorch divides max|x| by (qmax - qmin) / 2 = {steps / 2:g}, not by qmax = {qmax}: its "
            f"grid [{qmin}, {qmax}] is lopsided by one level. Dividing by {qmax} is the rule of the "
            f"restricted grid [{-qmax}, {qmax}] that other libraries use")
        add(torch.maximum(amax / steps, eps), 0,
            "the symmetric grid covers [-max|x|, max|x|], a width of 2 * max|x|, over "
            "qmax - qmin steps: scale = max|x| / ((qmax - qmin) / 2)")
        add(torch.maximum((hi - lo) / 2 / (steps / 2), eps), 0,
            "symmetric uses max|x| = max(|x_min|, |x_max|), not half the width of [x_min, x_max]")
        affine = torch.maximum((hi0 - lo0) / steps, eps)
        add(affine, None,
            "symmetric means zero point 0 and a range of ±max|x|: scale = max|x| / ((qmax - qmin) / 2), "
            "not the affine (max - min) / (qmax - qmin)")
        if qmax - qmin != 255:
            add(torch.maximum(amax / 127.5, eps), None,
                "use the grid you are given: (qmax - qmin) / 2, not 127.5 (that is int8's grid only)")
        return out
    if (hi - lo) > 0:
        s = torch.maximum((hi - lo) / steps, eps)
        add(s, zp_of(s, low=lo),
            "include 0 in the range first: min = min(x_min, 0), max = max(x_max, 0). Then 0.0 "
            "is exactly the integer zero_point, and the zero point always lies on the grid")
        z = zp_of(s, low=lo, clamp=False)
        if not qmin <= z <= qmax:
            add(s, z, f"the zero point {z} lies outside the grid [{qmin}, {qmax}]: include 0 in the "
                      "range first (min = min(x_min, 0), max = max(x_max, 0)), then it always lies "
                      "on the grid; and clamp it to [qmin, qmax], as PyTorch does")
    if (hi0 - lo0) > 0:
        s = torch.maximum((hi0 - lo0) / (steps + 1), eps)
        add(s, zp_of(s), "divide by the number of steps, qmax - qmin, not by the number of "
                         "levels, qmax - qmin + 1")
        s = torch.maximum((hi0 - lo0) / steps, eps)
        add(s, qmin + int(torch.round(lo0 / s)),
            "the sign of the zero point: zero_point = qmin - round(min / scale); min <= 0, so the "
            "zero point is >= qmin")
        add(s, zp_of(s, rounding=torch.trunc), "int() truncates toward 0; round the zero point to "
                                               "the nearest integer (torch.round, half to even)")
        v = (lo0 / s).item()
        add(s, qmin - _round_half_away(v),
            "at an exact tie (min / scale = k + 0.5) PyTorch rounds half to even, as torch.round "
            "(and Python's round) do: -2.5 -> -2. floor(v + 0.5) or rounding half away from 0 "
            "gives the other integer")
        s64 = (max(x_max.item(), 0.0) - min(x_min.item(), 0.0)) / steps
        if float(torch.tensor(s64, dtype=torch.float32)) != s.item():
            add(torch.tensor(s64, dtype=torch.float32), None,
                "compute in float32, as PyTorch's observers do: here Python floats (float64) give "
                "a scale one float32 step away. Keep x_min and x_max as the float32 tensors you are "
                "given (don't call .item()), or round: torch.tensor(scale, dtype=torch.float32)")
        if qmax - qmin != 255:
            s8 = torch.maximum((hi0 - lo0) / 255, eps)
            add(s8, None, "use the grid you are given, qmax - qmin, not 255 (uint8's grid only)")
    return out


def _as_scale_zp(got) -> tuple[tuple[float, float] | None, str]:
    """The student's (scale, zero_point) as (float32 value, number), or None and what is wrong."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        hint = " (did you forget `return`?)" if got is None else ""
        return None, f"it returned {type(got).__name__}{hint}; return a pair (scale, zero_point)"
    values = []
    for what, v in zip(("scale", "zero_point"), got, strict=True):
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                return None, (f"it returned {describe(got)}: {what} is a tensor of shape {tuple(v.shape)}; "
                              "it is one number")
            v = v.item()
        if not is_number(v):
            return None, (f"it returned {describe(got)}: {what} is a {type(v).__name__}; return a number "
                          "or a 0-d tensor")
        values.append(v)
    scale, zp = values
    return (float(torch.tensor(float(scale), dtype=torch.float32)), zp), ""


def _qparams_hint(x_min, x_max, qmin, qmax, symmetric, scale, zp, expected) -> str:
    """The most likely mistake behind a wrong (scale, zero_point)."""
    exp_scale, exp_zp = expected
    if scale == 0 or not math.isfinite(scale) or not math.isfinite(zp):
        return ("a zero-width range (x_min = x_max = 0) has scale 0 by the formula; PyTorch keeps the "
                "scale at least eps = torch.finfo(torch.float32).eps (1.19e-07): "
                "scale = max(scale, eps), then the zero point from that scale")
    if float(torch.tensor(float(zp), dtype=torch.float32)) == exp_scale and scale == float(exp_zp):
        return "return (scale, zero_point) in that order"
    if zp != round(zp):
        return ("round the zero point to an integer: zero_point = qmin - round(min / scale) "
                "(torch.round, half to even)")
    wrong = _wrong_range_qparams(x_min, x_max, qmin, qmax, symmetric)
    for w_scale, w_zp, hint in wrong:
        if scale == w_scale and (w_zp is None or zp == w_zp):
            return hint
    if not qmin <= zp <= qmax:
        return (f"the zero point {zp:g} lies outside the grid [{qmin}, {qmax}]: clamp it to "
                "[qmin, qmax]. With the range widened to include 0 first, it always lies inside")
    if symmetric and zp != 0 and scale == exp_scale:
        return "a symmetric signed grid has zero point 0"
    if x_min.item() == x_max.item() == 0.0 and scale < exp_scale:
        return ("a zero-width range needs the floor on the scale: scale = max(scale, eps) with "
                "eps = torch.finfo(torch.float32).eps")
    for w_scale, _, hint in wrong:
        if scale == w_scale and scale != exp_scale:
            return hint
    if scale == exp_scale:
        return ("the scale is right; zero_point = clamp(qmin - round(min / scale), qmin, qmax) with "
                "min = min(x_min, 0)" if not symmetric else "the scale is right; the zero point is 0")
    if symmetric:
        return "scale = max(|x_min|, |x_max|) / ((qmax - qmin) / 2), at least eps; zero point 0"
    return ("scale = (max - min) / (qmax - qmin) over the range widened to include 0, at least eps; "
            "zero_point = clamp(qmin - round(min / scale), qmin, qmax)")


def _qparams_raised_hint(args: tuple, e: Exception) -> str:
    """A hint for a qparams(x_min, x_max, ...) that raised: most often the zero-width range."""
    if isinstance(e, NotImplementedError):
        return ""
    if float(args[0]) == float(args[1]) == 0.0 or isinstance(e, ZeroDivisionError):
        return ("a zero-width range (x_min = x_max = 0) gives scale 0, and min / scale is then "
                "0 / 0 = NaN; keep the scale at least eps = torch.finfo(torch.float32).eps "
                "(scale = max(scale, eps)) before computing the zero point")
    return "see the formulas in section 2"


@checker("a pair (scale, zero_point): two numbers or 0-d tensors", hint_if_raised=_qparams_raised_hint)
def check_qparams(student: Student) -> bool:
    """Check a student's qparams(x_min, x_max, qmin, qmax, symmetric) -> (scale, zero_point).

    x_min, x_max are 0-d float32 tensors (what w.min() and w.max() give); the grid is
    [qmin, qmax]. It must return what qlab.qparams_from_range and torch.ao's MinMaxObserver
    compute, in float32:

        min, max = min(x_min, 0), max(x_max, 0)                       (0 is always in range)
        affine:    scale = max((max - min) / (qmax - qmin), eps)
                   zero_point = clamp(qmin - round(min / scale), qmin, qmax)
        symmetric: scale = max(max(-min, max) / ((qmax - qmin) / 2), eps),  zero_point = 0
        eps = torch.finfo(torch.float32).eps;  round = half to even (torch.round)

    The scale must match in float32 bit for bit (a float64 result is rounded to float32 first),
    the zero point exactly. Prints which case failed, expected vs got and a hint.
    """
    name = student.name
    cases = _qparams_cases()
    for case, lo, hi, qmin, qmax, symmetric in cases:
        x_min, x_max = torch.tensor(lo), torch.tensor(hi)
        expected = _qparams_reference(x_min, x_max, qmin, qmax, symmetric)
        where = f"case '{case}' (x_min={lo:g}, x_max={hi:g}, grid [{qmin}, {qmax}], symmetric={symmetric})"
        got, problem = _as_scale_zp(student(where, x_min.clone(), x_max.clone(), qmin, qmax, symmetric))
        if got is None:
            return verdict(False, name, f"{where}: {problem}")
        scale, zp = got
        if not (scale == expected[0] and zp == expected[1]):
            return verdict(False, name, (
                f"{where}:\n   expected scale = {expected[0]:.9g}, zero_point = {expected[1]} "
                f"(qlab.qparams_from_range and torch's MinMaxObserver agree), got scale = "
                f"{scale:.9g}, zero_point = {zp}.\n"
                f"   Hint: {_qparams_hint(x_min, x_max, qmin, qmax, symmetric, scale, zp, expected)}"
            ))
    return verdict(True, name, (
        f"all {len(cases)} cases match qlab.qparams_from_range and torch's MinMaxObserver bit for bit "
        "(one-sided ranges, symmetric, a zero-point tie, float32, 4-bit grids, a zero-width range)"
    ))
