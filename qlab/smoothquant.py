"""SmoothQuant: move activation outliers into the weights, one input channel at a time.

Xiao et al. 2023 (SmoothQuant). A Linear y = x Wᵀ + b sees a few input channels j whose
activations are far larger than the rest; one per-tensor activation grid then wastes its levels
on them. Divide channel j of x by s_j and multiply column j of W by s_j:

    s_j = max|X_j|^α / max|W_:,j|^(1-α)                  (max over calibration data / out rows)
    y   = (x · diag(1/s)) (W · diag(s))ᵀ + b             the same y, up to float rounding

After smoothing, channel j of x reaches max|X_j|^(1-α) · max|W_:,j|^(1-α) and column j of W
reaches max|X_j|^α · max|W_:,j|^α: α = 1 flattens the activations (every channel reaches 1) and
puts their spread into the weights, α = 0 does the opposite, α = 0.5 makes both equal.

Where 1/s goes:
  * folded into the op that produces x, free at run time: a LayerNorm (γ/s, β/s) or a Linear
    (rows of W_prev / s, b_prev / s), but only where that producer's output reaches nothing else
    than the Linears that share this s (through ops that keep channels apart, e.g. attention's
    weighted sum over tokens). The caller names those places in `folds`.
  * otherwise an explicit ChannelScale module (x * (1/s), one multiply per element) before the
    Linear. In a post-LayerNorm BERT every LayerNorm's output also feeds the residual sum, so
    folding 1/s into it would change the residual path: there the explicit module is needed.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from .qtypes import is_real

#: floor for the channel maxima (as the authors' code), so a silent channel gives no 0 or inf
MIN_ABSMAX = 1e-5


def _check_alpha(alpha) -> float:
    if not is_real(alpha):
        raise TypeError(f"alpha must be a number in [0, 1], got {type(alpha).__name__}")
    if not 0.0 <= float(alpha) <= 1.0:  # also refuses NaN
        raise ValueError(f"alpha must be in [0, 1] (1: the activations' spread moves into the "
                         f"weights, 0: the weights' into the activations), got {alpha}")
    return float(alpha)


def _batches(calibration) -> list:
    """The calibration batches as a list; ValueError if there are none."""
    if isinstance(calibration, (torch.Tensor, Mapping)):
        calibration = [calibration]
    if not isinstance(calibration, Iterable) or isinstance(calibration, (str, bytes)):
        raise TypeError("calibration must be a list of batches (each passed as model(batch)), "
                        f"got {type(calibration).__name__}")
    batches = list(calibration)
    if not batches:
        raise ValueError("calibration is empty: SmoothQuant takes each channel's max|X_j| from "
                         "calibration data; pass at least one batch")
    return batches


def input_channel_absmax(model: nn.Module, calibration, layer_type: type = nn.Linear
                         ) -> dict[str, torch.Tensor]:  # fmt: skip
    """max|X_j| per input channel j of every `layer_type` module, over all calibration batches.

    Each batch is run as model(batch) under no_grad; a forward pre-hook on each layer takes
    x.abs().amax over every dimension but the last (the channel). Layers that never ran are
    left out of the result.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    batches = _batches(calibration)
    absmax: dict[str, torch.Tensor] = {}

    batch = [0]  # the batch being run, for the errors

    def hook(name):
        def record(module, args):
            x = args[0].detach().float()
            _check_calibration_input(x, name, module, batch[0])
            m = x.abs().reshape(-1, x.shape[-1]).amax(0)
            absmax[name] = m if name not in absmax else torch.maximum(absmax[name], m)
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, layer_type)]  # fmt: skip
    if not handles:
        raise ValueError(f"the model has no {layer_type.__name__} to calibrate")
    try:
        with torch.no_grad():
            for i, b in enumerate(batches):
                batch[0] = i
                model(b)
    finally:
        for h in handles:
            h.remove()
    return absmax


def _check_calibration_input(x: torch.Tensor, name: str, layer: nn.Module, batch: int) -> None:
    """A layer's input during calibration must hold at least one row and finite values."""
    where = f"calibration batch {batch} gives '{name}' ({type(layer).__name__})"
    if x.numel() == 0:
        raise ValueError(f"{where} an empty input (shape {tuple(x.shape)}); each calibration batch "
                         "must give every Linear at least one row (token) to measure max|X_j| on")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{where} NaN or Inf inputs; calibration data must be finite (check the "
                         "batches, and the model on them: max|X_j| is measured on each Linear's input)")


def outlier_ratio(act_absmax: torch.Tensor) -> float:
    """max_j max|X_j| / median_j max|X_j|: how far the largest channel sticks out (1 = flat)."""
    a = torch.as_tensor(act_absmax).float()
    return float(a.max() / a.median().clamp_min(MIN_ABSMAX))


def smooth_scales(act_absmax: torch.Tensor, weight: torch.Tensor | Sequence[torch.Tensor],
                  alpha: float) -> torch.Tensor:  # fmt: skip
    """s_j = max|X_j|^α / max|W_:,j|^(1-α), one per input channel j (both maxima floored at 1e-5).

    weight is the [out, in] weight of the Linear, or a list of them when several Linears read
    the same x (query, key, value) and so must share s: their rows are stacked first.
    """
    alpha = _check_alpha(alpha)
    if not isinstance(act_absmax, torch.Tensor) or act_absmax.dim() != 1:
        raise TypeError("act_absmax must be a 1-d tensor of per-channel max|X_j|, got "
                        + (f"shape {tuple(act_absmax.shape)}" if isinstance(act_absmax, torch.Tensor)
                           else type(act_absmax).__name__))
    weights = [weight] if isinstance(weight, torch.Tensor) else list(weight)
    if not weights or any(not isinstance(w, torch.Tensor) or w.dim() != 2 for w in weights):
        raise TypeError("weight must be a 2-d [out, in] tensor or a list of them")
    for w in weights:
        if w.shape[1] != act_absmax.numel():
            raise ValueError(f"weight has {w.shape[1]} input channels but act_absmax has "
                             f"{act_absmax.numel()}; both describe the same x")
    if not torch.isfinite(act_absmax).all() or (act_absmax < 0).any():
        raise ValueError("act_absmax must hold finite maxima >= 0")
    w_absmax = torch.cat([w.detach().float().abs() for w in weights]).amax(0)
    a = act_absmax.float().clamp_min(MIN_ABSMAX)
    return a.pow(alpha) / w_absmax.clamp_min(MIN_ABSMAX).pow(1.0 - alpha)


class ChannelScale(nn.Module):
    """y = x * inv_scale along the last dimension: SmoothQuant's 1/s, as its own module
    (inv_scale is kept in the dtype it comes in: smooth_linear gives the Linear's)."""

    def __init__(self, inv_scale: torch.Tensor):
        super().__init__()
        self.register_buffer("inv_scale", inv_scale.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.inv_scale

    def extra_repr(self) -> str:
        return f"channels={self.inv_scale.numel()}"


def smooth_linear(linear: nn.Linear, s: torch.Tensor) -> nn.Sequential:
    """Sequential(smooth = x * (1/s), linear = W · diag(s)): the same map as `linear`.

    quantize_dynamic (qlab's or torch.ao's) then quantizes the inner Linear as usual.
    """
    scaled = copy.deepcopy(linear)
    dtype = scaled.weight.dtype
    with torch.no_grad():
        scaled.weight.mul_(s.to(dtype))
    return nn.Sequential(OrderedDict(smooth=ChannelScale((1.0 / s).to(dtype)), linear=scaled))


def fold_inverse_scale(producer: nn.Module, s: torch.Tensor) -> None:
    """Divide the producer's output channels by s in place: LayerNorm γ/s, β/s; Linear W/s, b/s."""
    if not isinstance(producer, (nn.LayerNorm, nn.Linear)):
        raise TypeError(f"1/s can be folded into an nn.LayerNorm or an nn.Linear, got "
                        f"{type(producer).__name__}")
    with torch.no_grad():
        inv = (1.0 / s).to(producer.weight.dtype)
        producer.weight.mul_(inv[:, None] if isinstance(producer, nn.Linear) else inv)
        if producer.bias is not None:
            producer.bias.mul_(inv)


def smooth_quant(model: nn.Module, calibration, alpha: float,
                 folds: Mapping[str, Sequence[str]] | None = None, inplace: bool = False,
                 act_absmax: Mapping[str, torch.Tensor] | None = None) -> nn.Module:  # fmt: skip
    """Smooth every nn.Linear of the model for quantization, keeping its float outputs.

    calibration: batches run as model(batch) to measure max|X_j| (or pass act_absmax, the result
    of input_channel_absmax, to reuse one measurement for several α).
    folds: {producer name: [Linear names]} where the producer (a LayerNorm or a Linear) feeds
    only those Linears; they share one s = smooth_scales(max|X|, [their weights], α), and 1/s is
    folded into the producer. Every other Linear that ran gets an explicit ChannelScale before it
    (smooth_linear): in a post-LN BERT that is all of them but what `folds` names.
    Returns the smoothed model (a copy unless inplace).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    alpha = _check_alpha(alpha)
    if act_absmax is None:
        act_absmax = input_channel_absmax(model, calibration)
    elif not act_absmax:
        raise ValueError("act_absmax is empty: no Linear was calibrated")
    if not inplace:
        model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    folded = set()
    for producer, consumers in (folds or {}).items():
        missing = [n for n in (producer, *consumers) if n not in modules]
        if missing:
            raise ValueError(f"folds names modules the model does not have: {missing}")
        if not consumers or any(not isinstance(modules[n], nn.Linear) or n not in act_absmax
                                for n in consumers):  # fmt: skip
            raise ValueError(f"folds[{producer!r}] must list nn.Linear modules that ran during "
                             f"calibration, got {list(consumers)}")
        x_absmax = torch.stack([act_absmax[n] for n in consumers]).amax(0)
        s = smooth_scales(x_absmax, [modules[n].weight for n in consumers], alpha)
        fold_inverse_scale(modules[producer], s)
        for n in consumers:
            with torch.no_grad():
                modules[n].weight.mul_(s)
        folded |= set(consumers)
    for name, m in list(modules.items()):
        if type(m) is nn.Linear and name in act_absmax and name not in folded:
            s = smooth_scales(act_absmax[name], m.weight, alpha)
            if not name:  # the model is itself one Linear
                return smooth_linear(m, s)
            model.set_submodule(name, smooth_linear(m, s))
    return model
