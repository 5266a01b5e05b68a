"""The lessons' checks modules: the checkers accept right answers, give each typical mistake its own hint, and
never raise, so a student's lesson keeps running."""

import math

import pytest
import torch

import qlab
from qlab.lab.lessons.l01_quantization_math.checks import check_qparams, check_quantize
from qlab.lab.lessons.l02_observers_and_calibration.checks import check_moving_average
from qlab.lab.lessons.l03_dynamic_quantization.checks import check_dynamic_qparams


def student_ok(x, qp):
    q = torch.round(x * (1.0 / qp.scale)) + qp.zero_point
    return torch.clamp(q, qp.qmin, qp.qmax).to(torch.int32)


def divides(x, qp):
    return torch.clamp(torch.round(x / qp.scale) + qp.zero_point, qp.qmin, qp.qmax)


def rounds_half_up(x, qp):
    return torch.clamp(torch.floor(x * (1.0 / qp.scale) + 0.5) + qp.zero_point, qp.qmin, qp.qmax)


def no_clamp(x, qp):
    return torch.round(x * (1.0 / qp.scale)) + qp.zero_point


def no_zero_point(x, qp):
    return torch.clamp(torch.round(x * (1.0 / qp.scale)), qp.qmin, qp.qmax)


def hard_coded_uint8(x, qp):
    return torch.clamp(torch.round(x * (1.0 / qp.scale)) + qp.zero_point, 0, 255)


def no_round(x, qp):
    return torch.clamp(x * (1.0 / qp.scale) + qp.zero_point, qp.qmin, qp.qmax)


def stub(x, qp):
    raise NotImplementedError("write me")


def returns_none(x, qp):
    pass


def stores_in_uint8(x, qp):
    """Right codes, stored in a dtype that cannot hold a signed grid: -1 wraps to 255."""
    q = torch.round(x * (1.0 / qp.scale)) + qp.zero_point
    return torch.clamp(q, qp.qmin, qp.qmax).to(torch.uint8)


def stores_in_int8(x, qp):
    """255 wraps to -1 in int8: wrong for the unsigned grid."""
    q = torch.round(x * (1.0 / qp.scale)) + qp.zero_point
    return torch.clamp(q, qp.qmin, qp.qmax).to(torch.int8)


def stores_in_storage_dtype(x, qp):
    """The grid's own storage dtype holds it: right."""
    q = torch.round(x * (1.0 / qp.scale)) + qp.zero_point
    return torch.clamp(q, qp.qmin, qp.qmax).to(qp.qdtype.storage)


@pytest.mark.parametrize("fn", [qlab.quantize, student_ok, stores_in_storage_dtype])
def test_accepts_correct(fn, capsys):
    assert check_quantize(fn) is True
    assert "bit for bit" in capsys.readouterr().out


@pytest.mark.parametrize(
    "fn, words",
    [
        (divides, ["1.0 / scale", "expected q = -125", "got -124"]),
        (rounds_half_up, ["half to even", "expected q = ", "exact ties"]),
        (no_clamp, ["clamp"]),
        (hard_coded_uint8, ["hard-code"]),
        (no_zero_point, ["zero point"]),
        (no_round, ["forget to round"]),
        (stub, ["NotImplementedError", "write me"]),
        (returns_none, ["NoneType", "torch.Tensor"]),
        (stores_in_uint8, ["int8 symmetric", "torch.uint8, which holds 0..255", "[-128, 127]", "wrap",
                           "Clamping was right"]),
        (stores_in_int8, ["uint8 affine", "torch.int8, which holds -128..127", "[0, 255]", "wrap"]),
    ],
)
def test_rejects_with_helpful_message(fn, words, capsys):
    assert check_quantize(fn) is False
    out = capsys.readouterr().out
    assert out.startswith("❌ " + fn.__name__)
    for w in words:
        assert w in out, f"{w!r} missing from:\n{out}"


def test_does_not_let_a_mutating_function_spoil_the_reference(capsys):
    def in_place(x, qp):
        x.mul_(1.0 / qp.scale).round_().add_(qp.zero_point).clamp_(qp.qmin, qp.qmax)
        return x

    assert check_quantize(in_place) is True


def test_wrapped_storage_is_not_blamed_on_the_clamp(capsys):
    check_quantize(stores_in_uint8)
    assert "clamp to" not in capsys.readouterr().out


# ---------------------------------------------------------------------- check_moving_average



# ---- lesson 01: check_qparams (derive scale and zero point)

F32_EPS = torch.finfo(torch.float32).eps


def qp_right(x_min, x_max, qmin, qmax, symmetric):
    lo, hi = torch.clamp(x_min, max=0.0), torch.clamp(x_max, min=0.0)
    if symmetric:
        scale = torch.clamp(torch.maximum(-lo, hi) / ((qmax - qmin) / 2), min=F32_EPS)
        return scale, 0
    scale = torch.clamp((hi - lo) / (qmax - qmin), min=F32_EPS)
    zp = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale, int(zp)


def qp_python_floats(x_min, x_max, qmin, qmax, symmetric):
    lo, hi = min(x_min.item(), 0.0), max(x_max.item(), 0.0)
    if symmetric:
        return max(max(-lo, hi) / ((qmax - qmin) / 2), F32_EPS), 0
    scale = max((hi - lo) / (qmax - qmin), F32_EPS)
    return scale, min(max(qmin - round(lo / scale), qmin), qmax)


def qp_no_zero(x_min, x_max, qmin, qmax, symmetric):
    if symmetric:
        return qp_right(x_min, x_max, qmin, qmax, symmetric)
    scale = torch.clamp((x_max - x_min) / (qmax - qmin), min=F32_EPS)
    return scale, int(torch.clamp(qmin - torch.round(x_min / scale), qmin, qmax))


def qp_no_zero_no_clamp(x_min, x_max, qmin, qmax, symmetric):
    if symmetric:
        return qp_right(x_min, x_max, qmin, qmax, symmetric)
    scale = torch.clamp((x_max - x_min) / (qmax - qmin), min=F32_EPS)
    return scale, int(qmin - torch.round(x_min / scale))


def qp_by_127(x_min, x_max, qmin, qmax, symmetric):
    if not symmetric:
        return qp_right(x_min, x_max, qmin, qmax, symmetric)
    return torch.clamp(torch.maximum(-x_min, x_max).clamp(min=0) / qmax, min=F32_EPS), 0


def qp_by_steps(x_min, x_max, qmin, qmax, symmetric):
    if not symmetric:
        return qp_right(x_min, x_max, qmin, qmax, symmetric)
    return torch.clamp(torch.maximum(-x_min, x_max).clamp(min=0) / (qmax - qmin), min=F32_EPS), 0


def qp_zp_not_rounded(x_min, x_max, qmin, qmax, symmetric):
    s, _ = qp_right(x_min, x_max, qmin, qmax, symmetric)
    if symmetric:
        return s, 0
    return s, (qmin - torch.clamp(x_min, max=0) / s).item()


def qp_no_eps(x_min, x_max, qmin, qmax, symmetric):
    lo, hi = min(x_min, torch.tensor(0.0)), max(x_max, torch.tensor(0.0))
    if symmetric:
        return torch.maximum(-lo, hi) / ((qmax - qmin) / 2), 0
    scale = (hi - lo) / (qmax - qmin)
    return scale, int(torch.clamp(qmin - torch.round(lo / scale), qmin, qmax))


def qp_no_eps_py(x_min, x_max, qmin, qmax, symmetric):
    lo, hi = min(x_min.item(), 0.0), max(x_max.item(), 0.0)
    if symmetric:
        return max(-lo, hi) / ((qmax - qmin) / 2), 0
    scale = (hi - lo) / (qmax - qmin)
    return scale, min(max(qmin - round(lo / scale), qmin), qmax)


def qp_levels(x_min, x_max, qmin, qmax, symmetric):
    if symmetric:
        return qp_right(x_min, x_max, qmin, qmax, symmetric)
    lo, hi = torch.clamp(x_min, max=0.0), torch.clamp(x_max, min=0.0)
    scale = torch.clamp((hi - lo) / (qmax - qmin + 1), min=F32_EPS)
    return scale, int(torch.clamp(qmin - torch.round(lo / scale), qmin, qmax))


def qp_half_up(x_min, x_max, qmin, qmax, symmetric):
    s, z = qp_right(x_min, x_max, qmin, qmax, symmetric)
    if symmetric:
        return s, z
    lo = min(x_min.item(), 0.0)
    return s, qmin + math.floor(-lo / s.item() + 0.5)


def qp_sign(x_min, x_max, qmin, qmax, symmetric):
    s, z = qp_right(x_min, x_max, qmin, qmax, symmetric)
    if symmetric:
        return s, z
    return s, int(qmin + torch.round(torch.clamp(x_min, max=0) / s))


def qp_trunc(x_min, x_max, qmin, qmax, symmetric):
    s, z = qp_right(x_min, x_max, qmin, qmax, symmetric)
    if symmetric:
        return s, z
    return s, int(qmin - torch.clamp(x_min, max=0) / s)


def qp_hard255(x_min, x_max, qmin, qmax, symmetric):
    return qp_right(x_min, x_max, 0, 255, False) if not symmetric else qp_right(x_min, x_max, -128, 127, True)


def qp_swapped(*a):
    s, z = qp_right(*a)
    return z, s


def qp_sym_affine(x_min, x_max, qmin, qmax, symmetric):
    return qp_right(x_min, x_max, qmin, qmax, False)


def qp_stub(*a):
    raise NotImplementedError("replace this line with your code")


def qp_with_qlab(x_min, x_max, qmin, qmax, symmetric):
    qdtype = qlab.qdtype(bits=(qmax - qmin + 1).bit_length() - 1, signed=qmin < 0)
    qp = qlab.qparams_from_range(x_min, x_max, qdtype, symmetric=symmetric)
    return qp.scale, qp.zero_point


def qp_float_zero_point(x_min, x_max, qmin, qmax, symmetric):
    scale, zp = qp_right(x_min, x_max, qmin, qmax, symmetric)
    return scale.item(), float(zp)  # 85.0: a whole number as a float is fine


@pytest.mark.parametrize("fn", [qp_right, qp_with_qlab, qp_float_zero_point])
def test_qparams_accepts_correct(fn, capsys):
    assert check_qparams(fn) is True
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize(
    "fn, words",
    [
        (qp_python_floats, "compute in float32"),
        (qp_no_zero, "include 0 in the range first"),
        (qp_no_zero_no_clamp, "lies outside the grid [0, 255]: include 0 in the range first"),
        (qp_by_127, "not by qmax = 127"),
        (qp_by_steps, "a width of 2 * max|x|"),
        (qp_zp_not_rounded, "round the zero point to an integer"),
        (qp_no_eps, "keep the scale at least eps"),
        (qp_levels, "not by the number of levels"),
        (qp_half_up, "rounds half to even"),
        (qp_sign, "the sign of the zero point"),
        (qp_trunc, "int() truncates"),
        (qp_hard255, "use the grid you are given, qmax - qmin, not 255"),
        (qp_swapped, "return (scale, zero_point) in that order"),
        (qp_sym_affine, "symmetric means zero point 0"),
        (qp_stub, "replace the `raise` with your code"),
    ],
)
def test_qparams_rejects_with_its_own_hint(fn, words, capsys):
    assert check_qparams(fn) is False
    out = capsys.readouterr().out
    assert out.startswith("❌") and words in out, out
    assert "Traceback" not in out


def test_qparams_each_mistake_has_a_hint_of_its_own(capsys):
    hints = {}
    for fn in [qp_python_floats, qp_no_zero, qp_no_zero_no_clamp, qp_by_127, qp_by_steps, qp_zp_not_rounded,
               qp_no_eps, qp_levels, qp_half_up, qp_sign, qp_trunc, qp_hard255, qp_swapped, qp_sym_affine]:
        check_qparams(fn)
        hints[fn.__name__] = capsys.readouterr().out.split("Hint: ")[-1]
    assert len(set(hints.values())) == len(hints), hints


def test_qparams_eps_hint_when_the_scale_is_zero(capsys):
    def zero_scale(x_min, x_max, qmin, qmax, symmetric):
        s, z = qp_right(x_min, x_max, qmin, qmax, symmetric)
        return (0.0, z) if x_min == x_max == 0 else (s, z)

    assert check_qparams(zero_scale) is False
    assert "eps = torch.finfo(torch.float32).eps" in capsys.readouterr().out


@pytest.mark.parametrize("got, words", [
    (None, "did you forget `return`?"),
    ((torch.ones(2), 0), "scale is a tensor of shape (2,)"),
    (("0.1", 0), "scale is a str"),
    ((0.1, 0, 3), "return a pair (scale, zero_point)"),
])
def test_qparams_says_what_is_wrong_with_the_returned_value(got, words, capsys):
    assert check_qparams(lambda *a: got) is False
    assert words in capsys.readouterr().out


def ema_ok(running, batch_value, c):
    return running + c * (batch_value - running)


def ema_ok_floats(running, batch_value, c):
    return float(running) + c * (float(batch_value) - float(running))


@pytest.mark.parametrize("fn", [ema_ok, ema_ok_floats])
def test_moving_average_accepts_correct(fn, capsys):
    assert check_moving_average(fn) is True
    assert capsys.readouterr().out.startswith("✅ " + fn.__name__)


GENERIC = "move the running value a fraction c of the way towards the batch's value"


@pytest.mark.parametrize(
    "fn, words",
    [
        # lesson 02 shows this one: its message (the general hint) is checked output there
        (lambda r, b, c: c * r + (1 - c) * b, ["c = 0.01, after batch 1", "Hint: " + GENERIC]),
        (lambda r, b, c: b, ["returns the batch's value", "past is forgotten"]),
        (lambda r, b, c: r, ["never moves"]),
        (lambda r, b, c: r + c * (r - b), ["moves away from the batch's value"]),
        (lambda r, b, c: (r + b) / 2, ["weight 1/2 whatever c is"]),
        (lambda r, b, c: None, ["returned NoneType (did you forget `return`?)"]),
        (lambda r, b, c: [r + c * (b - r)], ["returned list, not a number or a 0-d torch.Tensor"]),
        (lambda r, b, c: torch.stack([r, b]), ["tensor of shape (2,)", "one number"]),
        (lambda r, b, c: 1 / 0, ["raised ZeroDivisionError"]),
    ],
    ids=["swapped", "batch", "running", "sign", "half", "none", "list", "two", "raises"],
)
def test_moving_average_rejects_with_its_own_hint(fn, words, capsys):
    assert check_moving_average(fn) is False  # and it did not raise
    out = capsys.readouterr().out
    assert out.startswith("❌ ")
    for w in words:
        assert w in out, f"{w!r} missing from:\n{out}"
    assert (GENERIC in out) == (GENERIC in words[-1])  # a recognised mistake gets its own hint


# ---------------------------------------------------------------------- check_multiplier


def check_multiplier(fn):
    from qlab.lab.lessons.l04_static_quantization.checks import check_multiplier as check

    return check(fn)


def multiplier_ok(m):
    import math

    q, e = math.frexp(m)
    m0 = round(q * 2**31)
    if m0 == 2**31:  # q rounded up to 1.0
        m0, e = m0 // 2, e + 1
    return m0, -e


def multiplier_numpy_ints(m):
    import numpy as np

    m0, shift = multiplier_ok(m)
    return np.int64(m0), torch.tensor(shift)


@pytest.mark.parametrize("fn", [multiplier_ok, multiplier_numpy_ints, qlab.integer.quantize_multiplier])
def test_multiplier_accepts_correct(fn, capsys):
    assert check_multiplier(fn) is True
    out = capsys.readouterr().out
    assert out.startswith("✅ ") and "2**31 carry" in out


def frexp_parts(m):
    import math

    return math.frexp(m)


MULTIPLIER_MISTAKES = {
    "not_normalised": (lambda m: (round(m * 2**31), 0),
                       ["normalised into [2**30, 2**31)", "expected (M0, shift) = (1696777188, 6)",
                        "got (26512144, 0)"]),
    "sign_flipped": (lambda m: (multiplier_ok(m)[0], -multiplier_ok(m)[1]),
                     ["wrong sign", "shift = -e", "got (1696777188, -6)"]),
    "truncates": (lambda m: (int(frexp_parts(m)[0] * 2**31), -frexp_parts(m)[1]),
                  ["truncation", "got (1696777187, 6)"]),
    "no_carry": (lambda m: (round(frexp_parts(m)[0] * 2**31), -frexp_parts(m)[1]),
                 ["rounds up to 2**31", "does not fit an int32", "halve M0", "got (2147483648, 4)"]),
    "floats": (lambda m: (frexp_parts(m)[0] * 2**31, -frexp_parts(m)[1]),
               ["types (float, int)", "must be integers"]),
    "stub": (lambda m: (_ for _ in ()).throw(NotImplementedError("write me")),
             ["raised NotImplementedError: write me", "replace the `raise`"]),
    "none": (lambda m: None, ["returned NoneType (did you forget `return`?)"]),
    "one_value": (lambda m: m, ["returned float", "tuple of two integers"]),
    "off": (lambda m: (multiplier_ok(m)[0] + 3, multiplier_ok(m)[1]),
            ["M0 * 2**-31 * 2**-shift must equal M"]),
}


@pytest.mark.parametrize("mistake", list(MULTIPLIER_MISTAKES))
def test_multiplier_rejects_with_its_own_hint(mistake, capsys):
    fn, words = MULTIPLIER_MISTAKES[mistake]
    assert check_multiplier(fn) is False  # and it did not raise
    out = capsys.readouterr().out
    assert out.startswith("❌ ")
    for w in words:
        assert w in out, f"{w!r} missing from:\n{out}"
    hints = ["normalised into", "wrong sign", "truncation", "does not fit an int32",
             "must be integers", "replace the `raise`", "must equal M"]
    assert sum(h in out for h in hints) <= 1  # one diagnosis, not a list of guesses


def test_multiplier_cases_cover_the_edges():
    """The checker's cases include M >= 1 (a left shift), a rounding case, and the carry."""
    import math

    from qlab.integer import quantize_multiplier
    from qlab.lab.lessons.l04_static_quantization.checks import _multiplier_cases

    results = [(m, quantize_multiplier(m)) for _, m in _multiplier_cases()]
    assert any(shift < 0 for _, (_, shift) in results)
    assert any(m0 == 2**30 and math.frexp(m)[0] > 0.75 for m, (m0, _) in results)  # the carry
    assert any(int(math.frexp(m)[0] * 2**31) != m0 for m, (m0, _) in results)  # rounding matters
    for m, (m0, shift) in results:
        assert 2**30 <= m0 < 2**31 and math.isclose(math.ldexp(m0, -31 - shift), m, rel_tol=2**-30)


# ---------------------------------------------------------------------- check_dynamic_qparams


def _qmax(reduce_range):
    return 127 if reduce_range else 255


def dyn_ok(x, reduce_range):
    """The exercise's answer in Python floats (float64)."""
    qmax = _qmax(reduce_range)
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (hi - lo) / qmax
    if scale == 0:
        return 0.1, 0
    return max(scale, 6.1e-5), min(max(round(-lo / scale), 0), qmax)


def dyn_ok_float32(x, reduce_range):
    """The same in float32 tensor arithmetic, converted to numbers at the end."""
    qmax = _qmax(reduce_range)
    lo, hi = x.min().clamp(max=0.0), x.max().clamp(min=0.0)
    scale = (hi - lo) / qmax
    if scale == 0:
        return 0.1, 0
    return max(float(scale), 6.1e-5), int(torch.clamp(torch.round(-lo / scale), 0, qmax))


def dyn_qlab(x, reduce_range):
    from qlab.nn.dynamic import dynamic_qparams

    qp = dynamic_qparams(x.min(), x.max(), reduce_range)
    return float(qp.scale), int(qp.zero_point)


def _with(x, reduce_range, qmax=None, widen=True, zp_rule=round, clamp=True, steps=0):
    """dyn_ok with one thing changed: the grid, the widening, the zero point's rounding."""
    qmax = _qmax(reduce_range) if qmax is None else qmax
    lo, hi = x.min().item(), x.max().item()
    if widen:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (qmax + steps)
    if scale == 0:
        return 0.1, 0
    zp = zp_rule(-lo / scale)
    return max(scale, 6.1e-5), min(max(zp, 0), qmax) if clamp else zp


def dyn_no_reduce_range(x, reduce_range):
    return _with(x, reduce_range, qmax=255)


def dyn_always_reduced(x, reduce_range):
    return _with(x, reduce_range, qmax=127)


def dyn_no_widening(x, reduce_range):
    return _with(x, reduce_range, widen=False)


def dyn_no_widening_no_clamp(x, reduce_range):
    return _with(x, reduce_range, widen=False, clamp=False)


def dyn_levels(x, reduce_range):
    return _with(x, reduce_range, steps=1)


def dyn_truncates(x, reduce_range):
    return _with(x, reduce_range, zp_rule=int)


def dyn_unrounded(x, reduce_range):
    return _with(x, reduce_range, zp_rule=lambda v: v)


def dyn_tensors(x, reduce_range):
    lo, hi = x.min().clamp(max=0.0), x.max().clamp(min=0.0)
    scale = (hi - lo) / _qmax(reduce_range)
    return scale, torch.round(-lo / scale)


def dyn_float_zero_point(x, reduce_range):
    scale, zp = dyn_ok(x, reduce_range)
    return scale, float(zp)


def dyn_divides_by_zero(x, reduce_range):
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (hi - lo) / _qmax(reduce_range)
    return max(scale, 6.1e-5), round(-lo / scale)


def dyn_nan_on_zeros(x, reduce_range):
    lo, hi = x.min().clamp(max=0.0), x.max().clamp(min=0.0)
    scale = float((hi - lo) / _qmax(reduce_range))
    zp = float(torch.round(-lo / torch.tensor(scale)))  # nan for all zeros: 0 / 0
    return max(scale, 6.1e-5), int(zp) if math.isfinite(zp) else zp


def dyn_no_small_scale(x, reduce_range):
    qmax = _qmax(reduce_range)
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (hi - lo) / qmax
    return (0.1, 0) if scale == 0 else (scale, min(max(round(-lo / scale), 0), qmax))


def dyn_swapped(x, reduce_range):
    scale, zp = dyn_ok(x, reduce_range)
    return zp, scale


def dyn_stub(x, reduce_range):
    raise NotImplementedError("write choose_qparams")


def dyn_returns_none(x, reduce_range):
    pass


@pytest.mark.parametrize("fn", [dyn_ok, dyn_ok_float32, dyn_qlab])
def test_dynamic_qparams_accepts_correct(fn, capsys):
    assert check_dynamic_qparams(fn) is True
    assert capsys.readouterr().out.startswith("✅ " + fn.__name__)


@pytest.mark.parametrize(
    "fn, words",
    [
        (dyn_no_reduce_range, ["reduce_range=True", "reduce_range=True means 7-bit", "qmax = 127"]),
        (dyn_always_reduced, ["reduce_range=False", "full uint8 grid, qmax = 255"]),
        (dyn_no_widening, ["positive only", "widen the range to include 0"]),
        (dyn_no_widening_no_clamp, ["positive only", "outside the grid 0..127", "clamp it"]),
        (dyn_levels, ["number of steps, qmax - qmin, not the number of levels"]),
        (dyn_truncates, ["int() truncates"]),
        (dyn_unrounded, ["round the zero point to an integer"]),
        (dyn_tensors, ["it returned tensors", "Python float", "Python int"]),
        (dyn_float_zero_point, ["zero_point is the float", "Python int"]),
        (dyn_divides_by_zero, ["all zeros", "ZeroDivisionError", "scale = 0.1, zero_point = 0"]),
        (dyn_nan_on_zeros, ["all zeros", "NaN or Inf", "scale 0.1"]),
        (dyn_no_small_scale, ["tiny range", "6.1e-05", "SMALL_SCALE_THRESHOLD"]),
        (dyn_swapped, ["(scale, zero_point) in that order"]),
        (dyn_stub, ["NotImplementedError", "write choose_qparams", "replace the `raise`"]),
        (dyn_returns_none, ["NoneType (did you forget `return`?)"]),
    ],
)
def test_dynamic_qparams_rejects_with_its_own_hint(fn, words, capsys):
    assert check_dynamic_qparams(fn) is False  # and it did not raise
    out = capsys.readouterr().out
    assert out.startswith("❌ " + fn.__name__)
    for w in words:
        assert w in out, f"{w!r} missing from:\n{out}"
    generic = "over the range widened to include 0, zero_point = clamp"
    assert generic not in out, f"a typical mistake got the generic hint:\n{out}"


# ---------------------------------------------------------------------- check_ste (lesson 05)


class SteGood(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, s, z, qmin, qmax):
        q = torch.round(x * (1.0 / s)) + z
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (q.clamp(qmin, qmax) - z) * s

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return g * inside, None, None, None, None


class SteNoClip(SteGood):
    @staticmethod
    def backward(ctx, g):
        return g, None, None, None, None


class SteRoundGrad(SteGood):
    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g), None, None, None, None


class SteNoClamp(SteGood):
    @staticmethod
    def forward(ctx, x, s, z, qmin, qmax):
        ctx.save_for_backward(torch.ones_like(x, dtype=torch.bool))
        return (torch.round(x / s) + z - z) * s


class SteMaskOnX(SteGood):
    @staticmethod
    def forward(ctx, x, s, z, qmin, qmax):
        q = torch.round(x * (1.0 / s)) + z
        ctx.save_for_backward((x >= (qmin - z) * s) & (x <= (qmax - z) * s))
        return (q.clamp(qmin, qmax) - z) * s


class SteHalfUp(SteGood):
    @staticmethod
    def forward(ctx, x, s, z, qmin, qmax):
        q = torch.floor(x / s + 0.5) + z
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (q.clamp(qmin, qmax) - z) * s


def ste_no_grad(x, s, z, qmin, qmax):
    with torch.no_grad():
        return torch.fake_quantize_per_tensor_affine(x, s, z, qmin, qmax)


class SteTodo(SteGood):
    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError


def test_ste_accepts_a_correct_function(capsys):
    from qlab.lab.lessons.l05_quantization_aware_training.checks import check_ste

    assert check_ste(SteGood) is True
    assert capsys.readouterr().out.startswith("✅ SteGood")


@pytest.mark.parametrize(("fn", "words"), [
    (SteNoClip, ["gradient of x differs", "must be clipped"]),
    (SteRoundGrad, ["0 everywhere", "round's true derivative"]),
    (SteNoClamp, ["values differ", "must clamp the codes"]),
    (SteMaskOnX, ["decide it on the rounded code"]),
    (SteHalfUp, ["ties", "half to even"]),
    (ste_no_grad, ["no gradient reached x"]),
    (SteTodo, ["NotImplementedError", "replace the `raise`"]),
])
def test_ste_names_each_typical_mistake(fn, words, capsys):
    from qlab.lab.lessons.l05_quantization_aware_training.checks import check_ste

    assert check_ste(fn) is False
    out = capsys.readouterr().out
    assert out.startswith("❌ ")
    for w in words:
        assert w in out, out


# ---------------------------------------------------------------------- check_decision (lesson 06)

GAIN = 1.1


def _acceptable(rows, tolerance, methods):
    fp32 = next(r for r in rows if r["method"] == "fp32")
    return [r for r in rows if r["method"] in methods and r["loss"] <= tolerance
            and (r["speedup"] > GAIN or r["size_bytes"] < fp32["size_bytes"] / GAIN)]


def decision_ok(rows, tolerance):
    for stage in (("dynamic", "dynamic + SmoothQuant", "static"), ("QAT 8-bit", "QAT 4-bit")):
        ok = _acceptable(rows, tolerance, stage)
        if ok:
            return max(ok, key=lambda r: r["speedup"])["method"]
    return None


def decision_least_loss(rows, tolerance):
    """The workflow, but the most accurate acceptable model instead of the fastest."""
    for stage in (("dynamic", "static"), ("QAT 8-bit", "QAT 4-bit")):
        ok = _acceptable(rows, tolerance, stage)
        if ok:
            return min(ok, key=lambda r: r["loss"])["method"]
    return None


def decision_fastest(rows, tolerance):
    return max((r for r in rows if r["method"] != "fp32"), key=lambda r: r["speedup"])["method"]


def decision_qat_first(rows, tolerance):
    for stage in (("QAT 8-bit", "QAT 4-bit"), ("dynamic", "static")):
        ok = _acceptable(rows, tolerance, stage)
        if ok:
            return max(ok, key=lambda r: r["speedup"])["method"]
    return None


def decision_no_gain(rows, tolerance):
    for stage in (("dynamic", "static"), ("QAT 8-bit", "QAT 4-bit")):
        ok = [r for r in rows if r["method"] in stage and r["loss"] <= tolerance]
        if ok:
            return max(ok, key=lambda r: r["speedup"])["method"]
    return None


def decision_fp32_string(rows, tolerance):
    return decision_ok(rows, tolerance) or "fp32"


def test_decision_accepts_a_correct_function(capsys):
    from qlab.lab.lessons.l06_choosing_a_method.checks import check_decision

    assert check_decision(decision_ok) is True
    assert capsys.readouterr().out.startswith("✅ decision_ok")


@pytest.mark.parametrize(("fn", "words"), [
    (decision_least_loss, "smallest loss is not the goal"),
    (decision_fastest, "the tolerance comes first"),
    (decision_qat_first, "PTQ first"),
    (decision_no_gain, "must also gain something"),
    (decision_fp32_string, "return None"),
])
def test_decision_names_each_typical_mistake(fn, words, capsys):
    from qlab.lab.lessons.l06_choosing_a_method.checks import check_decision

    assert check_decision(fn) is False
    out = capsys.readouterr().out
    assert out.startswith("❌ ") and words in out, out


def decision_no_smoothquant(rows, tolerance):
    """The workflow, but only 'dynamic' and 'static' counted as PTQ."""
    for stage in (("dynamic", "static"), ("QAT 8-bit", "QAT 4-bit")):
        ok = _acceptable(rows, tolerance, stage)
        if ok:
            return max(ok, key=lambda r: r["speedup"])["method"]
    return None


def test_decision_knows_smoothquant_is_ptq(capsys):
    from qlab.lab.lessons.l06_choosing_a_method.checks import check_decision

    assert check_decision(decision_no_smoothquant) is False
    assert "'dynamic + SmoothQuant'" in capsys.readouterr().out
