"""Self-checks and argument checks, shared by every lesson.

    verdict(ok, name, message)     print a checker's one-line verdict (✅ / ❌) and return ok
    error_text(exc)                'ValueError: message', for a verdict about an exception
    check_int(name, value, lo, hi, what=)       an int (not a bool) in lo..hi, else an error naming it
    check_choice(name, value, allowed, what=)   one of `allowed`, else a ValueError listing them

A checker never raises for a wrong answer: it prints what was expected, what came back and a
hint, and returns False, so a lesson keeps running."""

from __future__ import annotations

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
