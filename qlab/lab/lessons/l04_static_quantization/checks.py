"""Lesson 04, the self-checks of its exercises."""

from __future__ import annotations

import math

from qlab.integer import quantize_multiplier
from qlab.lab.kit.check import Student, as_int, checker, verdict


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


def _multiplier_hint(m: float, got: tuple[int, int], expected: tuple[int, int]) -> str:
    """The most likely mistake, from how the student's (M0, shift) differs from the right one."""
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


@checker("a pair of integers (M0, shift) with M = M0 * 2**-31 * 2**-shift and M0 in [2**30, 2**31)")
def check_multiplier(student: Student) -> bool:
    """Check a student's fn(M) -> (M0, shift) against qlab.integer.quantize_multiplier.

    M > 0 must be written as M = M0 * 2**-31 * 2**-shift with M0 an integer in [2**30, 2**31) (an
    int32 with 31 bits of M) and shift an integer (TFLite's QuantizeMultiplier). Prints which M
    failed, what was expected and a hint for the mistake; returns True if every case matches.
    """
    name = student.name
    cases = _multiplier_cases()
    for what, m in cases:
        expected = quantize_multiplier(m)
        got = student(f"M = {m!r} ({what})", m)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            extra = " (did you forget `return`?)" if got is None else ""
            return verdict(False, name, f"M = {m!r}: it returned {type(got).__name__}{extra}; "
                                        "return a tuple of two integers (M0, shift)")
        m0, shift = as_int(got[0]), as_int(got[1])
        if m0 is None or shift is None:
            return verdict(False, name, (
                f"M = {m!r}: it returned ({got[0]!r}, {got[1]!r}), types ({type(got[0]).__name__}, "
                f"{type(got[1]).__name__}); M0 and shift must be integers (M0 lives in an int32 "
                "register, shift counts bits): Python's round(x) returns an int (np.round and "
                "torch.round do not)"))
        if (m0, shift) != expected:
            try:
                stands_for = f"{math.ldexp(m0, -31 - shift):.10g}"
            except OverflowError:
                stands_for = "out of float range"
            return verdict(False, name, (
                f"M = {m!r} ({what}): expected (M0, shift) = {expected}, got ({m0}, {shift}), which "
                f"stands for M0 * 2**-31 * 2**-shift = {stands_for}.\n"
                f"   Hint: {_multiplier_hint(m, (m0, shift), expected)}"))
    return verdict(True, name, (
        f"all {len(cases)} cases match qlab.integer.quantize_multiplier (TFLite's QuantizeMultiplier), "
        "including M >= 1, rounding and the 2**31 carry"))
