"""Timing, shared by the lessons that measure speed (03, 04, 06, 07) and `make bench`.

    median_ms(fn)                  median ms of fn() (torch.utils.benchmark's blocked_autorange)
    interleaved_ms(fns)            the median of each fn over interleaved rounds, in ms
    timed(fns, min_run_time)       the same, with the spread between rounds (a busy-machine check)
    settings(threads, engine)      run a block at a thread count on one of torch.ao's engines
    FreshKernels(model, x)         time a torch.ao int8 model on fresh copies (its kernel cache)
    speedups(ms, baseline)         baseline time / each time: above 1 is faster
    pareto_front(points)           the configurations nothing beats on speed and quality

Every speed-up is a ratio of two times measured in one run, at one thread count: a ratio
measured in one run is what carries over between machines."""

from __future__ import annotations

import contextlib
import copy
import logging
import numbers
import os
import statistics
import time

import torch
from torch import nn

from . import torch_ao


def _timer_class():
    """torch.utils.benchmark.Timer, imported on first use. Importing it loads torch's C++-extension
    helper, which logs "No CUDA runtime is found" on a machine without CUDA; the lessons time on
    the CPU only, so that one line is silenced instead of landing in every lesson's output."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    return Timer


def median_ms(fn, min_run_time: float = 0.5) -> float:
    """Median time of one fn() call in milliseconds, at torch's current thread count.

    torch.utils.benchmark's blocked_autorange warms up, then times blocks of calls for at
    least min_run_time seconds; the median over the blocks resists a busy machine's outliers.
    """
    timer = _timer_class()(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    with torch.inference_mode():
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def interleaved_rounds(fns: dict, min_run_time: float = 0.5, rounds: int = 3) -> dict[str, list[float]]:
    """median_ms of every fn in each of `rounds` interleaved rounds (A, B, C, A, B, C, ...) of
    min_run_time / rounds seconds: a machine that slows down mid-run (another job starts) then
    slows every configuration alike, and the ratios hold."""
    budget = min_run_time / rounds
    times = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            if r and times[name][0] > budget * 1e3:  # a call longer than the round: warm, so time one
                times[name].append(_one_call_ms(fn))
            else:
                times[name].append(median_ms(fn, budget))
    return times


def _one_call_ms(fn) -> float:
    """One call's time in ms (for calls slower than a round, already warmed up by the first round)."""
    with torch.inference_mode():
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3


def interleaved_ms(fns: dict, min_run_time: float = 0.5, rounds: int = 3) -> dict[str, float]:
    """The median over interleaved_rounds of every fn, in ms."""
    return {name: statistics.median(t) for name, t in interleaved_rounds(fns, min_run_time, rounds).items()}


def timed(fns: dict, min_run_time: float) -> tuple[dict[str, float], float]:
    """(median ms of each fn, spread): spread is the largest max/min between one fn's rounds, about
    1 on a quiet machine; well above 1 means other work ran and the ratios are suspect."""
    times = interleaved_rounds(fns, min_run_time)
    spread = max(max(t) / min(t) for t in times.values())
    return {name: statistics.median(t) for name, t in times.items()}, spread


UNSTABLE = 1.3  # a spread above this is flagged in the tables: the machine was busy


def flag(spread: float) -> str:
    """A table row's mark when its timing rounds differed more than UNSTABLE allows."""
    return f" UNSTABLE: rounds differ {spread:.1f}x" if spread > UNSTABLE else ""


def footnote(spreads) -> str:
    """The line under a timing table: how far its rounds agreed, or which rows to rerun."""
    worst = max(spreads)
    if worst > UNSTABLE:
        return (f"\n\nRows marked UNSTABLE: one configuration's timing rounds differed up to {worst:.1f}x, "
                "so other work was running; rerun on a quiet machine before quoting them.")
    return f"\n\n(timing rounds agree within {worst:.2f}x; int8 on torch.ao's {torch_ao.ENGINE} kernels)"


# ---------------------------------------------------------------------------------------
# Checks and settings shared by every measurement
# ---------------------------------------------------------------------------------------


def max_threads() -> int:
    """The most torch threads a measurement may ask for: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def settings(threads: int | None = None, engine: str = torch_ao.ENGINE):
    """Run the block at `threads` torch threads (None: as it is) on torch.ao's `engine`, quietly
    (torch_ao.engine); restore both."""
    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch_ao.engine(engine):
            yield
    finally:
        torch.set_num_threads(old_threads)


class FreshKernels:
    """A zero-argument call model(x) for timing a torch.ao int8 model: each torch thread count gets
    its own copy of the model (copy.deepcopy, which packs the weights anew), first called inside
    the timing's warm-up.

    Why: torch.ao's x86 int8 convolutions (oneDNN) prepare their kernel once, for the input shape,
    qparams and thread count of their first call, and keep it; a call with another shape or thread
    count prepares a new kernel every time. Measured here (ResNet, batch 1, 2 threads): 0.41 ms on
    a fresh model, 0.71 ms on one first called at batch 360, 0.67 ms at 1 thread on one first
    called at 2. A served model runs one shape, so the fresh copy is the fair measurement."""

    def __init__(self, model: nn.Module, x: torch.Tensor, make=None, first=None):
        """make: builds a copy (default copy.deepcopy(model); e.g. compile a fresh copy instead);
        first: a copy already made, for the current thread count."""
        self.model, self.x = model, x
        self.make = make or (lambda: copy.deepcopy(model))
        self.copies: dict[int, nn.Module] = {} if first is None else {torch.get_num_threads(): first}

    def __call__(self):
        n = torch.get_num_threads()
        if n not in self.copies:
            self.copies[n] = self.make()
        return self.copies[n](self.x)


def speedups(ms: dict[str, float], baseline: str) -> dict[str, float]:
    """time(baseline) / time(each): above 1 is faster than the baseline."""
    return {name: ms[baseline] / t for name, t in ms.items()}


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the configurations no other one beats on both speedup and quality (higher is
    better on both), in order of speed. points: name -> (speedup vs fp32, quality)."""
    for name, p in points.items():
        if len(p) != 2 or not all(isinstance(v, numbers.Real) and v == v for v in p):
            raise ValueError(f"point {name!r} must be (speedup, quality), two numbers, got {p!r}")
    front = [n for n, (s, q) in points.items()
             if not any(s2 >= s and q2 >= q and (s2, q2) != (s, q) for s2, q2 in points.values())]
    return sorted(front, key=lambda n: points[n][0])
