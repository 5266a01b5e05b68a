"""The measurements behind the lessons' panels and tables: numbers in, numbers out, no drawing.

    quantize_with(x, bits, scheme, clip)      qparams and fake-quantized x at a panel's settings
    quantization_report(x, bits, scheme, clip) the same with the grid, SQNR, MSE and clipped share
    inject_outliers(x, count, size)           x with a few values replaced by size * max|x|
    score_observers(batches, observers)       calibrate each observer, then score its qparams

widgets.py wires these to sliders and plots.py draws what they return; every figure a
panel shows is computed here, by qlab's own functions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

import qlab
from qlab.qparams import QParams

SCHEMES = ("symmetric", "affine")

# ---------------------------------------------------------------------------------------
# Lesson 01: quantization math
# ---------------------------------------------------------------------------------------


def check_scheme(scheme: str) -> None:
    """ValueError unless scheme is "symmetric" or "affine"."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def clip_range(x: torch.Tensor, scheme: str, clip: float) -> tuple[float, float]:
    """The range the grid covers: clip * [min, max] (affine) or clip * [-max|x|, max|x|]."""
    check_scheme(scheme)
    if scheme == "symmetric":
        a = clip * x.abs().max().item()
        return -a, a
    return clip * x.min().item(), clip * x.max().item()


def quantize_with(x: torch.Tensor, bits: int, scheme: str, clip: float) -> tuple[QParams, torch.Tensor]:
    """qparams and fake-quantized x for a bit width, a scheme and a clip range.

    'symmetric' uses a signed grid centred on 0 (PyTorch's default for weights), 'affine'
    an unsigned grid with a zero point (PyTorch's default for activations).
    """
    symmetric = scheme == "symmetric"
    lo, hi = clip_range(x, scheme, clip)
    qp = qlab.qparams_from_range(lo, hi, qlab.qdtype(bits, signed=symmetric), symmetric=symmetric)
    return qp, qlab.fake_quantize(x, qp)


@dataclass
class QuantizationReport:
    """What quantizing x at one setting gives: the grid, x_hat and how far it is from x."""

    qparams: QParams
    x_hat: torch.Tensor
    levels: torch.Tensor  # the float value of every grid point, (q - zero_point) * scale
    clip_range: tuple[float, float]
    sqnr: float  # dB
    mse: float
    clipped: float  # share of x outside clip_range


def quantization_report(x: torch.Tensor, bits: int, scheme: str, clip: float) -> QuantizationReport:
    """Quantize x at (bits, scheme, clip) with qlab and measure the result."""
    qp, x_hat = quantize_with(x, bits, scheme, clip)
    lo, hi = clip_range(x, scheme, clip)
    return QuantizationReport(
        qparams=qp,
        x_hat=x_hat,
        levels=qlab.dequantize(torch.arange(qp.qmin, qp.qmax + 1), qp),
        clip_range=(lo, hi),
        sqnr=qlab.metrics.sqnr(x, x_hat),
        mse=qlab.metrics.mse(x, x_hat),
        clipped=((x < lo) | (x > hi)).float().mean().item(),
    )


# ---------------------------------------------------------------------------------------
# Lesson 02: observers and calibration
# ---------------------------------------------------------------------------------------


def inject_outliers(x: torch.Tensor, count: int, size: float) -> torch.Tensor:
    """x (flattened) with `count` evenly spaced values replaced by size * max|x|."""
    x = x.detach().flatten().clone()
    if count > 0:
        idx = torch.linspace(0, x.numel() - 1, count).long()
        x[idx] = size * x.abs().max()
    return x


def check_factories(observers: Mapping) -> None:
    """Raise TypeError unless observers maps names to observer factories (classes or partials)."""
    if not isinstance(observers, Mapping):
        raise TypeError(f"observers must be a dict of name -> observer class, got {type(observers).__name__}")
    for name, make in observers.items():
        if isinstance(make, torch.nn.Module) or not callable(make):
            raise TypeError(
                f"observers[{name!r}] is a {type(make).__name__} object; pass the class or "
                "functools.partial(ObserverClass, ...), so each run starts from a fresh observer"
            )


def score_observers(x: torch.Tensor | Sequence[torch.Tensor], observers: Mapping,
                    reference: torch.Tensor | None = None) -> dict:  # fmt: skip
    """Calibrate each observer (name -> factory) on x, then score its qparams on `reference`.

    x is one tensor or a list of calibration batches, seen in order. The score compares
    `reference` (default: x, all batches) with its fake-quantized self, so outliers the
    observers saw, or images they did not see, can be left out of it.
    Returns name -> {"range": (min, max) the grid covers, "qparams", "mse", "sqnr" (dB),
    "clipped": share of reference outside the range, "seconds": calibration time}.
    """
    check_factories(observers)
    batches = [x] if isinstance(x, torch.Tensor) else list(x)
    if not batches:
        raise ValueError("x is an empty list of batches; pass a tensor or a list of calibration tensors")
    ref = torch.cat(batches) if reference is None else reference
    out = {}
    for name, make in observers.items():
        obs, start = make(), time.perf_counter()
        for b in batches:
            obs(b)
        qp = obs.qparams()
        seconds = time.perf_counter() - start
        x_hat = qlab.fake_quantize(ref, qp)
        lo, hi = qlab.dequantize(torch.tensor([qp.qmin, qp.qmax]), qp).tolist()
        out[name] = {"range": (lo, hi), "qparams": qp, "seconds": seconds,
                     "mse": qlab.metrics.mse(ref, x_hat), "sqnr": qlab.metrics.sqnr(ref, x_hat),
                     "clipped": ((ref < lo) | (ref > hi)).float().mean().item()}  # fmt: skip
    return out
