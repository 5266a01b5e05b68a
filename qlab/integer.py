"""Integer arithmetic of an int8 layer: integer products, then requantization.

An int8 layer computes in three steps. With x ≈ s_x (q_x - z_x), w ≈ s_w (q_w - z_w):

    acc   = sum_k (q_x - z_x)(q_w - z_w)                     int32, exact  (int_linear, int_conv2d)
    y     ≈ s_x s_w acc + b                                  the float value it stands for
    q_out = clamp(round((acc + b / (s_x s_w)) * M) + z_out, qmin, qmax),   M = s_x s_w / s_out

The bias b is added in one of two ways (an int8 module's `bias_rule`):

  "float" (fbgemm/x86):  acc becomes a float32 and b / (s_x s_w) is added in float32
                         (with_float_bias); this is what torch.ao's int8 modules compute.
  "int32" (integer-only  b is rounded once to the accumulator's grid, bias_q = round(b / (s_x s_w)),
   hardware, TFLite):    and added as an int32 (int32_bias); the rounding can move an output
                         by one step, and the step can grow through later layers.

Requantization comes in two flavours that agree except for rare 1-LSB cases:

  float (fbgemm):    M is a float32, computed as float32(s_x * s_w) / s_out; acc is turned into
                     a float32, multiplied by M and rounded half to even.
  fixed point        M = M0 * 2**-(31 + shift) with M0 an int32 in [2**30, 2**31): integers
  (gemmlowp, TFLite) only: acc * M0 in int64, then one rounding right shift (TFLite's single
                     rounding); or gemmlowp's two roundings (a "doubling high multiply", then a
                     rounding shift), which disagree with the float form more often.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------
# Requantization
# --------------------------------------------------------------------------------------


def float_multiplier(input_scale, weight_scale, output_scale) -> torch.Tensor:
    """M = float32(s_x * s_w) / s_out, in float32, exactly as fbgemm computes it."""
    s_x = torch.as_tensor(input_scale, dtype=torch.float32)
    s_w = torch.as_tensor(weight_scale, dtype=torch.float32)
    s_out = torch.as_tensor(output_scale, dtype=torch.float32)
    return (s_x * s_w) / s_out


def _per_channel(v: torch.Tensor, ndim: int, channel_dim: int) -> torch.Tensor:
    """v (one value per channel, or a scalar) shaped to broadcast along channel_dim."""
    if v.dim() != 1:
        return v
    shape = [1] * ndim
    shape[channel_dim] = -1
    return v.reshape(shape)


def with_float_bias(acc: torch.Tensor, bias: torch.Tensor, acc_scale, channel_dim: int = -1):
    """float32(acc) + b / (s_x s_w): fbgemm's float bias, added before requantize multiplies by M.

    acc_scale is float32(s_x * s_w), a scalar or one value per output channel.
    """
    acc_scale = torch.as_tensor(acc_scale, dtype=torch.float32)
    b = bias.to(torch.float32) / acc_scale
    return acc.to(torch.float32) + _per_channel(b, acc.dim(), channel_dim)


def int32_bias(bias: torch.Tensor, acc_scale) -> torch.Tensor:
    """bias_q = round(b / (s_x s_w)) as int32: the bias on the accumulator's own grid."""
    acc_scale = torch.as_tensor(acc_scale, dtype=torch.float32)
    return torch.round(bias.to(torch.float32) / acc_scale).to(torch.int32)


def requantize(acc: torch.Tensor, multiplier, zero_point: int, qmin: int, qmax: int,
               channel_dim: int = -1) -> torch.Tensor:
    """q = clamp(round_half_even(float32(acc) * M) + zero_point, qmin, qmax) (fbgemm's form).

    `multiplier` is a float32 scalar, or one value per output channel along `channel_dim`.
    acc is the int32 accumulator, or the float32 one with_float_bias made.
    """
    m = _per_channel(torch.as_tensor(multiplier, dtype=torch.float32), acc.dim(), channel_dim)
    q = acc.to(torch.float32, copy=True).mul_(m).round_().add_(zero_point)  # in place: one buffer
    return q.clamp_(qmin, qmax)


def quantize_multiplier(multiplier: float) -> tuple[int, int]:
    """Split a real M > 0 into (M0, shift) with M = M0 * 2**-31 * 2**-shift, M0 in [2**30, 2**31).

    As TFLite's QuantizeMultiplier: M = q * 2**e with q in [0.5, 1) (frexp), M0 = round(q * 2**31),
    shift = -e (a right shift; negative for M >= 1, i.e. a left shift).
    """
    m = float(multiplier)
    if not (m > 0.0 and math.isfinite(m)):
        raise ValueError(f"the multiplier must be positive and finite, got {multiplier!r}")
    q, e = math.frexp(m)
    m0 = round(q * (1 << 31))
    if m0 == 1 << 31:  # q rounded up to 1.0
        m0 //= 2
        e += 1
    return m0, -e


def _rounding_doubling_high_mul(a: torch.Tensor, b: int) -> torch.Tensor:
    """gemmlowp's SaturatingRoundingDoublingHighMul: round(a * b / 2**31), ties up."""
    ab = a.to(torch.int64) * b
    nudge = torch.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    return torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")  # C++ '/' truncates


def _rounding_divide_by_pot(x: torch.Tensor, exponent: int) -> torch.Tensor:
    """gemmlowp's RoundingDivideByPOT: round(x / 2**exponent), ties away from zero."""
    if exponent == 0:
        return x
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).to(torch.int64)
    return (x >> exponent) + (remainder > threshold).to(torch.int64)


def requantize_fixed_point(acc: torch.Tensor, m0: int, shift: int, zero_point: int,
                           qmin: int, qmax: int, double_rounding: bool = False) -> torch.Tensor:
    """q = clamp(round(acc * M0 / 2**(31 + shift)) + zp, qmin, qmax): acc * M without a float.

    Single rounding (TFLite's TFLITE_SINGLE_ROUNDING): one int64 product, one rounding shift,
    ties up. double_rounding=True is gemmlowp's classic form: a rounding "doubling high
    multiply" to 32 bits, then a rounding right shift, each rounding ties away from zero;
    the first rounding keeps few fraction bits when acc is small, so it disagrees more often.
    """
    x = acc.to(torch.int64)
    if shift < 0:  # M >= 1: shift left first
        x = (x << -shift).clamp(-(2**31), 2**31 - 1)
    right = max(shift, 0)
    if double_rounding:
        x = _rounding_divide_by_pot(_rounding_doubling_high_mul(x, m0), right)
    else:
        total = 31 + right
        x = (x * m0 + (1 << (total - 1))) >> total
    return (x + zero_point).clamp(qmin, qmax)


# --------------------------------------------------------------------------------------
# Integer products: int8 x int8 -> int32
# --------------------------------------------------------------------------------------


def _to_int8_shifted(q: torch.Tensor, zero_point: int) -> tuple[torch.Tensor, int]:
    """(a, c) with a int8 and q - zero_point = a + c exactly.

    uint8 values are moved to int8 by subtracting 128 (q - 128 always fits); then c = 128 - zp.
    """
    if q.dtype == torch.uint8:  # q ^ 0x80 read as int8 is q - 128
        return (q ^ 128).view(torch.int8), 128 - int(zero_point)
    if q.dtype == torch.int8:
        return q, -int(zero_point)
    raise TypeError(f"integer activations must be uint8 or int8, got {q.dtype}")


def int_linear(x_q: torch.Tensor, x_zp: int, w_q: torch.Tensor,
               w_zp: torch.Tensor | int = 0, w_sum: torch.Tensor | None = None) -> torch.Tensor:
    """acc[m, n] = sum_k (x_q[m, k] - x_zp) * (w_q[n, k] - w_zp[n]), in int32, exactly.

    The product itself is torch._int_mm (int8 x int8 -> int32). With x_q - x_zp = a + c
    (a int8, see _to_int8_shifted) the zero points become cheap corrections:

        sum_k (a + c)(w - z_w) = a @ w.T  +  c * sum_k w  -  z_w * sum_k a  -  c * z_w * K

    w_sum (= w_q.sum(1) in int32) may be passed in precomputed; a module computes it once.
    """
    if w_q.dtype != torch.int8:
        raise TypeError(f"weights must be int8, got {w_q.dtype}")
    lead = x_q.shape[:-1]
    a, c = _to_int8_shifted(x_q.reshape(-1, x_q.shape[-1]), x_zp)
    if a.shape[0]:
        acc = torch._int_mm(a.contiguous(), w_q.t())
    else:
        acc = torch.zeros(0, w_q.shape[0], dtype=torch.int32)
    if c:
        w_sum = w_q.to(torch.int32).sum(1) if w_sum is None else w_sum
        acc += c * w_sum
    w_zp = torch.as_tensor(w_zp, dtype=torch.int32)
    if bool((w_zp != 0).any()):
        k = w_q.shape[1]
        acc = acc - w_zp * a.to(torch.int32).sum(1, keepdim=True) - c * w_zp * k
    return acc.reshape(*lead, w_q.shape[0])


def int_conv2d(x_q: torch.Tensor, x_zp: int, w_q: torch.Tensor, stride=1, padding=0,
               dilation=1, groups: int = 1) -> torch.Tensor:
    """acc = conv2d(x_q - x_zp, w_q) in int32, exactly (weights symmetric: zero point 0).

    im2col, then an integer matrix product per group: torch._int_mm for ordinary convs;
    for grouped and depthwise convs (tiny products, many groups) an exact int32 batched sum.
    Padding uses x_zp, the integer that stands for 0.0.
    """
    if w_q.dtype != torch.int8:
        raise TypeError(f"weights must be int8, got {w_q.dtype}")
    n, _, h, w = x_q.shape
    c_out, c_in_g, kh, kw = w_q.shape
    stride, padding, dilation = (_pair(v) for v in (stride, padding, dilation))
    a, c = _to_int8_shifted(x_q, x_zp)
    if padding != (0, 0):
        # the padded value must stand for 0.0: a + c = 0  ->  a = -c  (fits int8: -c = zp - 128)
        a = F.pad(a, (padding[1], padding[1], padding[0], padding[0]), value=-c)
    # im2col is not implemented for int8; float32 holds these integers exactly.
    cols = F.unfold(a.to(torch.float32), (kh, kw), dilation=dilation, stride=stride)
    h_out = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    length = cols.shape[-1]
    k = c_in_g * kh * kw
    wf = w_q.reshape(c_out, k)
    if groups == 1:
        a2 = cols.transpose(1, 2).reshape(n * length, k).to(torch.int8)
        acc = torch._int_mm(a2, wf.t().contiguous())  # (n*L, c_out)
        acc = acc.reshape(n, length, c_out).transpose(1, 2)
    else:
        cg = c_out // groups
        colsg = cols.reshape(n, groups, k, length).to(torch.int32)
        wg = wf.reshape(groups, cg, k).to(torch.int32)
        if cg == 1:  # depthwise-like: elementwise product, summed over the kernel
            acc = (colsg * wg.reshape(1, groups, k, 1)).sum(2)
        else:
            acc = torch.matmul(wg.unsqueeze(0), colsg).reshape(n, c_out, length)
    if c:
        acc = acc + c * w_q.to(torch.int32).sum((1, 2, 3)).reshape(1, -1, 1)
    return acc.reshape(n, c_out, h_out, w_out).to(torch.int32)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)
