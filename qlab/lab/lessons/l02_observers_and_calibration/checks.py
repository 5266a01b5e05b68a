"""Lesson 02, the self-checks of its exercises."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from qlab.lab.kit.check import Student, checker, describe, is_number, verdict
from qlab.observers import MovingAverageMinMaxObserver, PercentileObserver


def _as_value(got) -> tuple[torch.Tensor | None, str]:
    """The student's running value as a 0-d float tensor, or None and what is wrong with it."""
    if is_number(got):
        return torch.tensor(float(got)), ""
    if not isinstance(got, torch.Tensor):
        hint = " (did you forget `return`?)" if got is None else ""
        return None, f"it returned {type(got).__name__}{hint}, not a number or a 0-d torch.Tensor"
    if got.numel() != 1:
        return None, (f"it returned a tensor of shape {tuple(got.shape)}; the running min (or max) "
                      "is one number: combine the two scalars you are given, nothing more")
    if got.dtype == torch.bool or got.dtype.is_complex:
        return None, f"it returned {describe(got)}; the running min (or max) is a real number"
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


@checker("the new running value, a number or a 0-d tensor: running + c * (batch_value - running)")
def check_moving_average(student: Student) -> bool:
    """Check a student's moving-average update against qlab's MovingAverageMinMaxObserver.

    fn(running, batch_value, c) must return the new running value
    running + c * (batch_value - running). It is applied to the min and the max of every
    batch after the first (the first batch sets them); the results must match the observer's
    (and so torch.ao's) min and max to float32 rounding (rtol 1e-5), for c = 0.01, 0.3, 1.
    """
    name = student.name
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
            where = f"c = {c}, batch {i}"
            got = student(where, running[0], batch[0], c), student(where, running[1], batch[1], c)
            (lo, problem_lo), (hi, problem_hi) = _as_value(got[0]), _as_value(got[1])
            if lo is None or hi is None:
                return verdict(False, name, f"c = {c}, batch {i}: {problem_lo or problem_hi}")
            expected = (obs.min_val, obs.max_val)
            wrong = [k for k, v in enumerate((lo, hi))
                     if not torch.allclose(v, expected[k], rtol=1e-5, atol=1e-6)]  # fmt: skip
            if wrong:
                k = wrong[0]
                return verdict(False, name, (
                    f"c = {c}, after batch {i}: expected min, max = {obs.min_val.item():.6g}, "
                    f"{obs.max_val.item():.6g}, got {float(lo):.6g}, {float(hi):.6g}.\n"
                    f"   Hint: {_moving_average_hint((lo, hi)[k], running[k], batch[k], c)}"
                ))
    return verdict(True, name, (
        f"min and max match MovingAverageMinMaxObserver over {len(seq)} batches "
        "for c = 0.01, 0.3 and 1.0"
    ))


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
        if not is_number(v):
            return None, (f"it returned a {type(v).__name__} inside the pair; "
                          "return two numbers (or 0-d tensors)")
        out.append(float(v))
    if not all(math.isfinite(v) for v in out):
        return None, f"it returned {out}: NaN or Inf (an empty bin divided by its count of 0?)"
    return (out[0], out[1]), ""


def _percentile_setup(case: _PercentileCase) -> dict:
    """What the student's function gets for a case (hist, lo, hi, p) and what it must return."""
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


def _run_percentile(student: Student, setup) -> tuple[tuple[float, float] | None, str]:
    where = f"case '{setup['case'].name}'"
    return _as_range(student(where, setup["hist"].clone(), setup["lo"], setup["hi"], setup["case"].p))


def _percentile_hint(student: Student, setups, failed) -> str:
    """The typical mistake whose result the student's matches in every case (and the right answer
    does not, in the case that failed), else a bound check, else the rule in words."""
    results = [(st, _run_percentile(student, st)[0]) for st in setups]
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


@checker("a pair of numbers (lower, upper): the (100 - p)-th and the p-th percentile")
def check_percentile_range(student: Student) -> bool:
    """Check a student's percentile_range(hist, lo, hi, p) -> (lower, upper) against qlab's
    PercentileObserver(percentile=p).calibrated_range().

    hist: the observer's histogram (bins counts spread evenly over [lo, hi], lo = min and hi = max
    of the data); p: the percentile, e.g. 99.99. The rule: the q-quantile lies in the first bin
    whose running count reaches q * total, interpolated linearly inside it; lower end at
    q = 1 - p / 100, upper at q = p / 100. Must agree to 1/1000 of a bin width.
    """
    name = student.name
    setups = [_percentile_setup(case) for case in _percentile_cases()]
    for st in setups:
        case, expected = st["case"], st["expected"]
        got, problem = _run_percentile(student, st)
        if got is None:
            return verdict(False, name, f"case '{case.name}': {problem}")
        if not _same(got, expected, st["tol"]):
            return verdict(False, name, (
                f"case '{case.name}' ({case.bins} bins over [lo, hi] = [{st['lo']:.6g}, {st['hi']:.6g}], "
                f"bin width {st['width']:.4g}):\n"
                f"   expected (lower, upper) = ({expected[0]:.6g}, {expected[1]:.6g}) "
                f"(PercentileObserver(percentile={case.p:g})), got ({got[0]:.6g}, {got[1]:.6g}).\n"
                f"   Hint: {_percentile_hint(student, setups, st)}"
            ))
    return verdict(True, name, (
        f"all {len(setups)} cases match PercentileObserver's range (p = 99.99, 99, 100; a target inside "
        "a bin and one at a bin's end)"
    ))
