"""Self-checks and argument checks, shared by every lesson.

    verdict(ok, name, message)     print a checker's one-line verdict (✅ / ❌) and return ok
    error_text(exc)                'ValueError: message', for a verdict about an exception
    checker(returns, ...)          makes a lesson's check_*(fn) safe: whatever fn raises or returns, a ❌
    Student                        the student's fn as a checker calls it: student(where, *args)
    describe(value)                what a student's function returned, in a few words (type, dtype, shape)
    is_number(value)               a Python or numpy int or float (not a bool): what "a number" accepts
    as_int(value)                  a Python or numpy int or 1-element integer tensor as an int, else None
    check_int(name, value, lo, hi, what=)       an int (not a bool) in lo..hi, else an error naming it
    check_float(name, value, lo, hi, what=, above=)  a finite real number in range, else an error naming it
    check_choice(name, value, allowed, what=)   one of `allowed`, else a ValueError listing them

A checker never raises for a wrong answer: it prints what was expected, what came back and a
hint, and returns False, so a lesson keeps running: each check_* is decorated with `checker`, the one
place that turns anything unexpected (the student's function raising, a result the check cannot
compare) into a ❌ that says what came back and what should have."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from qlab.qtypes import is_int, is_real


def check_int(name: str, value, lo: int | None = None, hi: int | None = None, *,
              what: str | None = None) -> int:
    """value as an int, if it is one (not a bool: True is an int in Python) with lo <= value <= hi
    (a bound of None: no bound). The one integer-argument check of the classroom.

    With `what` (the allowed values in words, e.g. "an int >= 1"), anything else is a ValueError
    "{name} must be {what}, got {value!r}"; without it, a non-int is a TypeError and an int out of
    range a ValueError, both naming lo..hi."""
    integer = is_int(value)
    in_range = integer and (lo is None or value >= lo) and (hi is None or value <= hi)
    if what is not None and not in_range:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if not integer:
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
    real = is_real(value)
    finite = real and math.isfinite(value)
    in_range = finite and _within(value, lo, hi, above)
    if what is not None and not in_range:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    allowed = _range_words(lo, hi, above)
    if not real:
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


def is_number(value) -> bool:
    """A real number as a student may return it: a Python or numpy int or float (np.float32(0.5),
    np.int64(3)), not a bool. A tensor is not a number here; each checker says whether it takes one."""
    return is_real(value)


def as_int(value) -> int | None:
    """value as a Python int if it is an integer: a Python or numpy int or a one-element integer
    tensor (not a bool), else None. What a checker takes where it asks for an integer."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    return int(value) if is_int(value) else None


def _short(value) -> str:
    """repr(value), cut to about 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(value) -> str:
    """What a student's function returned, in a few words for a verdict: None, the float 0.5,
    np.float32(0.5), a torch.Tensor of dtype torch.int64 and shape (61,), a tuple of 2: (...)."""
    if isinstance(value, (tuple, list)):
        items = ", ".join(describe(v) for v in value[:3]) + (", ..." if len(value) > 3 else "")
        return f"a {type(value).__name__} of {len(value)}: ({items})"
    if isinstance(value, dict):
        return f"a dict with the keys {_short(list(value))}"
    if isinstance(value, torch.Tensor):
        return f"a torch.Tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a numpy array of dtype {value.dtype} and shape {value.shape}"
    if isinstance(value, np.generic):
        return repr(value)  # np.float32(0.5): type and value
    if isinstance(value, (bool, int, float, complex, str, bytes)):
        return f"the {type(value).__name__} {_short(value)}"
    if value is None:
        return "None"
    if isinstance(value, type) or callable(value):
        kind = "class" if isinstance(value, type) else "function"
        return f"the {kind} {getattr(value, '__name__', type(value).__name__)}"
    return f"a {type(value).__name__}"


class Student:
    """A student's exercise answer as a checker calls it: student(where, *args) runs it on one case and
    remembers the case (`where`, words for the verdict), the arguments and what came back or what was
    raised, so that a verdict can say so. method="apply" calls fn.apply (a torch.autograd.Function)."""

    def __init__(self, fn, method: str | None = None):
        self.name = getattr(fn, "__name__", "your function")
        self.fn = getattr(fn, method, fn) if method else fn
        self.where, self.args, self.returned, self.raised = "", None, None, None

    def __call__(self, where: str, *args):
        self.args, self.returned = args, None
        with self.running(where):
            self.returned = self.fn(*args)
        return self.returned

    @contextlib.contextmanager
    def running(self, where: str) -> Iterator[None]:
        """Code that runs the student's code (a call, or a backward pass through what it returned):
        what it raises is the student's."""
        self.where, self.raised = where, None
        try:
            yield
        except Exception as e:
            self.raised = e
            raise


def _failure(student: Student, e: Exception, returns: str, hint_if_raised) -> str:
    """The ❌ message for a check that did not finish: what the student's function did, what it should."""
    where = f"{student.where}: " if student.where else ""
    if not callable(student.fn):
        return f"it was given {describe(student.fn)}; pass your function itself, its name without ()"
    if student.args is None:
        return f"the check failed before calling {student.name}: {error_text(e)}"
    should = f"\n   It should return {returns}."
    if e is not student.raised:
        returned = describe(student.returned)
        return f"{where}it returned {returned}, which could not be checked ({error_text(e)})." + should
    todo = " (replace the `raise` with your code)" if isinstance(e, NotImplementedError) else ""
    hint = hint_if_raised(student.args, e) if hint_if_raised else ""
    return f"{where}raised {error_text(e)}{todo}." + should + (hint and f"\n   Hint: {hint}")


def checker(returns: str, *, method: str | None = None,
            hint_if_raised: Callable[[tuple, Exception], str] | None = None):
    """Decorate a lesson's check_*(student) -> bool into check_*(fn) -> bool that never raises on a
    student's answer. The check gets fn as a Student and calls it student(where, *args).

    Whatever goes wrong, fn raising or what it returned failing a comparison, prints a ❌ verdict that
    says where, what fn raised or returned and what it should return (`returns`, in words), and the
    check returns False. hint_if_raised(args, exception): a hint for a raise, from the arguments."""
    def decorate(check: Callable[[Student], bool]) -> Callable[[Callable], bool]:
        @functools.wraps(check)
        def safe_check(fn) -> bool:
            student = Student(fn, method)
            try:
                return check(student)
            except Exception as e:  # the student's bug, or a result the check cannot compare
                return verdict(False, student.name, _failure(student, e, returns, hint_if_raised))
        return safe_check
    return decorate
