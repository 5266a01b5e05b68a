"""Self-checks for the lesson exercises.

A check runs the student's function on a few small cases, compares it with qlab and with
PyTorch, prints either a one-line success or which input failed, what was expected, what
came back and a hint, and returns True or False. It never raises for a wrong answer, so a
lesson keeps running.

One section per lesson; add yours at the end.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

import qlab
from qlab.qparams import QParams


def _error(e: Exception) -> str:
    """'ValueError: message', or just the type when the message is empty (a bare raise)."""
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _report(ok: bool, name: str, message: str) -> bool:
    print(("✅ " if ok else "❌ ") + f"{name}: {message}")
    return ok


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's deprecation warnings for quantized tensors (our reference)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.ao")
        yield


# ---------------------------------------------------------------------------------------
# Lesson 01: quantization math
# ---------------------------------------------------------------------------------------


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
    with _quiet():
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
    if not got.is_floating_point() and not got.dtype.is_complex and got.dtype != torch.bool:
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
            return None, "it returned NaN or Inf"
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


def check_quantize(fn: Callable[[torch.Tensor, QParams], torch.Tensor]) -> bool:
    """Check a student's quantize(x, qp) -> integer codes against qlab and torch.

    fn gets a float tensor x and QParams qp (qp.scale, qp.zero_point, qp.qmin, qp.qmax)
    and must return q = clamp(round(x * (1/scale)) + zero_point, qmin, qmax), bit-exact.
    Prints which case failed with expected vs got and a hint; returns True if all pass.
    """
    name = getattr(fn, "__name__", "your function")
    cases = _quantize_cases()
    for case in cases:
        x, qp = case.x, case.qp
        expected = qlab.quantize(x, qp).to(torch.int64)
        reference = _torch_reference(x, qp)
        assert torch.equal(expected, reference), f"qlab and torch disagree on {case.name}"
        try:
            got = fn(x.clone(), qp)
        except Exception as e:  # a student's bug, reported as a hint rather than a traceback
            return _report(False, name, f"case '{case.name}' raised {type(e).__name__}: {e}")
        got, problem = _as_codes(got, expected, qp)
        if got is None:
            return _report(False, name, f"case '{case.name}': {problem}")
        if not torch.equal(got, expected):
            i = int((got != expected).flatten().nonzero()[0, 0])
            xi = x.flatten()[i].item()
            ratio = (x.flatten()[i] * (1.0 / qp.scale)).item()
            return _report(False, name, (
                f"case '{case.name}' failed at x = {xi:.8g} "
                f"(scale = {qp.scale.item():.6g}, zero_point = {int(qp.zero_point)}, "
                f"x * (1/scale) = {ratio:.8g}, grid [{qp.qmin}, {qp.qmax}]):\n"
                f"   expected q = {expected.flatten()[i].item()} (qlab.quantize and torch agree), "
                f"got {got.flatten()[i].item()}; "
                f"{int((got != expected).sum())} of {got.numel()} codes differ.\n"
                f"   Hint: {_diagnose(x, qp, expected, got, case)}"
            ))
    return _report(True, name, (
        f"all {len(cases)} cases match qlab.quantize and PyTorch's kernels bit for bit "
        "(ties, clamping, 1/scale, 4-bit grid)"
    ))


# ---------------------------------------------------------------------------------------
# Lesson 01: deriving scale and zero point
# ---------------------------------------------------------------------------------------

_EPS = torch.finfo(torch.float32).eps


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
    with _quiet():
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
    eps = torch.tensor(_EPS)
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
                return None, f"{what} is a tensor of shape {tuple(v.shape)}; it is one number"
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None, f"{what} is a {type(v).__name__}; return a number or a 0-d tensor"
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


def check_qparams(fn: Callable[[torch.Tensor, torch.Tensor, int, int, bool], tuple]) -> bool:
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
    name = getattr(fn, "__name__", "your function")
    cases = _qparams_cases()
    for case, lo, hi, qmin, qmax, symmetric in cases:
        x_min, x_max = torch.tensor(lo), torch.tensor(hi)
        expected = _qparams_reference(x_min, x_max, qmin, qmax, symmetric)
        where = f"case '{case}' (x_min={lo:g}, x_max={hi:g}, grid [{qmin}, {qmax}], symmetric={symmetric})"
        try:
            got = fn(x_min.clone(), x_max.clone(), qmin, qmax, symmetric)
        except NotImplementedError as e:
            return _report(False, name, f"{where}: raised NotImplementedError ({e}): replace the "
                                        "`raise` with your code")
        except Exception as e:  # a student's bug, reported as a hint rather than a traceback
            zero_width = lo == hi == 0.0
            hint = ("a zero-width range (x_min = x_max = 0) gives scale 0, and min / scale is then "
                    "0 / 0 = NaN; keep the scale at least eps = torch.finfo(torch.float32).eps "
                    "(scale = max(scale, eps)) before computing the zero point"
                    if zero_width or isinstance(e, ZeroDivisionError) else "see the formulas in section 2")
            return _report(False, name, f"{where}: raised {_error(e)}\n   Hint: {hint}")
        got, problem = _as_scale_zp(got)
        if got is None:
            return _report(False, name, f"{where}: {problem}")
        scale, zp = got
        if not (scale == expected[0] and zp == expected[1]):
            return _report(False, name, (
                f"{where}:\n   expected scale = {expected[0]:.9g}, zero_point = {expected[1]} "
                f"(qlab.qparams_from_range and torch's MinMaxObserver agree), got scale = "
                f"{scale:.9g}, zero_point = {zp}.\n"
                f"   Hint: {_qparams_hint(x_min, x_max, qmin, qmax, symmetric, scale, zp, expected)}"
            ))
    return _report(True, name, (
        f"all {len(cases)} cases match qlab.qparams_from_range and torch's MinMaxObserver bit for bit "
        "(one-sided ranges, symmetric, a zero-point tie, float32, 4-bit grids, a zero-width range)"
    ))


# ---------------------------------------------------------------------------------------
# Lesson 02: observers and calibration
# ---------------------------------------------------------------------------------------


def _as_value(got) -> tuple[torch.Tensor | None, str]:
    """The student's running value as a 0-d float tensor, or None and what is wrong with it."""
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        return torch.tensor(float(got)), ""
    if not isinstance(got, torch.Tensor):
        hint = " (did you forget `return`?)" if got is None else ""
        return None, f"it returned {type(got).__name__}{hint}, not a number or a 0-d torch.Tensor"
    if got.numel() != 1:
        return None, (f"it returned a tensor of shape {tuple(got.shape)}; the running min (or max) "
                      "is one number: combine the two scalars you are given, nothing more")
    return got.reshape(()).float(), ""


def _moving_average_hint(got: torch.Tensor, running: torch.Tensor, batch: torch.Tensor, c: float) -> str:
    """The most likely mistake, from which wrong update the student's value matches."""
    mistakes = [
        (batch, "it returns the batch's value, so the past is forgotten (that is c = 1); "
                "keep part of the running value: running + c * (batch_value - running)"),
        (running, "the running value never moves; add c * (batch_value - running) to it"),
        (running + c * (running - batch), "it moves away from the batch's value: the step is "
                                          "c * (batch_value - running), not c * (running - batch_value)"),
        ((running + batch) / 2, "that is an average with weight 1/2 whatever c is; "
                                "use c: running + c * (batch_value - running)"),
    ]
    for wrong, hint in mistakes:
        if torch.allclose(got, wrong.float(), rtol=1e-5, atol=1e-6):
            return hint
    return ("move the running value a fraction c of the way towards the batch's "
            "value: running + c * (batch_value - running). c = 1 forgets the past.")


def check_moving_average(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check a student's moving-average update against qlab's MovingAverageMinMaxObserver.

    fn(running, batch_value, c) must return the new running value
    running + c * (batch_value - running). It is applied to the min and the max of every
    batch after the first (the first batch sets them); the results must match the observer's
    (and so torch.ao's) min and max to float32 rounding (rtol 1e-5), for c = 0.01, 0.3, 1.
    """
    from qlab.observers import MovingAverageMinMaxObserver

    name = getattr(fn, "__name__", "your function")
    g = torch.Generator().manual_seed(2)
    seq = [torch.randn(64, generator=g) * (1 + i % 3) + 0.5 * i for i in range(6)]
    for c in (0.01, 0.3, 1.0):
        obs = MovingAverageMinMaxObserver(averaging_constant=c)
        lo = hi = None
        for i, x in enumerate(seq):
            obs(x)
            if i == 0:
                lo, hi = x.min(), x.max()
                continue
            running, batch = (lo, hi), (x.min(), x.max())
            try:
                got = fn(running[0], batch[0], c), fn(running[1], batch[1], c)
            except Exception as e:  # a student's bug, reported as a hint
                return _report(False, name, f"c = {c}, batch {i}: raised {type(e).__name__}: {e}")
            (lo, problem_lo), (hi, problem_hi) = _as_value(got[0]), _as_value(got[1])
            if lo is None or hi is None:
                return _report(False, name, f"c = {c}, batch {i}: {problem_lo or problem_hi}")
            expected = (obs.min_val, obs.max_val)
            wrong = [k for k, v in enumerate((lo, hi))
                     if not torch.allclose(v, expected[k], rtol=1e-5, atol=1e-6)]  # fmt: skip
            if wrong:
                k = wrong[0]
                return _report(False, name, (
                    f"c = {c}, after batch {i}: expected min, max = {obs.min_val.item():.6g}, "
                    f"{obs.max_val.item():.6g}, got {float(lo):.6g}, {float(hi):.6g}.\n"
                    f"   Hint: {_moving_average_hint((lo, hi)[k], running[k], batch[k], c)}"
                ))
    return _report(True, name, (
        f"min and max match MovingAverageMinMaxObserver over {len(seq)} batches "
        "for c = 0.01, 0.3 and 1.0"
    ))


# ---------------------------------------------------------------------------------------
# Lesson 02: the percentile observer's range rule
# ---------------------------------------------------------------------------------------


@dataclass
class _PercentileCase:
    name: str
    x: torch.Tensor  # what the observer saw (one batch)
    p: float
    bins: int


def _percentile_cases() -> list[_PercentileCase]:
    g = torch.Generator().manual_seed(3)
    relu = torch.relu(torch.randn(40_000, generator=g)) * torch.rand(40_000, generator=g).pow(2) * 4
    skewed = torch.cat([torch.randn(20_000, generator=g), torch.empty(2_000).exponential_(0.4, generator=g)])
    # 16 bins over [0, 16): 20 values; 0.75 * 20 = 15 values lie in bins 0..6, then three empty bins
    boundary = torch.tensor([0.5] * 3 + [1.5] * 2 + [2.5] * 4 + [3.5] * 2 + [5.5] * 3 + [6.5]
                            + [10.5] * 2 + [13.5] + [15.5] * 2)
    few = torch.tensor([0.2, 0.9, 1.1, 1.4, 2.6, 3.3, 3.9, 5.0, 6.2, 8.0])
    return [
        _PercentileCase("ReLU activations (a spike of zeros, a long right tail), p = 99.99",
                        relu, 99.99, 2048),
        _PercentileCase("signed values with a long right tail, p = 99", skewed, 99.0, 2048),
        _PercentileCase("p = 100: nothing is clipped", skewed, 100.0, 2048),
        _PercentileCase("10 values in 16 bins, p = 90: the target falls inside a bin", few, 90.0, 16),
        _PercentileCase("the target count is reached exactly at the end of a bin, empty bins follow, p = 75",
                        boundary, 75.0, 16),
    ]


def _quantile_variant(hist: torch.Tensor, lo: float, hi: float, q: float, *, first: str = "reaches",
                      inside: str = "interpolate", width_div: int = 0, from_lo: bool = True) -> float:
    """qlab's histogram quantile (qlab.observers._quantile), or one typical mistake in it:
    first = "passes" (the first bin whose running count passes the target: off by one at a bin's end),
    inside = "left" / "right" / "centre" (no interpolation) or "of total" (the fraction inside
    the bin measured against the total count), width_div = -1 (bin width (hi - lo) / (bins - 1)),
    from_lo = False (the position measured from 0, not from lo)."""
    h = hist.double()
    cum = torch.cumsum(h, 0)
    total = cum[-1].item()
    target = q * total
    k = int(torch.searchsorted(cum, torch.tensor(target, dtype=torch.float64), right=first == "passes"))
    k = min(k, len(h) - 1)
    before = cum[k - 1].item() if k > 0 else 0.0
    if inside == "of total":
        frac = (target - before) / total
    else:
        frac = (target - before) / h[k].item() if h[k] > 0 else 0.0
    frac = {"left": 0.0, "right": 1.0, "centre": 0.5}.get(inside, min(max(frac, 0.0), 1.0))
    width = (hi - lo) / (len(h) + width_div)
    return (lo if from_lo else 0.0) + (k + frac) * width


def _percentile_mistakes(hist, lo, hi, p) -> list[tuple[tuple[float, float], str]]:
    """(the range a typical mistake returns, its hint), most specific first."""
    def rng(q_lo, q_hi, **kw):
        return _quantile_variant(hist, lo, hi, q_lo, **kw), _quantile_variant(hist, lo, hi, q_hi, **kw)

    right = _quantile_variant(hist, lo, hi, p / 100)
    left = _quantile_variant(hist, lo, hi, 1 - p / 100)
    interpolate = ("values inside a bin are taken as evenly spread: go a fraction (target - count before "
                   "the bin) / (the bin's count) of the way into bin k, not to its left edge, centre or "
                   "right edge")
    return [
        ((lo, hi), "that is [min, max]: nothing was clipped. p is a percentage: the fractions are "
                   "q = p / 100 (0.9999 for 99.99) and 1 - q; p itself, 99.99, is no fraction"),
        (rng(1 - p / 10000, p / 10000), "p / 100 was taken twice (or 0.9999 used as a percentage): "
                                        "q = p / 100 = 0.9999 for p = 99.99"),
        ((-right, right), "the lower end is not minus the upper one: the percentile observer clips each end "
                          "of x on its own (that would be a percentile of |x|, a symmetric range); the lower "
                          "end is the (100 - p)-th percentile of x"),
        ((-max(abs(lo), abs(hi)), max(abs(lo), abs(hi))),
         "that is ±max|x|: clip each end, the lower end at the (100 - p)-th percentile, "
         "the upper at the p-th"),
        ((lo, right), "only the top was clipped: the lower end is the (100 - p)-th percentile, not the min"),
        ((left, hi), "only the bottom was clipped: the upper end is the p-th percentile, not the max"),
        ((right, right), "both ends use q = p / 100; the lower end uses 1 - q"),
        ((right, left), "the two ends are swapped: return (lower, upper) = ((100 - p)-th, p-th percentile)"),
        (rng(1 - p / 100, p / 100, first="passes"),
         "off by one bin: take the FIRST bin whose running count reaches the target (count >= q * total, "
         "torch.searchsorted's default side), not the first that passes it"),
        (rng(1 - p / 100, p / 100, inside="left"), interpolate),
        (rng(1 - p / 100, p / 100, inside="right"), interpolate),
        (rng(1 - p / 100, p / 100, inside="centre"), interpolate),
        (rng(1 - p / 100, p / 100, inside="of total"),
         "the fraction inside bin k is (target - count before bin k) / (bin k's count), "
         "not / the total count"),
        (rng(1 - p / 100, p / 100, width_div=-1),
         "a bin is (hi - lo) / bins wide: `bins` bins span [lo, hi]"),
        (rng(1 - p / 100, p / 100, from_lo=False),
         "the histogram starts at lo: value = lo + (k + fraction) * width"),
    ]


def _as_range(got) -> tuple[tuple[float, float] | None, str]:
    """The student's (min, max) as two floats, or None and what is wrong with it."""
    if got is None:
        return None, "it returned None (did you forget `return`?); return (lower, upper)"
    if isinstance(got, torch.Tensor) and got.numel() == 2:
        got = got.flatten().tolist()
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return None, f"it returned {type(got).__name__}; return two numbers, (lower, upper)"
    out = []
    for v in got:
        if (isinstance(v, torch.Tensor) and v.numel() == 1) or getattr(v, "size", None) == 1:
            v = v.item()  # a 0-d tensor or a numpy number
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None, (f"it returned a {type(v).__name__} inside the pair; "
                          "return two numbers (or 0-d tensors)")
        out.append(float(v))
    if not all(math.isfinite(v) for v in out):
        return None, f"it returned {out}: NaN or Inf (an empty bin divided by its count of 0?)"
    return (out[0], out[1]), ""


def _percentile_setup(case: _PercentileCase) -> dict:
    """What the student's function gets for a case (hist, lo, hi, p) and what it must return."""
    from qlab.observers import PercentileObserver

    obs = PercentileObserver(percentile=case.p, bins=case.bins)
    obs(case.x)
    hist, lo, hi = obs.histogram.clone(), obs.min_val.item(), obs.max_val.item()
    width = (hi - lo) / case.bins
    tol = 1e-3 * width + 1e-6 * max(abs(lo), abs(hi))
    expected = tuple(v.item() for v in obs.calibrated_range())
    q = case.p / 100
    reference = (_quantile_variant(hist, lo, hi, 1 - q), _quantile_variant(hist, lo, hi, q))
    assert _same(expected, reference, tol), f"the reference is off in case {case.name}"
    return {"case": case, "hist": hist, "lo": lo, "hi": hi, "width": width, "tol": tol, "expected": expected}


def _same(a, b, tol) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _run_percentile(fn, setup) -> tuple[tuple[float, float] | None, str]:
    try:
        got = fn(setup["hist"].clone(), setup["lo"], setup["hi"], setup["case"].p)
    except Exception as e:  # a student's bug, reported as a hint rather than a traceback
        hint = " (replace the `raise` with your code)" if isinstance(e, NotImplementedError) else ""
        return None, f"raised {_error(e)}{hint}"
    return _as_range(got)


def _percentile_hint(fn, setups, failed) -> str:
    """The typical mistake whose result the student's matches in every case (and the right answer
    does not, in the case that failed), else a bound check, else the rule in words."""
    results = [(st, _run_percentile(fn, st)[0]) for st in setups]
    results = [(st, got) for st, got in results if got is not None]
    mistakes = [_percentile_mistakes(st["hist"], st["lo"], st["hi"], st["case"].p) for st, _ in results]
    failed_at = next(i for i, (st, _) in enumerate(results) if st is failed)
    for j, (_, hint) in enumerate(mistakes[failed_at]):
        wrong = mistakes[failed_at][j][0]
        if _same(wrong, failed["expected"], failed["tol"]):
            continue  # this mistake gives the right answer in the failed case: it does not explain it
        if all(_same(got, m[j][0], st["tol"]) for (st, got), m in zip(results, mistakes, strict=True)):
            return hint
    lo, hi, got = failed["lo"], failed["hi"], results[failed_at][1]
    if got[1] > hi + failed["tol"] or got[0] < lo - failed["tol"]:
        return (f"a percentile lies inside the data's range [{lo:.6g}, {hi:.6g}], and yours does not: is the "
                "fraction q = p / 100 (0.9999 for 99.99), and the fraction inside a bin kept in [0, 1]?")
    return ("the q-quantile is in the first bin k whose running count reaches q * total; inside it, go a "
            "fraction (q * total - count before bin k) / count of bin k of its width: "
            "lo + (k + fraction) * width")


def check_percentile_range(fn: Callable[[torch.Tensor, float, float, float], tuple[float, float]]) -> bool:
    """Check a student's percentile_range(hist, lo, hi, p) -> (lower, upper) against qlab's
    PercentileObserver(percentile=p).calibrated_range().

    hist: the observer's histogram (bins counts spread evenly over [lo, hi], lo = min and hi = max
    of the data); p: the percentile, e.g. 99.99. The rule: the q-quantile lies in the first bin
    whose running count reaches q * total, interpolated linearly inside it; lower end at
    q = 1 - p / 100, upper at q = p / 100. Must agree to 1/1000 of a bin width.
    """
    name = getattr(fn, "__name__", "your function")
    setups = [_percentile_setup(case) for case in _percentile_cases()]
    for st in setups:
        case, expected = st["case"], st["expected"]
        got, problem = _run_percentile(fn, st)
        if got is None:
            return _report(False, name, f"case '{case.name}': {problem}")
        if not _same(got, expected, st["tol"]):
            return _report(False, name, (
                f"case '{case.name}' ({case.bins} bins over [lo, hi] = [{st['lo']:.6g}, {st['hi']:.6g}], "
                f"bin width {st['width']:.4g}):\n"
                f"   expected (lower, upper) = ({expected[0]:.6g}, {expected[1]:.6g}) "
                f"(PercentileObserver(percentile={case.p:g})), got ({got[0]:.6g}, {got[1]:.6g}).\n"
                f"   Hint: {_percentile_hint(fn, setups, st)}"
            ))
    return _report(True, name, (
        f"all {len(setups)} cases match PercentileObserver's range (p = 99.99, 99, 100; a target inside "
        "a bin and one at a bin's end)"
    ))


# ---------------------------------------------------------------------------------------
# Lesson 04: static quantization, the requantization multiplier as integers
# ---------------------------------------------------------------------------------------


def _multiplier_cases() -> list[tuple[str, float]]:
    """(what the case tests, M): a typical layer, exact powers of two, rounding, M >= 1, the carry."""
    return [
        ("a typical conv layer, M = s_x s_w / s_out", 0.0123456789),
        ("M = 0.5 exactly, so q = 0.5 and M0 = 2**30", 0.5),
        ("q * 2**31 ends in .75", (2**30 + 0.75) / 2**31 * 2**-3),
        ("a tiny M (a wide output grid)", 3.1e-6),
        ("M >= 1 (a narrow output grid)", 3.75),
        ("q * 2**31 rounds up to 2**31", (1 - 2**-40) * 2**-4),
    ]


def _as_int(v) -> int | None:
    """v as a Python int if it is an integer (Python, numpy or a 1-element integer tensor), else None."""
    import numbers

    if isinstance(v, bool):
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point() and v.dtype != torch.bool:
        return int(v.item())
    return None


def _multiplier_hint(m: float, got: tuple[int, int], expected: tuple[int, int]) -> str:
    """The most likely mistake, from how the student's (M0, shift) differs from the right one."""
    import math

    (m0, shift), (e_m0, e_shift) = got, expected
    q, _ = math.frexp(m)
    if m0 == 2**31:
        return ("q rounded up to 1.0, so M0 = 2**31, which does not fit an int32: when that happens, "
                "halve M0 to 2**30 and take one from shift (M ≈ 1.0 * 2**e = 0.5 * 2**(e + 1))")
    if not 2**30 <= m0 < 2**31:
        return ("M0 must be normalised into [2**30, 2**31), so that it keeps 31 bits of M: first "
                "write M = q * 2**e with q in [0.5, 1) (q, e = math.frexp(M)), then M0 = round(q * 2**31)")
    if m0 == e_m0 and shift == -e_shift:
        return ("M0 is right but the shift has the wrong sign: shift is a right shift, "
                "M = M0 * 2**-31 * 2**-shift, so with M = q * 2**e it is shift = -e "
                "(negative, a left shift, when M >= 1)")
    if shift == e_shift and m0 == math.floor(q * 2**31):
        return ("round q * 2**31 to the nearest integer; int() and math.floor drop the fraction "
                "(truncation), which makes M0 up to one unit too small")
    return ("M0 * 2**-31 * 2**-shift must equal M as closely as 31 bits allow: "
            "q, e = math.frexp(M); M0 = round(q * 2**31); shift = -e")


def check_multiplier(fn: Callable[[float], tuple[int, int]]) -> bool:
    """Check a student's fn(M) -> (M0, shift) against qlab.integer.quantize_multiplier.

    M > 0 must be written as M = M0 * 2**-31 * 2**-shift with M0 an integer in [2**30, 2**31) (an
    int32 with 31 bits of M) and shift an integer (TFLite's QuantizeMultiplier). Prints which M
    failed, what was expected and a hint for the mistake; returns True if every case matches.
    """
    import math

    from qlab.integer import quantize_multiplier

    name = getattr(fn, "__name__", "your function")
    cases = _multiplier_cases()
    for what, m in cases:
        expected = quantize_multiplier(m)
        try:
            got = fn(m)
        except Exception as e:  # a student's bug, reported as a hint rather than a traceback
            hint = " (replace the `raise` with your code)" if isinstance(e, NotImplementedError) else ""
            return _report(False, name, f"M = {m!r} ({what}) raised {_error(e)}{hint}")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            extra = " (did you forget `return`?)" if got is None else ""
            return _report(False, name, f"M = {m!r}: it returned {type(got).__name__}{extra}; "
                                        "return a tuple of two integers (M0, shift)")
        m0, shift = _as_int(got[0]), _as_int(got[1])
        if m0 is None or shift is None:
            return _report(False, name, (
                f"M = {m!r}: it returned ({got[0]!r}, {got[1]!r}), types ({type(got[0]).__name__}, "
                f"{type(got[1]).__name__}); M0 and shift must be integers (M0 lives in an int32 "
                "register, shift counts bits): Python's round(x) returns an int (np.round and "
                "torch.round do not)"))
        if (m0, shift) != expected:
            try:
                stands_for = f"{math.ldexp(m0, -31 - shift):.10g}"
            except OverflowError:
                stands_for = "out of float range"
            return _report(False, name, (
                f"M = {m!r} ({what}): expected (M0, shift) = {expected}, got ({m0}, {shift}), which "
                f"stands for M0 * 2**-31 * 2**-shift = {stands_for}.\n"
                f"   Hint: {_multiplier_hint(m, (m0, shift), expected)}"))
    return _report(True, name, (
        f"all {len(cases)} cases match qlab.integer.quantize_multiplier (TFLite's QuantizeMultiplier), "
        "including M >= 1, rounding and the 2**31 carry"))


# ---------------------------------------------------------------------------------------
# Lesson 03: dynamic quantization
# ---------------------------------------------------------------------------------------

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


def _f32(v: float) -> float:
    return float(torch.tensor(v, dtype=torch.float32))


def _wrong_qparams(x: torch.Tensor, reduce_range: bool) -> list[tuple[float, int | float, str]]:
    """The (scale, zero_point) that the usual mistakes give for x, each with its hint."""
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    x_lo, x_hi = x.min().item(), x.max().item()
    qmax = 127 if reduce_range else 255
    out = []

    def add(scale, zp, hint):
        if scale > 0 and math.isfinite(scale):
            out.append((_f32(scale), zp, hint))

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
    if exp_scale == _f32(_SMALL_SCALE) and scale < exp_scale:
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
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        return None, f"scale is a {type(scale).__name__}; return it as a Python float"
    if isinstance(zp, bool) or not isinstance(zp, (int, float)):
        return None, f"zero_point is a {type(zp).__name__}; return it as a Python int"
    if not (math.isfinite(scale) and math.isfinite(zp)):
        return None, (f"it returned scale = {scale}, zero_point = {zp}: NaN or Inf. A zero-width "
                      "range (all values 0) must not divide by 0: PyTorch (fbgemm) uses scale 0.1, "
                      "zero_point 0")
    if isinstance(zp, float):
        if zp != round(zp):
            return (float(scale), zp), ""
        return None, (f"zero_point is the float {zp}; the zero point is a grid integer, return it "
                      "as a Python int (int(round(...)))")
    return (float(scale), int(zp)), ""


def check_dynamic_qparams(fn: Callable[[torch.Tensor, bool], tuple[float, int]]) -> bool:
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
    name = getattr(fn, "__name__", "your function")
    cases = _dynamic_cases()
    for case, x in cases:
        for reduce_range in (True, False):
            where = f"case '{case}', reduce_range={reduce_range}"
            s, zp = torch._choose_qparams_per_tensor(x, reduce_range)
            expected = (_f32(s), int(zp))
            try:
                got = fn(x.clone(), reduce_range)
            except NotImplementedError as e:
                return _report(False, name, f"{where}: raised NotImplementedError ({e}): replace "
                                            "the `raise` with your code")
            except Exception as e:  # a student's bug, reported as a hint rather than a traceback
                hint = ("a zero-width range (all values 0) gives scale 0; PyTorch (fbgemm) uses "
                        "scale = 0.1, zero_point = 0 instead of dividing by it"
                        if isinstance(e, ZeroDivisionError) else "see the formula in the exercise")
                return _report(False, name, f"{where}: raised {type(e).__name__}: {e}\n   Hint: {hint}")
            got, problem = _as_qparams(got)
            if got is None:
                return _report(False, name, f"{where}: {problem}")
            scale, z = got
            if not (math.isclose(scale, expected[0], rel_tol=1e-6) and z == expected[1]):
                return _report(False, name, (
                    f"{where} (x from {x.min().item():.6g} to {x.max().item():.6g}):\n"
                    f"   expected scale = {expected[0]:.8g}, zero_point = {expected[1]} "
                    f"(torch._choose_qparams_per_tensor), got scale = {scale:.8g}, "
                    f"zero_point = {z}.\n"
                    f"   Hint: {_dynamic_hint(x, reduce_range, scale, z, expected)}"
                ))
    return _report(True, name, (
        f"all {len(cases)} cases match torch's dynamic qparams with and without reduce_range "
        "(one-sided ranges, a constant, zeros, a tiny range)"
    ))


# ---------------------------------------------------------------------------------------
# Lesson 05: the straight-through estimator as a torch.autograd.Function
# ---------------------------------------------------------------------------------------


def _ste_cases() -> list[tuple[str, torch.Tensor, float, int, int, int]]:
    """(what the case tests, x, scale, zero point, qmin, qmax)."""
    ties = torch.tensor([-0.375, -0.125, 0.125, 0.375, 0.625, 1.125])  # x / 0.25 ends in .5 exactly
    edges = torch.tensor([-0.26, -0.24, 1.34, 1.36])  # codes -1, 0 | 15, 16 on [0, 15] with zp 2
    return [
        ("8-bit affine grid, values inside and outside it", torch.linspace(-3, 3, 61), 0.02, 100, 0, 255),
        ("4-bit signed symmetric grid (weights)", torch.linspace(-1.5, 1.5, 31), 0.125, 0, -8, 7),
        ("ties: x / scale ends in .5 (round half to even)", ties, 0.25, 3, 0, 15),
        ("the grid's edges: codes just inside and just outside", edges, 0.1, 2, 0, 15),
    ]


def _call_ste(fn, x, scale, zp, qmin, qmax):
    apply = getattr(fn, "apply", fn)
    return apply(x, scale, zp, qmin, qmax)


def _ste_hint(x, got_y, got_g, y, g, scale, zp, qmin, qmax) -> str:
    """The most likely mistake, from how the values or gradients differ from torch's."""
    if got_y is not None and not torch.equal(got_y, y):
        unclamped = (torch.round(x * (1.0 / scale)) + zp - zp) * scale
        if torch.allclose(got_y, unclamped):
            return "the forward pass must clamp the codes to [qmin, qmax] before dequantizing"
        if torch.allclose(got_y, torch.round(x / scale) * scale):
            return "the zero point: q = round(x / s) + z, then x_hat = (clamp(q) - z) * s"
        bad = (got_y - y).abs() > 1e-6
        if bool(bad.any()) and torch.allclose(got_y[bad], y[bad], atol=scale * 1.01):
            return ("a few values are one step off: torch rounds half to even (torch.round), at "
                    "x * (1 / scale), the inverse scale computed first")
        return "forward: x_hat = (clamp(round(x * (1/s)) + z, qmin, qmax) - z) * s"
    if got_g is None:
        return ("no gradient reached x: return it from backward, as the first of one value per "
                "forward input (grad, None, None, None, None)")
    if not got_g.any():
        return ("the gradient is 0 everywhere: that is round's true derivative, which is why QAT needs "
                "the straight-through estimator: pass grad_output through where the code is in the grid")
    if bool((got_g != 0).all()) and not bool((g != 0).all()):
        return ("the gradient must be clipped: 0 where the code was clamped to qmin or qmax (the value "
                "cannot move there), grad_output elsewhere")
    return ("the mask: grad_output where qmin <= round(x * (1/s)) + z <= qmax, 0 elsewhere (decide it "
            "on the rounded code, as torch does, not on x against the range)")


def _first_difference(x, got, expected) -> str:
    i = int((got != expected).nonzero()[0])
    return f" e.g. at x = {float(x[i]):.4g}: expected {float(expected[i]):.4g}, got {float(got[i]):.4g}"


def _run_student_ste(fn, x, scale, zp, qmin, qmax, upstream):
    """(values, gradient of x or None) of the student's function, or a message if it failed."""
    xs = x.clone().requires_grad_()
    got = _call_ste(fn, xs, scale, zp, qmin, qmax)
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else ""
        return (f"it returned {type(got).__name__}{shape}; return a float tensor shaped like x "
                f"{tuple(x.shape)}")
    if got.requires_grad:
        got.backward(upstream)
    return got.detach(), xs.grad


def check_ste(fn) -> bool:
    """Check a student's fake quantization with the straight-through estimator: a
    torch.autograd.Function (or a function) called as fn.apply(x, scale, zero_point, qmin, qmax),
    against torch.fake_quantize_per_tensor_affine: the values, and the gradient of x."""
    name = getattr(fn, "__name__", "your function")
    cases = _ste_cases()
    for what, x, scale, zp, qmin, qmax in cases:
        x_ref = x.clone().requires_grad_()
        y = torch.fake_quantize_per_tensor_affine(x_ref, scale, zp, qmin, qmax)
        upstream = torch.linspace(0.5, 1.5, x.numel())
        y.backward(upstream)
        y, g = y.detach(), x_ref.grad
        where = f"{what} (scale {scale}, zero point {zp}, grid [{qmin}, {qmax}])"
        try:
            result = _run_student_ste(fn, x, scale, zp, qmin, qmax, upstream)
        except Exception as e:  # a student's bug, reported as a hint rather than a traceback
            hint = " (replace the `raise` with your code)" if isinstance(e, NotImplementedError) else ""
            return _report(False, name, f"{what}: raised {_error(e)}{hint}")
        if isinstance(result, str):
            return _report(False, name, f"{where}: {result}")
        got_y, got_g = result
        if not torch.equal(got_y, y):
            hint = _ste_hint(x, got_y, got_g, y, g, scale, zp, qmin, qmax)
            return _report(False, name, f"{where}: the values differ from torch's"
                                        f"{_first_difference(x, got_y, y)}.\n   Hint: {hint}")
        if got_g is None or not torch.equal(got_g, g):
            detail = "" if got_g is None else _first_difference(x, got_g, g)
            hint = _ste_hint(x, None, got_g, y, g, scale, zp, qmin, qmax)
            return _report(False, name, f"{where}: the gradient of x differs from torch's{detail}."
                                        f"\n   Hint: {hint}")
    return _report(True, name, f"values and gradients equal torch.fake_quantize_per_tensor_affine's in all "
                               f"{len(cases)} cases, ties and the grid's edges included")


# ---------------------------------------------------------------------------------------
# Lesson 06: the workflow's decision
# ---------------------------------------------------------------------------------------


def _decision_row(method: str, loss: float, speedup: float, size: int) -> dict:
    return {"model": "case", "method": method, "quality": 0.99 - loss, "metric": "accuracy", "loss": loss,
            "size_bytes": size, "speedup": speedup, "baseline": "fp32 channels_last", "data": "",
            "seconds": 0.0, "note": ""}


def _decision_cases() -> list[tuple[str, list[dict], float]]:
    r = _decision_row
    fp32 = r("fp32", 0.0, 1.0, 1_000_000)
    return [
        ("PTQ is enough: static is within the tolerance", [fp32, r("dynamic", 0.0, 1.0, 1_000_000),
                                                           r("static", 0.003, 1.9, 300_000),
                                                           r("QAT 8-bit", 0.0, 1.9, 300_000)], 0.005),
        ("two PTQ models within the tolerance: the faster one", [fp32, r("dynamic", 0.001, 3.5, 600_000),
                                                                 r("static", 0.0, 1.5, 300_000)], 0.01),
        ("no PTQ model is within the tolerance: QAT", [fp32, r("dynamic", 0.04, 1.0, 1_000_000),
                                                       r("static", 0.03, 1.9, 300_000),
                                                       r("QAT 8-bit", 0.002, 1.9, 300_000)], 0.01),
        ("within the tolerance but no faster and no smaller", [fp32, r("dynamic", 0.0, 1.0, 990_000),
                                                               r("static", 0.02, 1.8, 300_000),
                                                               r("QAT 8-bit", 0.001, 1.8, 300_000)], 0.01),
        ("nothing is within the tolerance", [fp32, r("static", 0.05, 2.0, 300_000),
                                             r("QAT 8-bit", 0.03, 2.0, 300_000)], 0.01),
        ("a BERT: dynamic + SmoothQuant is a PTQ method too",
         [fp32, r("dynamic", 0.05, 3.5, 650_000), r("dynamic + SmoothQuant", 0.003, 2.3, 700_000)], 0.01),
    ]


def _decision_hint(rows: list[dict], tolerance: float, got, expected) -> str:
    """The most likely mistake, from what the student's answer is."""
    by = {x["method"]: x for x in rows}
    if expected is None and got == "fp32":
        return "when nothing is acceptable, return None (the model stays fp32; nothing is deployed)"
    if got is None and expected is not None:
        return ("a model is acceptable here: the PTQ methods are 'dynamic', 'dynamic + SmoothQuant' and "
                "'static'; QAT's are 'QAT 8-bit' and 'QAT 4-bit'")
    if got not in by:
        return f"return one of the rows' methods ({', '.join(by)}), or None"
    row, fp32 = by[got], by["fp32"]
    if got.startswith("QAT") and expected is not None and not expected.startswith("QAT"):
        return "PTQ first: QAT costs training, so it is tried only when no PTQ model is acceptable"
    if row["loss"] > tolerance:
        return "the tolerance comes first: a model whose loss is above it is not acceptable, however fast"
    if not (row["speedup"] > 1.1 or row["size_bytes"] < fp32["size_bytes"] / 1.1):
        return ("a model must also gain something to be deployed: more than 1.1x faster than fp32 "
                "(speedup > 1.1) or 1.1x smaller (size_bytes < fp32's / 1.1)")
    return ("the smallest loss is not the goal: any model within the tolerance is good enough, and "
            "among those the workflow deploys the fastest")


def check_decision(fn: Callable[[list[dict], float], str | None]) -> bool:
    """Check a student's fn(rows, tolerance) -> the method to deploy (a row's "method"), or None,
    against qlab.lab.workflow.decide on cases built to catch each typical mistake."""
    from qlab.lab.workflow import decide

    name = getattr(fn, "__name__", "your function")
    cases = _decision_cases()
    for what, rows, tolerance in cases:
        chosen = decide(rows, tolerance)["chosen"]
        expected = chosen["method"] if chosen else None
        try:
            got = fn([dict(x) for x in rows], tolerance)
        except Exception as e:  # a student's bug, reported as a hint rather than a traceback
            hint = " (replace the `raise` with your code)" if isinstance(e, NotImplementedError) else ""
            return _report(False, name, f"{what}: raised {_error(e)}{hint}")
        if got != expected:
            table = "; ".join(f"{x['method']} loss {x['loss']:g} {x['speedup']:g}x "
                              f"{x['size_bytes'] / 1e6:g} MB" for x in rows)
            hint = _decision_hint(rows, tolerance, got, expected)
            return _report(False, name, f"{what} (tolerance {tolerance:g}; {table}): expected {expected!r}, "
                                        f"got {got!r}.\n   Hint: {hint}")
    return _report(True, name, f"all {len(cases)} cases match qlab.lab.workflow.decide")


# ---------------------------------------------------------------------------------------
# Lesson 07: translate a classic observer into torchao's affine-quantization arguments
# ---------------------------------------------------------------------------------------

_TORCHAO_KEYS = ("mapping_type", "block_size", "target_dtype", "quant_min", "quant_max")


def _translation_cases() -> list[tuple[str, object, torch.Tensor]]:
    """(what the case is, a classic qlab observer, a tensor it quantizes)."""
    from qlab.observers import MinMaxObserver

    gen = torch.Generator().manual_seed(7)
    act = torch.randn(32, 48, generator=gen) * 1.5 + 0.8                        # an activation, off-centre
    w = torch.randn(24, 48, generator=gen) * torch.rand(24, 1, generator=gen) * 2  # rows of different widths
    return [
        ("activation: per tensor, uint8 affine (static PTQ's default)",
         MinMaxObserver(qdtype=qlab.uint8), act),
        ("weight: per output channel, int8 symmetric (the x86 default)",
         MinMaxObserver(qdtype=qlab.int8, symmetric=True, axis=0), w),
        ("weight: per output channel, int4 symmetric",
         MinMaxObserver(qdtype=qlab.int4, symmetric=True, axis=0), w),
        ("activation: per tensor, uint8 affine with reduce_range (7-bit codes)",
         MinMaxObserver(qdtype=qlab.uint8, reduce_range=True), act),
        ("weight: per tensor, int8 symmetric", MinMaxObserver(qdtype=qlab.int8, symmetric=True), w),
    ]  # fmt: skip


def _mapping_name(v) -> str | None:
    name = getattr(v, "name", v)
    return name.upper() if isinstance(name, str) else None


def _translation_hint(spec: dict, obs, shape: tuple) -> str:
    """The first field of the student's spec that differs from the observer's meaning, explained."""
    qmin, qmax = obs.qparams().qmin, obs.qparams().qmax
    mapping = _mapping_name(spec["mapping_type"])
    want = "SYMMETRIC" if obs.symmetric else "ASYMMETRIC"
    if mapping != want:
        return (f"mapping_type: this observer has symmetric={obs.symmetric}, which is MappingType.{want} "
                "(symmetric: zero point 0, scale from max|x|; asymmetric = torch.ao's affine: scale and "
                "zero point from min and max)")
    block = tuple(spec["block_size"]) if isinstance(spec["block_size"], (tuple, list, torch.Size)) else None
    per_row = (1, shape[1])
    if block is None or len(block) != len(shape):
        return f"block_size must be a tuple with one entry per dimension of the tensor, shape {tuple(shape)}"
    if obs.axis is None and block != tuple(shape):
        return (f"block_size is the shape of the block that shares one scale; a per-tensor observer has one "
                f"block, the whole tensor: {tuple(shape)}, here (block_size={block})")
    if obs.axis == 0 and block != per_row:
        if block == (shape[0], 1):
            return (f"(rows, 1) is a column: one scale per *input* channel. axis=0 means one scale per "
                    f"output channel, a row of the weight: block_size (1, {shape[1]})")
        return f"axis=0 is one scale per row (output channel): block_size (1, {shape[1]}), not {block}"
    lo, hi = spec["quant_min"], spec["quant_max"]
    if (lo, hi) != (qmin, qmax):
        if (lo, hi) == (-qmax, qmax):
            return (f"[{lo}, {hi}] is the restricted range some material uses; qlab's and torch.ao's "
                    f"signed grids include {qmin} (and torchao's symmetric scale is then "
                    "max|x| / ((qmax - qmin) / 2), PyTorch's 127.5 at 8 bits)")
        if obs.reduce_range and (lo, hi) == (0, 255):
            return ("reduce_range=True halves the grid: codes 0..127 (quant_max 127), one bit fewer, so that "
                    "fbgemm's int16 pair sums cannot saturate")
        return (f"quant_min / quant_max are the observer's grid: {obs.qdtype.bits}-bit "
                f"{'signed' if obs.qdtype.signed else 'unsigned'} codes [{qmin}, {qmax}]"
                + (" (an int4 grid stored in int8 is still [-8, 7])" if obs.qdtype.bits == 4 else ""))
    return ("target_dtype is the storage of the codes: torch.uint8 for an unsigned grid, torch.int8 for a "
            "signed one (int4 codes are stored in int8 too)")


def check_torchao_translation(fn: Callable[[object, tuple], dict]) -> bool:
    """Check a student's fn(observer, shape) -> dict(mapping_type, block_size, target_dtype, quant_min,
    quant_max): torchao's choose_qparams_affine / quantize_affine arguments that give the integers the
    classic observer gives (qlab.quantize with its qparams), for five typical qconfig observers."""
    from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine, quantize_affine

    name = getattr(fn, "__name__", "your function")
    cases = _translation_cases()
    for what, obs, x in cases:
        obs(x)
        qp = obs.qparams()
        expected = qlab.quantize(x, qp, axis=obs.axis).to(torch.int64)
        try:
            spec = fn(obs, tuple(x.shape))
        except Exception as e:  # a student's bug, reported as a hint rather than a traceback
            hint = " (replace the `raise` with your code)" if isinstance(e, NotImplementedError) else ""
            return _report(False, name, f"{what}: raised {_error(e)}{hint}")
        if not isinstance(spec, dict) or set(_TORCHAO_KEYS) - set(spec):
            return _report(False, name, f"{what}: return a dict with the keys {', '.join(_TORCHAO_KEYS)}, "
                                        f"got {spec!r}")
        mapping = _mapping_name(spec["mapping_type"])
        if mapping not in ("SYMMETRIC", "ASYMMETRIC"):
            return _report(False, name, f"{what}: mapping_type must be MappingType.SYMMETRIC or "
                                        f"MappingType.ASYMMETRIC, got {spec['mapping_type']!r}")
        try:
            block = tuple(int(b) for b in spec["block_size"])
            kind, dtype = MappingType[mapping], spec["target_dtype"]
            lo, hi = int(spec["quant_min"]), int(spec["quant_max"])
            with _quiet():
                eps = torch.finfo(torch.float32).eps
                s, z = choose_qparams_affine(x, kind, block, dtype, lo, hi, eps=eps)
                got = quantize_affine(x, block, s, z, dtype, lo, hi).to(torch.int64)
        except Exception as e:  # torchao rejects the arguments: say which and why
            return _report(False, name, f"{what}: torchao rejected {spec}: {_error(e)}.\n"
                                        f"   Hint: {_translation_hint(spec, obs, tuple(x.shape))}")
        if not torch.equal(got, expected):
            n = int((got != expected).sum())
            return _report(False, name, f"{what}: {n} of {got.numel()} integers differ from the observer's "
                                        f"(shape {tuple(x.shape)}, you returned {spec}).\n"
                                        f"   Hint: {_translation_hint(spec, obs, tuple(x.shape))}")
    return _report(True, name, f"all {len(cases)} observers translate to torchao arguments that give qlab's "
                               "integers bit for bit")
