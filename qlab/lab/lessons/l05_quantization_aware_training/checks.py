"""Lesson 05, the self-checks of its exercises."""

from __future__ import annotations

import torch

from qlab.lab.kit.check import Student, checker, describe, verdict


def _ste_cases() -> list[tuple[str, torch.Tensor, float, int, int, int]]:
    """(what the case tests, x, scale, zero point, qmin, qmax)."""
    ties = torch.tensor([-0.375, -0.125, 0.125, 0.375, 0.625, 1.125])  # x / 0.25 ends in .5 exactly
    edges = torch.tensor([-0.26, -0.24, 1.34, 1.36])  # codes -1, 0 | 15, 16 on [0, 15] with zp 2
    return [
        ("8-bit affine grid, values inside and outside it", torch.linspace(-3, 3, 61), 0.02, 100, 0, 255),
        ("4-bit signed symmetric grid (weights)", torch.linspace(-1.5, 1.5, 31), 0.125, 0, -8, 7),
        ("ties: x / scale ends in .5 (round half to even)", ties, 0.25, 3, 0, 15),
        ("the grid's edges: codes just inside and just outside", edges, 0.1, 2, 0, 15),
    ]


def _ste_hint(x, got_y, got_g, y, g, scale, zp, qmin, qmax) -> str:
    """The most likely mistake, from how the values or gradients differ from torch's."""
    if got_y is not None and not torch.equal(got_y, y):
        unclamped = (torch.round(x * (1.0 / scale)) + zp - zp) * scale
        if torch.allclose(got_y, unclamped):
            return "the forward pass must clamp the codes to [qmin, qmax] before dequantizing"
        if torch.allclose(got_y, torch.round(x / scale) * scale):
            return "the zero point: q = round(x / s) + z, then x_hat = (clamp(q) - z) * s"
        bad = (got_y - y).abs() > 1e-6
        if bool(bad.any()) and torch.allclose(got_y[bad], y[bad], atol=scale * 1.01):
            return ("a few values are one step off: torch rounds half to even (torch.round), at "
                    "x * (1 / scale), the inverse scale computed first")
        return "forward: x_hat = (clamp(round(x * (1/s)) + z, qmin, qmax) - z) * s"
    if got_g is None:
        return ("no gradient reached x: return it from backward, as the first of one value per "
                "forward input (grad, None, None, None, None)")
    if not got_g.any():
        return ("the gradient is 0 everywhere: that is round's true derivative, which is why QAT needs "
                "the straight-through estimator: pass grad_output through where the code is in the grid")
    if bool((got_g != 0).all()) and not bool((g != 0).all()):
        return ("the gradient must be clipped: 0 where the code was clamped to qmin or qmax (the value "
                "cannot move there), grad_output elsewhere")
    return ("the mask: grad_output where qmin <= round(x * (1/s)) + z <= qmax, 0 elsewhere (decide it "
            "on the rounded code, as torch does, not on x against the range)")


def _first_difference(x, got, expected) -> str:
    i = int((got != expected).nonzero()[0])
    return f" e.g. at x = {float(x[i]):.4g}: expected {float(expected[i]):.4g}, got {float(got[i]):.4g}"


def _run_student_ste(student: Student, where, x, scale, zp, qmin, qmax, upstream):
    """(values, gradient of x or None) of the student's function, or a message if it failed."""
    xs = x.clone().requires_grad_()
    got = student(where, xs, scale, zp, qmin, qmax)
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        return f"it returned {describe(got)}; return a float tensor shaped like x {tuple(x.shape)}"
    if got.dtype != x.dtype:
        codes = "" if got.is_floating_point() else ", not the integer codes q"
        return (f"it returned {describe(got)}; return x's dtype, {x.dtype}: the dequantized values "
                f"x_hat = (clamp(q, qmin, qmax) - z) * s{codes}")
    if got.requires_grad:
        with student.running(f"{where}, in backward"):
            got.backward(upstream)
    return got.detach(), xs.grad


@checker("x_hat = (clamp(round(x * (1/s)) + z, qmin, qmax) - z) * s, float32 and shaped like x; and "
         "backward: grad_output where the code is inside the grid, 0 elsewhere, then four None",
         method="apply")
def check_ste(student: Student) -> bool:
    """Check a student's fake quantization with the straight-through estimator: a
    torch.autograd.Function (or a function) called as fn.apply(x, scale, zero_point, qmin, qmax),
    against torch.fake_quantize_per_tensor_affine: the values, and the gradient of x."""
    name = student.name
    cases = _ste_cases()
    for what, x, scale, zp, qmin, qmax in cases:
        x_ref = x.clone().requires_grad_()
        y = torch.fake_quantize_per_tensor_affine(x_ref, scale, zp, qmin, qmax)
        upstream = torch.linspace(0.5, 1.5, x.numel())
        y.backward(upstream)
        y, g = y.detach(), x_ref.grad
        where = f"{what} (scale {scale}, zero point {zp}, grid [{qmin}, {qmax}])"
        result = _run_student_ste(student, where, x, scale, zp, qmin, qmax, upstream)
        if isinstance(result, str):
            return verdict(False, name, f"{where}: {result}")
        got_y, got_g = result
        if not torch.equal(got_y, y):
            hint = _ste_hint(x, got_y, got_g, y, g, scale, zp, qmin, qmax)
            return verdict(False, name, f"{where}: the values differ from torch's"
                                        f"{_first_difference(x, got_y, y)}.\n   Hint: {hint}")
        if got_g is None or not torch.equal(got_g, g):
            detail = "" if got_g is None else _first_difference(x, got_g, g)
            hint = _ste_hint(x, None, got_g, y, g, scale, zp, qmin, qmax)
            return verdict(False, name, f"{where}: the gradient of x differs from torch's{detail}."
                                        f"\n   Hint: {hint}")
    return verdict(True, name, f"values and gradients equal torch.fake_quantize_per_tensor_affine's in all "
                               f"{len(cases)} cases, ties and the grid's edges included")
