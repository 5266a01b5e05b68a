"""Self-checks and argument checks, shared by every lesson.

    verdict(ok, name, message)     print a checker's one-line verdict (✅ / ❌) and return ok
    error_text(exc)                'ValueError: message', for a verdict about an exception
    check_int(name, value, lo, hi) an int (not a bool) in lo..hi, else a ValueError/TypeError naming it
    check_choice(name, value, allowed)   one of `allowed`, else a ValueError listing them

A checker never raises for a wrong answer: it prints what was expected, what came back and a
hint, and returns False, so a lesson keeps running."""

from __future__ import annotations

import numbers


def check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int in {lo}..{hi}, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is out of range; {name} must be in {lo}..{hi}")
    return int(value)


def check_choice(name: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")
    return value


def error_text(e: Exception) -> str:
    """'ValueError: message', or just the type when the message is empty (a bare raise)."""
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def verdict(ok: bool, name: str, message: str) -> bool:
    print(("✅ " if ok else "❌ ") + f"{name}: {message}")
    return ok
