"""How far a quantized result is from the float one.

    mse    = mean((x - y)^2)
    sqnr   = 10 * log10(sum(x^2) / sum((x - y)^2))    in dB; about 6.02 dB per bit
    cosine = <x, y> / (|x| |y|)
"""

from __future__ import annotations

import io
import math

import torch


def _pair(x: torch.Tensor, y: torch.Tensor):
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} and {tuple(y.shape)}")
    return x.detach().double().flatten(), y.detach().double().flatten()


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
