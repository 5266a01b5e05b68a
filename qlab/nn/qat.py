"""QAT modules: float layers that fake-quantize their weights and their outputs while training.

    y = act_fq( layer(x, weight_fq(w)) )         forward sees the int8 grid, backward uses the STE

QATConvBn2d also folds batch norm while it trains (as torch.ao's ConvBn2d), so the weights the
int8 model will store are the ones the fake quantizer saw (one fold for both, qlab.fuse's
bn_fold_factor: γ·rsqrt(σ² + eps); torch.ao's QAT module divides by sqrt instead, which differs
in the last bit for about a third of channels):

    w_fold = w · γ / σ_running                    fake-quantized
    z      = conv(x, fq(w_fold)) · σ_running / γ  (undo the fold: z ≈ conv(x, w) with quantized w)
    y      = bn(z + b)                            batch statistics in training, running ones after freeze_bn
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fake_quant import FakeQuantize
from ..fuse import bn_fold_factor, fold_bn_weights
from ..qconfig import default_qat_qconfig


def check_qat_qconfig(qconfig) -> None:
    """QAT trains through fake quantization: both factories must make FakeQuantize modules."""
    _check_fake_quant({role: getattr(qconfig, role)() for role in ("activation", "weight")})


def _check_fake_quant(made: dict[str, nn.Module]) -> None:
    """An observer-only qconfig (for PTQ) would leave the forward float: QAT would train the
    float model."""
    plain = {role: type(m).__name__ for role, m in made.items() if not isinstance(m, FakeQuantize)}
    if plain:
        got = ", ".join(f"{name} ({role})" for role, name in plain.items())
        raise TypeError(
            f"prepare_qat needs a qconfig whose activation and weight make FakeQuantize modules "
            f"(they fake-quantize while the model trains); this one makes {got}, which only "
            f"observe, so QAT would train the float model. Use qlab.default_qat_qconfig, "
            f"qlab.get_default_qat_qconfig(backend) or low_bit_qconfig(..., qat=True)"
        )


def _attach_fake_quant(layer: nn.Module, qconfig, relu: bool) -> None:
    """Give a QAT layer its weight and output fake quantizers (default: torch.ao's x86 QAT)."""
    if qconfig is None:
        qconfig = default_qat_qconfig
    layer.qconfig = qconfig
    layer.relu = relu
    layer.weight_fake_quant = qconfig.weight()
    layer.activation_post_process = qconfig.activation()
    _check_fake_quant({"activation": layer.activation_post_process, "weight": layer.weight_fake_quant})


def _output(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The (fused-ReLU) output, fake-quantized."""
    return layer.activation_post_process(F.relu(y) if layer.relu else y)


class QATLinear(nn.Linear):
    """Linear with fake-quantized weight (weight_fake_quant) and output (activation_post_process)."""

    def __init__(self, in_features, out_features, bias=True, relu=False, qconfig=None):
        super().__init__(in_features, out_features, bias)
        _attach_fake_quant(self, qconfig, relu)

    @classmethod
    def from_float(cls, linear: nn.Linear, qconfig=None, relu: bool = False) -> QATLinear:
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, relu, qconfig)
        m.weight, m.bias = linear.weight, linear.bias
        return m

    def forward(self, x):
        y = F.linear(x, self.weight_fake_quant(self.weight), self.bias)
        return _output(self, y)


class QATConv2d(nn.Conv2d):
    """Conv2d with fake-quantized weight (weight_fake_quant) and output (activation_post_process)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", relu=False, qconfig=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)
        _attach_fake_quant(self, qconfig, relu)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, qconfig=None, relu: bool = False) -> QATConv2d:
        m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, relu, qconfig)
        m.weight, m.bias = conv.weight, conv.bias
        return m

    def forward(self, x):
        y = self._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)
        return _output(self, y)


class QATConvBn2d(nn.Conv2d):
    """Conv2d + BatchNorm2d (+ ReLU) trained with the fold (see module doc); freeze_bn() stops
    batch statistics: bn then uses, and no longer updates, its running mean and variance."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=False, padding_mode="zeros", eps=1e-5, momentum=0.1,
                 relu=False, freeze_bn=False, qconfig=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)
        self.bn = nn.BatchNorm2d(out_channels, eps, momentum)
        self.freeze_bn_stats = freeze_bn
        _attach_fake_quant(self, qconfig, relu)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d, qconfig=None,
                   relu: bool = False) -> QATConvBn2d:
        m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, bn.eps,
                bn.momentum, relu, False, qconfig)
        m.weight, m.bias = conv.weight, conv.bias
        m.bn = bn
        m.train(conv.training)
        return m

    def freeze_bn(self) -> QATConvBn2d:
        """Use (and stop updating) the running statistics."""
        self.freeze_bn_stats = True
        self.bn.eval()
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_bn_stats:
            self.bn.eval()
        return self

    def _fold_factor(self) -> torch.Tensor:
        """γ / σ_running, one per output channel."""
        return bn_fold_factor(self.bn.running_var, self.bn.eps, self.bn.weight)

    def folded_weight_bias(self):
        """The eval-mode fold, w·γ/σ and (b − μ)·γ/σ + β: what convert stores as int8."""
        return fold_bn_weights(self.weight, self.bias, self.bn.running_mean, self.bn.running_var,
                               self.bn.eps, self.bn.weight, self.bn.bias)

    def forward(self, x):
        factor = self._fold_factor()
        w = self.weight_fake_quant(self.weight * factor.reshape(-1, 1, 1, 1))
        z = self._conv_forward(x, w, None) / factor.reshape(1, -1, 1, 1)
        if self.bias is not None:
            z = z + self.bias.reshape(1, -1, 1, 1)
        y = self.bn(z)
        return _output(self, y)


def freeze_bn_stats(module: nn.Module) -> None:
    """Every QATConvBn2d in `module` and its submodules uses, and stops updating, its running
    statistics. Both freeze_bn_stats(model) and model.apply(freeze_bn_stats) (the style of
    torch.ao.nn.intrinsic.qat.freeze_bn_stats) work."""
    for m in module.modules():
        if isinstance(m, QATConvBn2d):
            m.freeze_bn()
