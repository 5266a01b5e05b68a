"""check_percentile_range (lesson 02's exercise): a right answer passes, each typical mistake
gets its own hint."""

import numpy as np
import pytest
import torch

from qlab.lab.lessons.l02_observers_and_calibration.checks import check_percentile_range


def _quantile(hist, lo, hi, q, *, side="left", inside="interpolate", bins_minus=0, from_lo=True, clamp=True):
    width = (hi - lo) / (len(hist) - bins_minus)
    cum = torch.cumsum(hist.double(), 0)
    target = q * cum[-1]
    k = min(int(torch.searchsorted(cum, target, right=side == "right")), len(hist) - 1)
    before = cum[k - 1] if k > 0 else 0.0
    frac = float((target - before) / (cum[-1] if inside == "of total" else hist[k])) if hist[k] > 0 else 0.0
    if clamp:
        frac = min(max(frac, 0.0), 1.0)
    frac = {"left": 0.0, "right": 1.0, "centre": 0.5}.get(inside, frac)
    return (lo if from_lo else 0.0) + (k + frac) * width


def percentile_range(hist, lo, hi, p):
    return _quantile(hist, lo, hi, 1 - p / 100), _quantile(hist, lo, hi, p / 100)


def numpy_version(hist, lo, hi, p):
    """The same rule with numpy and a loop, float32 counts: a right answer in another style."""
    h = np.asarray(hist, dtype=np.float32)
    width = (hi - lo) / len(h)

    def q_value(q):
        target, running = q * h.sum(), 0.0
        for k, count in enumerate(h):
            if running + count >= target or k == len(h) - 1:
                frac = (target - running) / count if count > 0 else 0.0
                return lo + (k + min(max(frac, 0.0), 1.0)) * width
            running += count

    return q_value(1 - p / 100), q_value(p / 100)


def as_tensor_pair(hist, lo, hi, p):
    lower, upper = percentile_range(hist, lo, hi, p)
    return torch.tensor(lower), torch.tensor(upper)


@pytest.mark.parametrize("fn", [percentile_range, numpy_version, as_tensor_pair])
def test_a_right_answer_passes(fn, capsys):
    assert check_percentile_range(fn) is True
    assert "✅" in capsys.readouterr().out


def _with(**kw):
    return lambda h, lo, hi, p: (_quantile(h, lo, hi, 1 - p / 100, **kw), _quantile(h, lo, hi, p / 100, **kw))


MISTAKES = {
    "p used as a fraction": (lambda h, lo, hi, p: (_quantile(h, lo, hi, 1 - p), _quantile(h, lo, hi, p)),
                             "p is a percentage"),
    "p used as a fraction, unclamped": (lambda h, lo, hi, p: (_quantile(h, lo, hi, 1 - p, clamp=False),
                                                              _quantile(h, lo, hi, p, clamp=False)),
                                        "inside the data's range"),
    "0.9999 as a percentage": (lambda h, lo, hi, p: (_quantile(h, lo, hi, 1 - p / 10000),
                                                     _quantile(h, lo, hi, p / 10000)), "taken twice"),
    "symmetric, like a percentile of |x|": (lambda h, lo, hi, p: (-_quantile(h, lo, hi, p / 100),
                                                                  _quantile(h, lo, hi, p / 100)), "|x|"),
    "only the top clipped": (lambda h, lo, hi, p: (lo, _quantile(h, lo, hi, p / 100)), "only the top"),
    "both ends at q": (lambda h, lo, hi, p: (_quantile(h, lo, hi, p / 100),) * 2, "lower end uses 1 - q"),
    "ends swapped": (lambda h, lo, hi, p: (_quantile(h, lo, hi, p / 100), _quantile(h, lo, hi, 1 - p / 100)),
                     "swapped"),
    "off by one bin": (_with(side="right"), "off by one bin"),
    "left edge": (_with(inside="left"), "evenly spread"),
    "right edge": (_with(inside="right"), "evenly spread"),
    "bin centre": (_with(inside="centre"), "evenly spread"),
    "fraction of the total": (_with(inside="of total"), "not / the total count"),
    "bins - 1": (_with(bins_minus=1), "(hi - lo) / bins wide"),
    "forgot lo": (_with(from_lo=False), "starts at lo"),
    "no return": (lambda h, lo, hi, p: None, "forget `return`"),
    "one number": (lambda h, lo, hi, p: hi, "return two numbers"),
    "division by an empty bin": (lambda h, lo, hi, p: (float("nan"), hi), "NaN"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_each_mistake_gets_its_own_hint(name, capsys):
    fn, words = MISTAKES[name]
    assert check_percentile_range(fn) is False  # and it did not raise
    out = capsys.readouterr().out
    assert "❌" in out and words in out, out
    hints = [w for n, (_, w) in MISTAKES.items() if n != name and w in out and w not in words]
    assert not hints, f"{name}: the message also carries {hints}: {out}"


def test_the_stub_reports_instead_of_raising(capsys):
    def stub(hist, lo, hi, p):
        raise NotImplementedError("replace this line with your rule")

    assert check_percentile_range(stub) is False
    out = capsys.readouterr().out
    assert "NotImplementedError" in out and "replace the `raise`" in out


def test_a_student_error_is_reported(capsys):
    assert check_percentile_range(lambda h, lo, hi, p: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
