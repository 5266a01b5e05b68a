"""Static int8 modules: integer weights, integer products, fixed activation qparams.

    acc   = sum (q_x - z_x) q_w + bias_q                 int32 (qlab.integer.int_linear / int_conv2d)
    q_out = clamp(round(acc * M) + z_out, lo, 255)       M = s_x s_w / s_out, lo = z_out with ReLU

bias_q = round(b / (s_x s_w)) is an int32 that needs the input's scale. An int8 layer learns
it on its first call (qlab.convert makes that call for you with a calibration example) and
from then on accepts only inputs with that scale and zero point: its qparams are fixed.
"""

from __future__ import annotations

import torch
from torch import nn

from ..integer import float_multiplier, int_conv2d, int_linear, requantize
from ..ops import quantize
from ..qparams import QParams
from ..qtypes import int8, uint8
from .qtensor import QTensor

ACT_QMIN, ACT_QMAX = uint8.qmin, uint8.qmax  # int8 outputs use the full uint8 grid, as torch


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


def _scalar(value, dtype) -> torch.Tensor:
    return torch.tensor(float(value) if dtype == torch.float32 else int(value), dtype=dtype)


class Quantize(nn.Module):
    """float -> QTensor: q = clamp(round(x / scale) + zero_point, 0, 255)."""

    def __init__(self, scale: float, zero_point: int):
        super().__init__()
        self.register_buffer("scale", _scalar(scale, torch.float32))
        self.register_buffer("zero_point", _scalar(zero_point, torch.int64))

    def forward(self, x: torch.Tensor) -> QTensor:
        if isinstance(x, QTensor):
            return x
        qp = QParams(self.scale, self.zero_point, uint8, ACT_QMIN, ACT_QMAX)
        return QTensor(quantize(x, qp), float(self.scale), int(self.zero_point))

    def extra_repr(self):
        return f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}"


class DeQuantize(nn.Module):
    """QTensor -> float: x_hat = (q - zero_point) * scale."""

    def forward(self, x):
        return x.dequantize() if isinstance(x, QTensor) else x


def _expect_qtensor(module: nn.Module, x) -> QTensor:
    if not isinstance(x, QTensor):
        got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(
            f"{type(module).__name__} takes int8 activations (a qlab QTensor, made by a "
            f"Quantize module), got {got}; put a QuantStub in front of it before prepare"
        )
    return x


class _QuantWeighted(nn.Module):
    """Shared by QuantLinear and QuantConv2d: int8 weight, int32 bias, fixed qparams."""

    def __init__(self, weight_shape, bias: bool, relu: bool, per_channel: bool):
        super().__init__()
        self.relu = relu
        n = weight_shape[0]
        ch = (n,) if per_channel else ()
        self.register_buffer("weight", torch.zeros(weight_shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(ch, dtype=torch.float32))
        self.register_buffer("weight_zero_point", torch.zeros(ch, dtype=torch.int64))
        # float32 until the first call tells the input scale, then int32 (see module doc)
        self.register_buffer("bias", torch.zeros(n, dtype=torch.float32) if bias else None)
        self.register_buffer("input_scale", _scalar(float("nan"), torch.float32))
        self.register_buffer("input_zero_point", _scalar(0, torch.int64))
        self.register_buffer("scale", _scalar(1.0, torch.float32))
        self.register_buffer("zero_point", _scalar(0, torch.int64))

    # -- building ------------------------------------------------------------------------
    def _set_from_float(self, weight: torch.Tensor, bias, weight_qp: QParams, out_qp: QParams):
        if weight_qp.qdtype != int8 or weight_qp.qmin < -128 or weight_qp.qmax > 127:
            raise ValueError(f"weights must be quantized to int8, got {weight_qp}")
        if out_qp.per_channel:
            raise ValueError("output activations need per-tensor qparams, got per-channel ones")
        self.weight = quantize(weight.detach().float(), weight_qp, axis=0 if weight_qp.per_channel else None)
        self.weight_scale = weight_qp.scale.clone()
        self.weight_zero_point = weight_qp.zero_point.clone()
        if bias is not None:
            self.bias = bias.detach().float().clone()
        self.scale = out_qp.scale.clone().reshape(())
        self.zero_point = out_qp.zero_point.clone().reshape(())

    @property
    def weight_qparams(self) -> QParams:
        return QParams(self.weight_scale, self.weight_zero_point, int8, -128, 127,
                       axis=0 if self.weight_scale.dim() == 1 else None)

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the int8 one stands for: (q_w - z_w) * s_w."""
        from ..ops import dequantize

        return dequantize(self.weight, self.weight_qparams)

    @property
    def bound(self) -> bool:
        return not torch.isnan(self.input_scale)

    def bind_input(self, scale: float, zero_point: int) -> None:
        """Fix the input qparams and turn the bias into int32: bias_q = round(b / (s_x s_w))."""
        s_x = torch.tensor(scale, dtype=torch.float32)
        if self.bound:
            if s_x != self.input_scale or zero_point != int(self.input_zero_point):
                raise ValueError(
                    f"{type(self).__name__} has fixed input qparams (scale="
                    f"{float(self.input_scale):.6g}, zero_point={int(self.input_zero_point)}) "
                    f"but got scale={scale:.6g}, zero_point={zero_point}"
                )
            return
        if self.bias is not None:
            self.bias = torch.round(self.bias / (s_x * self.weight_scale)).to(torch.int32)
        self.input_scale = s_x
        self.input_zero_point = _scalar(zero_point, torch.int64)

    def multiplier(self) -> torch.Tensor:
        """M = float32(s_x * s_w) / s_out, per output channel when the weight is."""
        return float_multiplier(self.input_scale, self.weight_scale, self.scale)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._w_sum = None  # cached weight row sums: recomputed from the loaded weight
        for name in ("weight_scale", "weight_zero_point", "bias"):
            if prefix + name in state_dict and getattr(self, name) is not None:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _requantize(self, acc: torch.Tensor, channel_dim: int) -> QTensor:
        if self.bias is not None:
            shape = [1] * acc.dim()
            shape[channel_dim] = -1
            acc += self.bias.reshape(shape)
        zp = int(self.zero_point)
        lo = zp if self.relu else ACT_QMIN
        q = requantize(acc, self.multiplier(), zp, lo, ACT_QMAX, channel_dim=channel_dim)
        return QTensor(q.to(torch.uint8), float(self.scale), zp)

    def _check_bound(self):
        if self.bias is not None and self.bias.dtype != torch.int32:
            raise RuntimeError(f"{type(self).__name__}: bias not yet quantized; call bind_input")


class QuantLinear(_QuantWeighted):
    """int8 Linear: y_q = requantize(sum_k (x_q - z_x) w_q + bias_q), via torch._int_mm."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 relu: bool = False, per_channel: bool = True):
        super().__init__((out_features, in_features), bias, relu, per_channel)
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_qp: QParams, output_qp: QParams,
                   relu: bool = False) -> QuantLinear:
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, relu,
                weight_qp.per_channel)
        m._set_from_float(linear.weight, linear.bias, weight_qp, output_qp)
        return m

    def forward(self, x) -> QTensor:
        x = _expect_qtensor(self, x)
        self.bind_input(x.scale, x.zero_point)
        if getattr(self, "_w_sum", None) is None or self._w_sum_of is not self.weight:
            self._w_sum, self._w_sum_of = self.weight.to(torch.int32).sum(1), self.weight
        acc = int_linear(x.int_repr, x.zero_point, self.weight, self.weight_zero_point,
                         self._w_sum)
        return self._requantize(acc, channel_dim=-1)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"relu={self.relu}, per_channel={self.weight_scale.dim() == 1}, "
                f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}")


class QuantConv2d(_QuantWeighted):
    """int8 Conv2d: im2col + integer product (torch._int_mm, or exact int32 for groups)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, relu: bool = False,
                 per_channel: bool = True):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__((out_channels, in_channels // groups, kh, kw), bias, relu, per_channel)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.dilation, self.groups = dilation, groups

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_qp: QParams, output_qp: QParams,
                   relu: bool = False) -> QuantConv2d:
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                f"QuantConv2d supports zero padding given as numbers, got "
                f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}"
            )
        if bool((weight_qp.zero_point != 0).any()):
            raise ValueError("QuantConv2d needs symmetric weights (zero point 0)")
        m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, relu, weight_qp.per_channel)
        m._set_from_float(conv.weight, conv.bias, weight_qp, output_qp)
        return m

    def forward(self, x) -> QTensor:
        x = _expect_qtensor(self, x)
        self.bind_input(x.scale, x.zero_point)
        acc = int_conv2d(x.int_repr, x.zero_point, self.weight, self.stride, self.padding,
                         self.dilation, self.groups)
        return self._requantize(acc, channel_dim=1)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"relu={self.relu}, per_channel={self.weight_scale.dim() == 1}, "
                f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}")


class QFunctional(nn.Module):
    """int8 add / add_relu / mul / cat with fixed output qparams.

    add:  q = clamp(round(((q_a - z_a) s_a + (q_b - z_b) s_b) / s) + z)   (float32, as torch)
    cat:  every input is requantized to the output grid, then the integers are concatenated.
    """

    def __init__(self, scale: float = 1.0, zero_point: int = 0):
        super().__init__()
        self.register_buffer("scale", _scalar(scale, torch.float32))
        self.register_buffer("zero_point", _scalar(zero_point, torch.int64))

    def _out(self, y: torch.Tensor, relu: bool = False) -> QTensor:
        zp = int(self.zero_point)
        inv = torch.tensor(1.0, dtype=torch.float32) / self.scale
        q = torch.round(y * inv) + zp
        q = q.clamp(zp if relu else ACT_QMIN, ACT_QMAX)
        return QTensor(q.to(torch.uint8), float(self.scale), zp)

    def add(self, a, b) -> QTensor:
        a, b = _expect_qtensor(self, a), _expect_qtensor(self, b)
        return self._out(a.dequantize() + b.dequantize())

    def add_relu(self, a, b) -> QTensor:
        a, b = _expect_qtensor(self, a), _expect_qtensor(self, b)
        return self._out(a.dequantize() + b.dequantize(), relu=True)

    def mul(self, a, b) -> QTensor:
        a, b = _expect_qtensor(self, a), _expect_qtensor(self, b)
        return self._out(a.dequantize() * b.dequantize())

    def cat(self, xs, dim: int = 0) -> QTensor:
        xs = [_expect_qtensor(self, x) for x in xs]
        same = all(x.scale == float(self.scale) and x.zero_point == int(self.zero_point) for x in xs)
        if same:
            return QTensor(torch.cat([x.int_repr for x in xs], dim), float(self.scale),
                           int(self.zero_point))
        return self._out(torch.cat([x.dequantize() for x in xs], dim))

    def forward(self, x):
        raise RuntimeError("QFunctional is not called directly; use .add, .cat, .mul, .add_relu")

    def extra_repr(self):
        return f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}"
