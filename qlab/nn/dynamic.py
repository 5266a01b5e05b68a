"""Dynamic int8 modules: int8 weights; the activation grid is chosen on every call.

    per call:  qp_x = dynamic_qparams(min(x), max(x))       (this call's range)
               acc  = sum (q_x - z_x)(q_w - z_w)             int32 (torch._int_mm)
               y    = fma(acc, s_x * s_w, b)                 float out: no output grid to fix

Nothing is calibrated: the cook measures the seasoning for every order. The numerics follow
fbgemm (torch.ao's dynamic Linear and LSTM on x86): qparams from fbgemm's
ChooseQuantizationParams (double precision; reduce_range gives 7-bit activations, 0..127),
activations quantized as round(fma(x, 1/s_x, z_x)).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..integer import int_linear
from ..qparams import QParams, grid
from ..qtypes import int8, uint8
from .base import Int8Module, expect_features, placeholder_qparams, quantize_weight

SMALL_SCALE_THRESHOLD = 6.1e-5  # fbgemm: scales below this are raised to it


def dynamic_qparams(x_min: float, x_max: float, reduce_range: bool = True) -> QParams:
    """QParams for [x_min, x_max] on uint8 (0..127 with reduce_range), as fbgemm chooses them:

        scale = (max - min) / (qmax - qmin)   in double, then stored as float32
        zp    = round(qmin - min / scale) or round(qmax - max / scale), whichever adds smaller
                terms (less rounding error), clamped to the grid
    """
    qmin, qmax = grid(uint8, reduce_range)
    lo, hi = min(float(x_min), 0.0), max(float(x_max), 0.0)
    scale = (hi - lo) / (qmax - qmin)
    f32 = float(torch.tensor(scale, dtype=torch.float32))
    if f32 == 0.0 or math.isinf(float(torch.tensor(1.0 / f32, dtype=torch.float32))):
        scale = 0.1
    if scale < SMALL_SCALE_THRESHOLD:
        org, scale = scale, SMALL_SCALE_THRESHOLD
        if lo == 0.0:
            hi = SMALL_SCALE_THRESHOLD * (qmax - qmin)
        elif hi == 0.0:
            lo = -SMALL_SCALE_THRESHOLD * (qmax - qmin)
        else:
            lo, hi = lo * scale / org, hi * scale / org
    zp_min, zp_max = qmin - lo / scale, qmax - hi / scale
    err_min, err_max = abs(qmin) - abs(lo / scale), abs(qmax) - abs(hi / scale)
    zp = zp_min if err_min < err_max else zp_max
    zp = qmin if zp < qmin else qmax if zp > qmax else int(round(zp))  # round: half to even
    return QParams(torch.tensor(scale, dtype=torch.float32), torch.tensor(zp), uint8, qmin, qmax)


def quantize_activation(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """q = clamp(round_half_even(fma(x, 1/scale, zp)), qmin, qmax) as uint8 (fbgemm's Quantize).

    The fused multiply-add rounds once; float64 then float32 reproduces that. (qlab.quantize
    rounds x * (1/scale) first, then adds zp: the two differ at a few ties.)
    """
    inv = (1.0 / qp.scale.to(torch.float32)).double()
    y = (x.to(torch.float64) * inv + int(qp.zero_point)).to(torch.float32)
    return torch.round(y).clamp(qp.qmin, qp.qmax).to(torch.uint8)


def dynamic_linear(x: torch.Tensor, w_q: torch.Tensor, w_qp: QParams, bias: torch.Tensor | None,
                   reduce_range: bool = True) -> torch.Tensor:
    """y = int_linear(q_x, w_q) * (s_x * s_w) + b, with qp_x from this x's min and max."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"dynamic int8 modules take float input, got {got}")
    x32 = x.detach().to(torch.float32)
    if x32.numel():
        x_min, x_max = (float(v) for v in torch.aminmax(x32))
        if not (math.isfinite(x_min) and math.isfinite(x_max)):
            raise ValueError("the input contains NaN or Inf; dynamic quantization takes each "
                             "batch's grid from its min and max, which must be finite")
    else:
        x_min = x_max = 0.0
    qp_x = dynamic_qparams(x_min, x_max, reduce_range)
    acc = int_linear(quantize_activation(x32, qp_x), int(qp_x.zero_point), w_q, w_qp.zero_point)
    # fbgemm: one fused multiply-add, fma(acc, s_x * s_w, b), rounded once to float32
    y = acc.double() * (qp_x.scale * w_qp.scale).double()
    if bias is not None:
        y = y + bias.double()
    return y.to(torch.float32).to(x.dtype)


class DynamicQuantLinear(Int8Module):
    """Linear with int8 weights (per-tensor or per-channel); activations quantized per call."""

    qparams_names = ("weight_qparams",)

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 reduce_range: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.reduce_range = in_features, out_features, reduce_range
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.weight_qparams = placeholder_qparams(int8)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None, weight_qp: QParams,
                    reduce_range: bool = True) -> DynamicQuantLinear:
        """The dynamic int8 twin of a linear map y = x W^T + b."""
        m = cls(weight.shape[1], weight.shape[0], bias is not None, reduce_range)
        m.weight, m.weight_qparams = quantize_weight(weight, weight_qp), weight_qp
        if bias is not None:
            m.bias = bias.detach().float().clone()
        return m

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_qp: QParams,
                   reduce_range: bool = True) -> DynamicQuantLinear:
        return cls.from_weight(linear.weight, linear.bias, weight_qp, reduce_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            expect_features(self, x, self.in_features, "input")
        return dynamic_linear(x, self.weight, self.weight_qparams, self.bias, self.reduce_range)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"per_channel={self.weight_qparams.per_channel}, reduce_range={self.reduce_range}")


class DynamicQuantLSTM(nn.Module):
    """Multi-layer LSTM with int8 weights, nn.LSTM's interface and torch.ao's dynamic numerics.

        gates = dyn_linear(x_t; W_ih) + dyn_linear(h_{t-1}; W_hh)     (biases inside each)
        i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of the four chunks
        c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)

    As torch.ao, the input projection of a layer runs once over the whole sequence (one
    activation grid for all time steps); the hidden projection gets a fresh grid every step.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, reduce_range: bool = True):
        super().__init__()
        if not bias:
            raise ValueError("DynamicQuantLSTM needs bias=True (as torch.ao's dynamic LSTM)")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.reduce_range = batch_first, reduce_range
        self.layers = nn.ModuleList()
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size
            self.layers.append(nn.ModuleDict({
                "ih": DynamicQuantLinear(n_in, 4 * hidden_size, reduce_range=reduce_range),
                "hh": DynamicQuantLinear(hidden_size, 4 * hidden_size, reduce_range=reduce_range),
            }))

    @classmethod
    def from_float(cls, lstm: nn.LSTM, weight_qparams_fn, reduce_range: bool = True) -> DynamicQuantLSTM:
        """weight_qparams_fn(w) -> QParams for each weight matrix (W_ih, W_hh of every layer)."""
        if lstm.bidirectional or lstm.proj_size or not lstm.bias:
            raise ValueError("DynamicQuantLSTM supports unidirectional LSTMs with bias and no "
                             f"proj_size, got bidirectional={lstm.bidirectional}, "
                             f"proj_size={lstm.proj_size}, bias={lstm.bias}")
        m = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, True, lstm.batch_first,
                reduce_range)
        for layer in range(lstm.num_layers):
            for kind in ("ih", "hh"):
                w = getattr(lstm, f"weight_{kind}_l{layer}")
                b = getattr(lstm, f"bias_{kind}_l{layer}")
                m.layers[layer][kind] = DynamicQuantLinear.from_weight(w, b, weight_qparams_fn(w),
                                                                       reduce_range)
        return m

    def _check(self, x: torch.Tensor, hx):
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.input_size:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            order = "(batch, seq, feature)" if self.batch_first else "(seq, batch, feature)"
            raise ValueError(f"DynamicQuantLSTM expects input of shape {order} with "
                             f"feature = input_size = {self.input_size}, got {got}")
        if hx is not None:
            batch = x.shape[0] if self.batch_first else x.shape[1]
            want = (self.num_layers, batch, self.hidden_size)
            if len(hx) != 2 or any(tuple(h.shape) != want for h in hx):
                got = [tuple(h.shape) for h in hx]
                raise ValueError(f"DynamicQuantLSTM expects hx = (h_0, c_0), each of shape "
                                 f"(num_layers, batch, hidden_size) = {want}, got {got}")

    def forward(self, x: torch.Tensor, hx=None):
        self._check(x, hx)
        if self.batch_first:
            x = x.transpose(0, 1)
        seq, batch = x.shape[:2]
        if hx is None:
            zeros = x.new_zeros(self.num_layers, batch, self.hidden_size)
            hx = (zeros, zeros)
        h_n, c_n = [], []
        for layer, lin in enumerate(self.layers):
            h, c = hx[0][layer], hx[1][layer]
            x_proj = lin["ih"](x)  # the whole sequence at once
            outs = []
            for t in range(seq):
                gates = x_proj[t] + lin["hh"](h)
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            x = torch.stack(outs)
            h_n.append(h)
            c_n.append(c)
        out = x.transpose(0, 1) if self.batch_first else x
        return out, (torch.stack(h_n), torch.stack(c_n))

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}, reduce_range={self.reduce_range}")
