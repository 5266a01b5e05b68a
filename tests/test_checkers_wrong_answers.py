"""Every exercise checker, fed a family of wrong answers (it raises, returns None, the wrong type, the wrong
dtype, the wrong shape, NaN, numpy scalars of the wrong value), prints a ❌ verdict with a hint and never
raises; the right answer with numpy scalars for its numbers passes wherever Python numbers pass.

The checkers are found in the lesson packages, so a new one is covered without editing this file; the
right answers are the lessons' solution cells, read from the notebooks; each wrong answer is the solution's
result, spoiled."""

import functools
import importlib
import json
import math
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import qlab
import qlab.lab.lessons
from qlab.lab.kit.check import checker, describe, is_number

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _checkers() -> dict:
    """{name: check_* function} of every lesson's checks module."""
    found = {}
    for lesson in pkgutil.iter_modules(qlab.lab.lessons.__path__):
        checks = importlib.import_module(f"qlab.lab.lessons.{lesson.name}.checks")
        found.update({name: fn for name, fn in vars(checks).items()
                      if name.startswith("check_") and callable(fn) and fn.__module__ == checks.__name__})
    return found


CHECKERS = _checkers()


def _solution_cells() -> dict[str, str]:
    """{checker name: source of the notebook cell tagged "solution" that calls it}."""
    cells = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"])
            if "solution" in cell.get("metadata", {}).get("tags", []):
                cells.update({name: source for name in re.findall(r"\b(check_\w+)\(", source)})
    return cells


SOLUTIONS = _solution_cells()


@functools.cache
def solution(check_name: str):
    """The function (or torch.autograd.Function) that the lesson's solution cell hands to the checker."""
    from torchao.quantization.quant_primitives import MappingType

    handed = []
    namespace = {"math": math, "torch": torch, "qlab": qlab, "MappingType": MappingType,
                 check_name: lambda fn: handed.append(fn) or True}
    exec(compile(SOLUTIONS[check_name], f"<solution cell of {check_name}>", "exec"), namespace)
    return handed[0]


def _each_leaf(value, spoil):
    """value with spoil applied to each leaf: what is not a tuple, list or dict."""
    if isinstance(value, (tuple, list)):
        return (tuple if isinstance(value, tuple) else list)(_each_leaf(v, spoil) for v in value)
    if isinstance(value, dict):
        return {k: _each_leaf(v, spoil) for k, v in value.items()}
    return spoil(value)


def _wrong_dtype(v):
    if isinstance(v, torch.Tensor):
        return v.detach().to(torch.bool)
    if is_number(v):
        return complex(v)
    return v.encode() if isinstance(v, str) else v


def _wrong_shape(v):
    return torch.stack([v, v]) if isinstance(v, torch.Tensor) else [v, v]


def _nan(v):
    if isinstance(v, torch.Tensor):
        return torch.full(v.shape, math.nan)
    return math.nan


def _numpy_wrong_value(v):
    if isinstance(v, torch.Tensor):
        return np.float32(v.item() + 1) if v.dim() == 0 else v.detach().numpy() + 1
    if isinstance(v, bool) or v is None:
        return np.float64(1.0)
    if is_number(v):
        return np.int64(v + 1) if isinstance(v, int) else np.float32(v + 1)
    return np.str_(v + "?") if isinstance(v, str) else v


def _numpy_same_value(v):
    """A Python number or 0-d tensor as the numpy scalar that holds it exactly; anything else as it is."""
    if isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad:
        return v.numpy()[()] if v.is_floating_point() else np.int64(v.item())
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v
    if isinstance(v, int):
        return np.int64(v)
    return np.float32(v) if float(np.float32(v)) == v else np.float64(v)


def _raise(result):
    raise ValueError("a bug in the student's code")


#: the wrong answers: each spoils what the solution returns
WRONG = {
    "raises": _raise,
    "returns None": lambda r: None,
    "returns a str": lambda r: "0.5",
    "returns a dict": lambda r: {"answer": r},
    "returns a list of three": lambda r: [r, r, r],
    "returns a function": lambda r: len,
    "wrong dtype (bool tensors, complex numbers, bytes)": lambda r: _each_leaf(r, _wrong_dtype),
    "wrong shape (tensors stacked, numbers in lists)": lambda r: _each_leaf(r, _wrong_shape),
    "NaN": lambda r: _each_leaf(r, _nan),
    "numpy scalars of the wrong value": lambda r: _each_leaf(r, _numpy_wrong_value),
}


def student(check_name: str, spoil, name: str = "wrong_answer"):
    """The lesson's solution with its result spoiled, called the way the checker calls it."""
    right = solution(check_name)
    call = getattr(right, "apply", right)  # a torch.autograd.Function is called as .apply

    def answer(*args):
        return spoil(call(*args))

    answer.__name__ = name
    return type(name, (), {"apply": staticmethod(answer)}) if hasattr(right, "apply") else answer


def test_the_checkers_are_found():
    assert {"check_quantize", "check_qparams", "check_moving_average", "check_percentile_range",
            "check_dynamic_qparams", "check_multiplier", "check_ste", "check_decision",
            "check_torchao_translation"} <= set(CHECKERS)


@pytest.mark.parametrize("check_name", sorted(CHECKERS))
def test_every_checker_has_a_solution_cell_that_passes(check_name, capsys):
    assert check_name in SOLUTIONS, f"no notebook cell tagged 'solution' calls {check_name}"
    assert CHECKERS[check_name](solution(check_name)) is True
    assert capsys.readouterr().out.startswith("✅ ")


@pytest.mark.parametrize("mistake", list(WRONG))
@pytest.mark.parametrize("check_name", sorted(CHECKERS))
def test_a_wrong_answer_gets_a_cross_and_a_hint_never_a_traceback(check_name, mistake, capsys):
    passed = CHECKERS[check_name](student(check_name, WRONG[mistake]))  # must not raise
    out = capsys.readouterr().out
    assert not passed, out
    assert re.match(r"❌ wrong_answer: .{20,}", out), out
    assert re.search(r"\b(returned|raised|got)\b", out), f"the verdict does not say what came back: {out}"
    assert "Traceback" not in out


@pytest.mark.parametrize("check_name", sorted(CHECKERS))
def test_the_right_answer_in_numpy_scalars_passes(check_name, capsys):
    """np.float32(0.5) and np.int64(3) count wherever 0.5 and 3 do (a tensor stays a tensor)."""
    fn = student(check_name, lambda r: _each_leaf(r, _numpy_same_value), name="numpy_answer")
    assert CHECKERS[check_name](fn) is True, capsys.readouterr().out


# ---- the cases of issue 25 one by one


class _FakeQuantCodes(torch.autograd.Function):
    """Forgets to dequantize: returns the integer codes."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        return torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, qmin, qmax).to(torch.int64)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None, None, None, None


class _FakeQuantHalf(torch.autograd.Function):
    """The right values, in float16."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax).half()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None, None, None, None


@pytest.mark.parametrize("fn, dtype", [(_FakeQuantCodes, "torch.int64"), (_FakeQuantHalf, "torch.float16")])
def test_ste_names_the_dtype_it_got_and_the_one_it_wants(fn, dtype, capsys):
    assert CHECKERS["check_ste"](fn) is False
    out = capsys.readouterr().out
    assert out.startswith("❌") and dtype in out and "torch.float32" in out, out
    assert "did not match" not in out


def _decide(rows, tolerance):
    from qlab.lab.lessons.l06_choosing_a_method.numbers import decide

    return decide(rows, tolerance)


@pytest.mark.parametrize("fn, words", [
    (lambda rows, tolerance: rows[2], "a dict with the keys"),
    (lambda rows, tolerance: [r["method"] for r in rows], "a list of"),
    (_decide, "a dict with the keys"),
], ids=["a row", "a list", "the lesson's decide"])
def test_decision_says_what_came_back_when_it_is_no_method_name(fn, words, capsys):
    assert CHECKERS["check_decision"](fn) is False
    out = capsys.readouterr().out
    assert out.startswith("❌") and words in out and "None" in out, out
    assert "unhashable" not in out


# ---- the shared helper


def test_checker_turns_a_raise_and_an_uncomparable_result_into_a_cross(capsys):
    @checker("a float")
    def check_half(student):
        return student("x = 1", 1.0) == 0.5  # the comparison raises on some results

    class Spiteful:
        def __eq__(self, other):
            raise RuntimeError("no comparing me")

    def stub(x):
        raise NotImplementedError

    assert check_half(lambda x: x / 2) is True
    assert check_half(stub) is False
    assert capsys.readouterr().out == ("❌ stub: x = 1: raised NotImplementedError (replace the `raise` with "
                                       "your code).\n   It should return a float.\n")
    assert check_half(lambda x: Spiteful()) is False
    assert ("x = 1: it returned a Spiteful, which could not be checked (RuntimeError: no comparing me).\n"
            "   It should return a float.") in capsys.readouterr().out


@pytest.mark.parametrize("not_a_function", [None, "static", torch.zeros(3)])
def test_a_checker_given_no_function_says_to_pass_the_function(not_a_function, capsys):
    assert all(check(not_a_function) is False for check in CHECKERS.values())
    out = capsys.readouterr().out
    assert out.count("❌ your function: it was given ") == len(CHECKERS), out
    assert out.count("pass your function itself") == len(CHECKERS), out


@pytest.mark.parametrize("value, words", [
    (None, "None"), (0.5, "the float 0.5"), (np.float32(0.5), "np.float32(0.5)"),
    (torch.zeros(3, dtype=torch.int64), "a torch.Tensor of dtype torch.int64 and shape (3,)"),
    (np.zeros((2, 3)), "a numpy array of dtype float64 and shape (2, 3)"),
    ((0.1, 3), "a tuple of 2: (the float 0.1, the int 3)"),
    ({"method": "static"}, "a dict with the keys ['method']"), (len, "the function len"),
])
def test_describe_says_type_dtype_and_shape(value, words):
    assert describe(value) == words


def test_is_number_takes_numpy_scalars_not_bools():
    assert all(is_number(v) for v in (1, 0.5, np.int64(2), np.float32(0.5), np.float16(1)))
    assert not any(is_number(v) for v in (True, np.bool_(True), "1", torch.tensor(1.0), None, 1j))
