"""exercises.py: check_quantize accepts right answers and explains wrong ones."""

import pytest
import torch

import qlab
from qlab.lab.exercises import check_quantize


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


@pytest.mark.parametrize("fn", [qlab.quantize, student_ok])
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
