"""exercises.py: the checkers accept right answers, give each typical mistake its own hint, and
never raise, so a student's lesson keeps running."""

import pytest
import torch

import qlab
from qlab.lab.exercises import check_moving_average, check_quantize


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
