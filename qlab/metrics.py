"""How far a quantized result is from the float one.

    mse    = mean((x - y)^2)
    sqnr   = 10 * log10(sum(x^2) / sum((x - y)^2))    in dB; about 6.02 dB per bit
    cosine = <x, y> / (|x| |y|)

x and y may be tensors, numpy arrays or lists of numbers, of the same (non-empty) shape;
the sums are taken in float64.
"""

from __future__ import annotations

import io
import math

import torch


def _as_values(v, name: str) -> torch.Tensor:
    """A tensor, numpy array or (nested) list of numbers, as a float64 tensor."""
    try:
        t = torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(
            f"{name} must be a tensor, numpy array or list of numbers, got {type(v).__name__} ({e})"
        ) from e
    if t.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t.double()


def _pair(x, y):
    """x and y as flat float64 tensors: same shape, not empty."""
    x, y = _as_values(x, "x"), _as_values(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.numel() == 0:
        raise ValueError("x and y are empty; an error needs at least one value to compare")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("x and y must be finite; they contain NaN or Inf")
    return x.flatten(), y.flatten()


def mse(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared error between the reference x and the approximation y."""
    x, y = _pair(x, y)
    return float(((x - y) ** 2).mean())


def sqnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum x^2 / sum (x - y)^2).

    inf when y equals x exactly.
    """
    x, y = _pair(x, y)
    noise = float(((x - y) ** 2).sum())
    signal = float((x**2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Cosine similarity of x and y as flat vectors (1.0 means the same direction)."""
    x, y = _pair(x, y)
    return float(torch.nn.functional.cosine_similarity(x, y, dim=0))


def model_size_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's serialized state_dict: what it really costs to store."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes
