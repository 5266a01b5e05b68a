"""Static int8 modules: integer weights, integer products, output qparams fixed by calibration.

    acc   = sum_k (q_x - z_x) q_w                            int32 (qlab.integer.int_linear / int_conv2d)
    q_out = clamp(round((acc + b / (s_x s_w)) * M) + z_out, lo, qmax),    M = s_x s_w / s_out

lo is z_out with a fused ReLU (0.0 is the zero point), else qmin. The input's scale s_x comes
with the input (a QTensor), as in torch.ao; the bias is added by the module's bias rule:
"float" as above (fbgemm/x86, torch.ao's numbers) or "int32", round(b / (s_x s_w)) added to
acc (integer-only hardware). Each module is built complete by `from_float`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..integer import (
    float_multiplier,
    int32_bias,
    int_conv2d,
    int_linear,
    requantize,
    to_codes,
    with_float_bias,
)
from ..ops import dequantize
from ..qconfig import check_bias_rule
from ..qparams import QParams
from ..qtypes import along_axis, int8, uint8
from ..tensor import QTensor
from .base import Int8Module, expect_features, on_full_grid, placeholder_qparams, quantize_weight

# -- float placeholders: where a model enters and leaves the int8 world -----------------


class QuantStub(nn.Module):
    """Float placeholder for 'quantize here'. prepare observes its output; convert -> Quantize."""

    def forward(self, x):
        return x


class DeQuantStub(nn.Module):
    """Float placeholder for 'back to float here'. convert -> DeQuantize."""

    def forward(self, x):
        return x


class FloatFunctional(nn.Module):
    """Float add / cat / mul written as a module, so that prepare can observe the result.

    convert turns it into QFunctional (torch.ao's FloatFunctional is accepted as well).
    """

    def __init__(self):
        super().__init__()
        self.activation_post_process = nn.Identity()

    def add(self, x, y):
        return self.activation_post_process(torch.add(x, y))

    def add_relu(self, x, y):
        return self.activation_post_process(torch.relu(torch.add(x, y)))

    def mul(self, x, y):
        return self.activation_post_process(torch.mul(x, y))

    def cat(self, xs, dim: int = 0):
        return self.activation_post_process(torch.cat(xs, dim=dim))

    def forward(self, x):
        raise RuntimeError("FloatFunctional is not called directly; use .add, .cat, .mul, .add_relu")


# -- the int8 modules ----------------------------------------------------------------------


def _expect_qtensor(module: nn.Module, x) -> QTensor:
    if not isinstance(x, QTensor):
        got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(
            f"{type(module).__name__} takes int8 activations (a qlab QTensor, made by a "
            f"Quantize module), got {got}: add a QuantStub at the input and a DeQuantStub at the "
            f"output of the float model (QuantStub before the first int8 layer), then prepare, "
            f"calibrate and convert it again"
        )
    return x


def _same_grid(a: QParams, b: QParams) -> bool:
    return (float(a.scale), int(a.zero_point), a.qmin, a.qmax) == (
        float(b.scale), int(b.zero_point), b.qmin, b.qmax)


def _dequantize(x: QTensor) -> torch.Tensor:
    """x_hat = (q - zero_point) * scale in float32, the float steps of qlab.dequantize; without
    its check of the codes (an int8 module's output holds codes of its own grid)."""
    return x.int_repr.to(torch.float32).sub_(x.qparams.zero_point).mul_(x.qparams.scale)


def _show(qp: QParams) -> str:
    return f"scale={float(qp.scale):.6g}, zero_point={int(qp.zero_point)}"


class Quantize(Int8Module):
    """float -> QTensor: q = clamp(round(x * (1/scale)) + zero_point, qmin, qmax)."""

    qparams_names = ("output_qparams",)

    def __init__(self, output_qparams: QParams | None = None):
        super().__init__()
        self.output_qparams = on_full_grid(placeholder_qparams(uint8) if output_qparams is None
                                           else output_qparams)

    def forward(self, x: torch.Tensor) -> QTensor:
        return QTensor.quantize(x, self.output_qparams)

    def extra_repr(self):
        return _show(self.output_qparams)


class DeQuantize(nn.Module):
    """QTensor -> float: x_hat = (q - zero_point) * scale."""

    def forward(self, x):
        return x.dequantize() if isinstance(x, QTensor) else x


class _QuantWeighted(Int8Module):
    """Shared by QuantLinear and QuantConv2d: integer weight, float bias, fixed output qparams."""

    qparams_names = ("weight_qparams", "output_qparams")

    def __init__(self, weight_shape, bias: bool, relu: bool, bias_rule: str):
        super().__init__()
        self.relu, self.bias_rule = relu, check_bias_rule(bias_rule)
        self.register_buffer("weight", torch.zeros(weight_shape, dtype=torch.int8))
        self.register_buffer("bias", torch.zeros(weight_shape[0]) if bias else None)
        self.weight_qparams = placeholder_qparams(int8)
        self.output_qparams = placeholder_qparams(uint8)

    def _set(self, weight, bias, weight_qp: QParams, output_qp: QParams):
        if output_qp.per_channel or output_qp.qdtype.signed:
            raise ValueError(f"output activations need per-tensor qparams on an unsigned grid, "
                             f"got {output_qp}")
        self.weight = quantize_weight(weight, weight_qp)
        if bias is not None:
            self.bias = bias.detach().float().clone()
        self.weight_qparams, self.output_qparams = weight_qp, on_full_grid(output_qp)

    @property
    def scale(self) -> float:
        return float(self.output_qparams.scale)

    @property
    def zero_point(self) -> int:
        return int(self.output_qparams.zero_point)

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the integer one stands for: (q_w - z_w) * s_w."""
        return dequantize(self.weight, self.weight_qparams)

    def accumulator_scale(self, input_qp: QParams) -> torch.Tensor:
        """float32(s_x * s_w): the float value of one unit of the int32 accumulator."""
        return input_qp.scale.to(torch.float32) * self.weight_qparams.scale

    def int32_bias(self, input_qp: QParams) -> torch.Tensor | None:
        """The int32 bias of the "int32" rule for inputs on input_qp: round(b / (s_x s_w))."""
        return None if self.bias is None else int32_bias(self.bias, self.accumulator_scale(input_qp))

    def _requantize(self, acc: torch.Tensor, input_qp: QParams, channel_dim: int) -> QTensor:
        """acc (a fresh int32 or float32 accumulator, overwritten here) -> the int8 output."""
        acc_scale = self.accumulator_scale(input_qp)
        if self.bias is not None and self.bias_rule == "float":
            acc = with_float_bias(acc, self.bias, acc_scale, channel_dim, inplace=True)
        elif self.bias is not None:
            acc = acc + along_axis(int32_bias(self.bias, acc_scale), acc.dim(), channel_dim)
        out = self.output_qparams
        lo = int(out.zero_point) if self.relu else out.qmin
        m = float_multiplier(input_qp.scale, self.weight_qparams.scale, out.scale)
        # in place: each big temporary buffer is one more page-faulting allocation
        q = requantize(acc, m, int(out.zero_point), lo, out.qmax, channel_dim, inplace=True)
        return QTensor(to_codes(q, out.qdtype.storage), out)

    def _extra(self) -> str:
        return (f"relu={self.relu}, per_channel={self.weight_qparams.per_channel}, "
                f"bias_rule={self.bias_rule!r}, {_show(self.output_qparams)}")


class QuantLinear(_QuantWeighted):
    """int8 Linear: y_q = requantize(sum_k (x_q - z_x)(w_q - z_w) + bias), via torch._int_mm."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 relu: bool = False, bias_rule: str = "float"):
        super().__init__((out_features, in_features), bias, relu, bias_rule)
        self.in_features, self.out_features = in_features, out_features
        self._weight_sum = None  # (weight version it was computed from, sum_k w_q)

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_qp: QParams, output_qp: QParams,
                   relu: bool = False, bias_rule: str = "float") -> QuantLinear:
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, relu, bias_rule)
        m._set(linear.weight, linear.bias, weight_qp, output_qp)
        return m

    def weight_sum(self) -> torch.Tensor:
        """sum_k w_q[n, k] in int32, cached: the zero-point correction int_linear needs."""
        key = (id(self.weight), self.weight._version)
        if self._weight_sum is None or self._weight_sum[0] != key:
            self._weight_sum = (key, self.weight.sum(1, dtype=torch.int32))
        return self._weight_sum[1]

    def forward(self, x) -> QTensor:
        x = _expect_qtensor(self, x)
        expect_features(self, x, self.in_features, "int8 input")
        acc = int_linear(x.int_repr, x.zero_point, self.weight, self.weight_qparams.zero_point,
                         self.weight_sum())
        return self._requantize(acc, x.qparams, channel_dim=-1)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._extra()}"


class QuantConv2d(_QuantWeighted):
    """int8 Conv2d: the exact integer product of qlab.integer.int_conv2d (torch._int_mm for 1x1
    kernels, a float32 conv where a bound proves it exact, else im2col + torch._int_mm or exact
    int32 per group), then the bias and requantization."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, relu: bool = False,
                 bias_rule: str = "float"):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__((out_channels, in_channels // groups, kh, kw), bias, relu, bias_rule)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.dilation, self.groups = dilation, groups
        self._weight_cache = (None, {})  # (weight version, int_conv2d's tensors derived from it)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_qp: QParams, output_qp: QParams,
                   relu: bool = False, bias_rule: str = "float", weight_bias=None) -> QuantConv2d:
        """weight_bias: the float (weight, bias) to store, if not conv's own (a folded QAT conv)."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                f"QuantConv2d supports zero padding given as numbers, got "
                f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}"
            )
        if bool((weight_qp.zero_point != 0).any()):
            raise ValueError("QuantConv2d needs symmetric weights (zero point 0)")
        weight, bias = weight_bias if weight_bias is not None else (conv.weight, conv.bias)
        m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, bias is not None, relu, bias_rule)
        m._set(weight, bias, weight_qp, output_qp)
        return m

    def weight_cache(self) -> dict:
        """int_conv2d's cache of tensors derived from the weight, emptied when the weight changes."""
        key = (id(self.weight), self.weight._version)
        if self._weight_cache[0] != key:
            self._weight_cache = (key, {})
        return self._weight_cache[1]

    def forward(self, x) -> QTensor:
        x = _expect_qtensor(self, x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"QuantConv2d expects input of shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        int32_rule = self.bias is not None and self.bias_rule == "int32"
        acc = int_conv2d(x.int_repr, x.zero_point, self.weight, self.stride, self.padding,
                         self.dilation, self.groups, self.weight_cache(), allow_float32=not int32_rule)
        return self._requantize(acc, x.qparams, channel_dim=1)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, {self._extra()}")


class QFunctional(Int8Module):
    """int8 add / add_relu / mul / cat with fixed output qparams.

    add:  q = quantize((q_a - z_a) s_a + (q_b - z_b) s_b)   (float32, as torch)
    cat:  every input is requantized to the output grid, then the integers are concatenated.

    output_qparams is None when the FloatFunctional it replaces never ran during calibration
    (e.g. a MobileNetV2 block without a skip connection); calling it then is an error.
    """

    qparams_names = ("output_qparams",)

    def __init__(self, output_qparams: QParams | None = None):
        super().__init__()
        self.output_qparams = None if output_qparams is None else on_full_grid(output_qparams)

    def _out(self, y: torch.Tensor, relu: bool = False) -> QTensor:
        """quantize(y) on the output grid (relu: from the zero point up); y is ours to overwrite.

        The float32 steps of qlab.quantize, in place, without its input checks: y is a sum or
        product of dequantized codes, finite by construction.
        """
        qp = self.output_qparams
        if qp is None:
            raise RuntimeError("this QFunctional has no output qparams: the FloatFunctional it "
                               "replaces was never called during calibration")
        lo = int(qp.zero_point) if relu else qp.qmin
        q = y.mul_(1.0 / qp.scale).round_().add_(qp.zero_point.to(torch.float32))
        return QTensor(to_codes(q.clamp_(lo, qp.qmax), qp.qdtype.storage), qp)

    def add(self, a, b) -> QTensor:
        a, b = _expect_qtensor(self, a), _expect_qtensor(self, b)
        return self._out(_dequantize(a) + _dequantize(b))

    def add_relu(self, a, b) -> QTensor:
        a, b = _expect_qtensor(self, a), _expect_qtensor(self, b)
        return self._out(_dequantize(a) + _dequantize(b), relu=True)

    def mul(self, a, b) -> QTensor:
        a, b = _expect_qtensor(self, a), _expect_qtensor(self, b)
        return self._out(_dequantize(a) * _dequantize(b))

    def cat(self, xs, dim: int = 0) -> QTensor:
        xs = [_expect_qtensor(self, x) for x in xs]
        qp = self.output_qparams
        if qp is not None and all(_same_grid(x.qparams, qp) for x in xs):
            return QTensor(torch.cat([x.int_repr for x in xs], dim), qp)
        return self._out(torch.cat([_dequantize(x) for x in xs], dim))

    def forward(self, x):
        raise RuntimeError("QFunctional is not called directly; use .add, .cat, .mul, .add_relu")

    def extra_repr(self):
        return "never calibrated" if self.output_qparams is None else _show(self.output_qparams)
