"""Self-checks and argument checks, shared by every lesson.

    verdict(ok, name, message)     print a checker's one-line verdict (✅ / ❌) and return ok
    error_text(exc)                'ValueError: message', for a verdict about an exception
    check_int(name, value, lo, hi, what=)       an int (not a bool) in lo..hi, else an error naming it
    check_float(name, value, lo, hi, what=, above=)  a finite real number in range, else an error naming it
    check_choice(name, value, allowed, what=)   one of `allowed`, else a ValueError listing them

A checker never raises for a wrong answer: it prints what was expected, what came back and a
hint, and returns False, so a lesson keeps running."""

from __future__ import annotations

import math
import numbers


def check_int(name: str, value, lo: int | None = None, hi: int | None = None, *,
              what: str | None = None) -> int:
    """value as an int, if it is one (not a bool: True is an int in Python) with lo <= value <= hi
    (a bound of None: no bound). The one integer-argument check of the classroom.

    With `what` (the allowed values in words, e.g. "an int >= 1"), anything else is a ValueError
    "{name} must be {what}, got {value!r}"; without it, a non-int is a TypeError and an int out of
    range a ValueError, both naming lo..hi."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    in_range = is_int and (lo is None or value >= lo) and (hi is None or value <= hi)
    if what is not None and not in_range:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if not is_int:
        raise TypeError(f"{name} must be an int in {lo}..{hi}, got {type(value).__name__}")
    if not in_range:
        raise ValueError(f"{name}={value} is out of range; {name} must be in {lo}..{hi}")
    return int(value)


def check_float(name: str, value, lo: float | None = None, hi: float | None = None, *,
                what: str | None = None, above: bool = False) -> float:
    """value as a float, if it is a finite real number (int, float or numpy scalar; not a bool)
    with lo <= value <= hi (lo < value with above=True; a bound of None: no bound). The one
    number-argument check of the classroom.

    With `what` (the allowed values in words, e.g. "a finite number > 0"), anything else is a
    ValueError "{name} must be {what}, got {value!r}"; without it, a non-number is a TypeError and
    NaN, Inf or a number out of range a ValueError, both naming the range."""
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    finite = is_real and math.isfinite(value)
    in_range = finite and _within(value, lo, hi, above)
    if what is not None and not in_range:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    allowed = _range_words(lo, hi, above)
    if not is_real:
        raise TypeError(f"{name} must be a finite number {allowed}, got {type(value).__name__}")
    if not in_range:
        raise ValueError(f"{name}={value} is not allowed; {name} must be a finite number {allowed}")
    return float(value)


def _within(value, lo, hi, above: bool) -> bool:
    return (lo is None or (value > lo if above else value >= lo)) and (hi is None or value <= hi)


def _range_words(lo, hi, above: bool) -> str:
    """'in [0, 1]', '> 0', '<= 1', 'of any size' ..."""
    if lo is not None and hi is not None:
        return f"in {'(' if above else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{'>' if above else '>='} {lo}"
    return f"<= {hi}" if hi is not None else "of any size"


def check_choice(name: str, value, allowed, *, what: str | None = None):
    """value, if it is one of `allowed`. The one "must be one of" check of the classroom.

    With `what` (the allowed values in words), anything else is a ValueError
    "{name} must be {what}, got {value!r}"; without it, "unknown {name} {value!r}; allowed: ..."."""
    if value in allowed:
        return value
    if what is not None:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")


def error_text(e: Exception) -> str:
    """'ValueError: message', or just the type when the message is empty (a bare raise)."""
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def verdict(ok: bool, name: str, message: str) -> bool:
    print(("✅ " if ok else "❌ ") + f"{name}: {message}")
    return ok
