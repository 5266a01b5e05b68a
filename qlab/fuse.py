"""Fusion: fold batch norm into the conv or linear before it, and mark conv/linear + ReLU pairs.

In eval, batch norm is an affine map per channel, y = γ (z − μ) / σ + β with σ = sqrt(var + eps).
After z = w x + b it folds into the layer:

    w' = w · γ / σ                    (each output channel scaled)
    b' = (b − μ) · γ / σ + β

so conv → bn becomes one conv, and an int8 model stores and runs one layer instead of two.
A ReLU right after is kept as a marker (ConvReLU2d, LinearReLU): the int8 layer clamps its
output at the zero point instead of running a separate op.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ConvReLU2d(nn.Sequential):
    """Conv2d followed by ReLU, to be converted into one int8 conv with a fused ReLU."""

    def __init__(self, conv: nn.Conv2d, relu: nn.Module | None = None):
        super().__init__(conv, relu if relu is not None else nn.ReLU())


class LinearReLU(nn.Sequential):
    """Linear followed by ReLU, to be converted into one int8 linear with a fused ReLU."""

    def __init__(self, linear: nn.Linear, relu: nn.Module | None = None):
        super().__init__(linear, relu if relu is not None else nn.ReLU())


class ConvBn2d(nn.Sequential):
    """Conv2d + BatchNorm2d kept apart for QAT (prepare_qat turns it into QATConvBn2d)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        super().__init__(conv, bn)


class ConvBnReLU2d(nn.Sequential):
    """Conv2d + BatchNorm2d + ReLU kept apart for QAT (-> QATConvBn2d with relu=True)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: nn.Module | None = None):
        super().__init__(conv, bn, relu if relu is not None else nn.ReLU())


def bn_fold_factor(bn_var, bn_eps, bn_gamma=None) -> torch.Tensor:
    """γ / σ = γ · rsqrt(var + eps), one per output channel: the one fold qlab uses.

    Eval fusion and QAT (QATConvBn2d) both use this, so convert stores exactly the weights
    QAT fake-quantized. torch.ao splits here: its fuse_conv_bn_weights uses rsqrt, its QAT
    ConvBn2d divides by sqrt; the two differ in the last bit for about a third of channels.
    """
    if bn_gamma is None:
        bn_gamma = torch.ones_like(bn_var)
    return bn_gamma * torch.rsqrt(bn_var + bn_eps)


def fold_bn_weights(weight, bias, bn_mean, bn_var, bn_eps, bn_gamma, bn_beta):
    """(w', b') with w' = w·γ/σ and b' = (b − μ)·γ/σ + β, σ = sqrt(var + eps), per out channel."""
    if bias is None:
        bias = torch.zeros_like(bn_mean)
    if bn_beta is None:
        bn_beta = torch.zeros_like(bn_mean)
    factor = bn_fold_factor(bn_var, bn_eps, bn_gamma)
    shape = [-1] + [1] * (weight.dim() - 1)
    w = weight * factor.reshape(shape)
    b = (bias - bn_mean) * factor + bn_beta
    return w, b


def fold_bn(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of `layer` (Conv2d or Linear) with `bn`'s eval-mode map folded in (see module doc)."""
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise TypeError(f"fold_bn folds into nn.Conv2d or nn.Linear, got {type(layer).__name__}")
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"fold_bn needs a BatchNorm module, got {type(bn).__name__}")
    n_out = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    if bn.num_features != n_out:
        raise ValueError(f"batch norm has {bn.num_features} features but the layer has {n_out} outputs")
    if bn.running_mean is None:
        raise ValueError("batch norm without running statistics (track_running_stats=False) cannot be folded")
    fused = copy.deepcopy(layer)
    with torch.no_grad():
        w, b = fold_bn_weights(layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps,
                               bn.weight, bn.bias)
        fused.weight = nn.Parameter(w.detach().clone())
        fused.bias = nn.Parameter(b.detach().clone())
    return fused


def fuse_sequence(mods: list[nn.Module], qat: bool = False) -> nn.Module:
    """One module for [conv, bn], [conv, bn, relu], [conv, relu], [linear, bn], [linear, relu].

    Eval (qat=False): batch norm is folded. QAT: conv + bn stay apart (ConvBn2d), as QATConvBn2d
    folds with batch statistics while it trains.
    """
    kinds = tuple(_kind(m) for m in mods)
    if kinds == ("conv", "bn"):
        return ConvBn2d(*mods) if qat else fold_bn(*mods)
    if kinds == ("conv", "bn", "relu"):
        return ConvBnReLU2d(*mods) if qat else ConvReLU2d(fold_bn(mods[0], mods[1]), mods[2])
    if kinds == ("conv", "relu"):
        return ConvReLU2d(*mods)
    if kinds == ("linear", "bn") and not qat:
        return fold_bn(*mods)
    if kinds == ("linear", "relu"):
        return LinearReLU(*mods)
    names = [type(m).__name__ for m in mods]
    raise ValueError(
        f"cannot fuse {names}; fusable sequences are [Conv2d, BatchNorm2d], "
        "[Conv2d, BatchNorm2d, ReLU], [Conv2d, ReLU], [Linear, BatchNorm1d] and [Linear, ReLU]"
    )


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        return "conv"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return "bn"
    if isinstance(m, nn.ReLU):
        return "relu"
    return type(m).__name__


def fuse_modules(model: nn.Module, groups: list[list[str]], inplace: bool = False,
                 qat: bool = False) -> nn.Module:
    """Fuse each group of dotted module names, e.g. [["conv1", "bn1", "relu1"], ["fc", "relu"]].

    The first name gets the fused module, the others become nn.Identity, as in torch.ao.
    Eval fusion (qat=False) needs the model in eval mode: it folds the running statistics.
    """
    if not inplace:
        model = copy.deepcopy(model)
    if not qat and model.training:
        raise ValueError("eval fusion folds batch-norm running statistics: call model.eval() "
                         "first, or pass qat=True to keep conv + bn for QAT")
    for group in groups:
        mods = [model.get_submodule(name) for name in group]
        fused = fuse_sequence(mods, qat=qat)
        model.set_submodule(group[0], fused)
        for name in group[1:]:
            model.set_submodule(name, nn.Identity())
    return model
