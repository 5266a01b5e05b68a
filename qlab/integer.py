"""Integer arithmetic of an int8 layer: integer products, then requantization.

An int8 layer computes in three steps. With x ≈ s_x (q_x - z_x), w ≈ s_w (q_w - z_w):

    acc   = sum_k (q_x - z_x)(q_w - z_w)                     int32, exact  (int_linear, int_conv2d)
    y     ≈ s_x s_w acc + b                                  the float value it stands for
    q_out = clamp(round((acc + b / (s_x s_w)) * M) + z_out, qmin, qmax),   M = s_x s_w / s_out

The bias b is added in one of two ways (an int8 module's `bias_rule`):

  "float" (fbgemm/x86):  acc becomes a float32 and b / (s_x s_w) is added in float32
                         (with_float_bias); this is what torch.ao's int8 modules compute.
  "int32" (qnnpack, ARM; b is rounded once to the accumulator's grid, bias_q = round(b / (s_x s_w)),
   integer-only          and added as an int32 (int32_bias); the rounding can move an output
   hardware, TFLite):    by one step, and the step can grow through later layers. torch.ao's
                         qnnpack kernels compute this (tests/test_engines.py measures how closely).

The integer product is exact in every method int_conv2d picks: torch._int_mm (int8 x int8 ->
int32), an exact int32 sum, or a float32 convolution where float32_sum_is_exact proves that no
partial sum can leave the integers float32 holds exactly (|n| <= 2**24). None of them needs an
x86 CPU: torch._int_mm runs on oneDNN where PyTorch was built with it and on a plain loop where
not (ARM builds may lack oneDNN; tests/test_engines.py checks both give the same integers).

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

from .qtypes import along_axis

# --------------------------------------------------------------------------------------
# Requantization
# --------------------------------------------------------------------------------------


def float_multiplier(input_scale, weight_scale, output_scale) -> torch.Tensor:
    """M = float32(s_x * s_w) / s_out, in float32, exactly as fbgemm computes it."""
    s_x = torch.as_tensor(input_scale, dtype=torch.float32)
    s_w = torch.as_tensor(weight_scale, dtype=torch.float32)
    s_out = torch.as_tensor(output_scale, dtype=torch.float32)
    return (s_x * s_w) / s_out


def with_float_bias(acc: torch.Tensor, bias: torch.Tensor, acc_scale, channel_dim: int = -1,
                    inplace: bool = False) -> torch.Tensor:
    """float32(acc) + b / (s_x s_w): fbgemm's float bias, added before requantize multiplies by M.

    acc_scale is float32(s_x * s_w), a scalar or one value per output channel.
    inplace=True adds into acc when it is float32 already (for a caller that owns acc).
    """
    acc_scale = torch.as_tensor(acc_scale, dtype=torch.float32)
    b = along_axis(bias.to(torch.float32) / acc_scale, acc.dim(), channel_dim)
    return _as_float32(acc, inplace).add_(b)


def _as_float32(acc: torch.Tensor, inplace: bool) -> torch.Tensor:
    """float32(acc) in a buffer of its own: acc itself if float32 and inplace, else a new one.

    (An explicit cast, then in-place ops: torch's mixed int32-float32 ops can be many times slower.)
    """
    if inplace and acc.dtype == torch.float32:
        return acc
    return acc.to(torch.float32, copy=True)


def int32_bias(bias: torch.Tensor, acc_scale) -> torch.Tensor:
    """bias_q = round(b / (s_x s_w)) as int32: the bias on the accumulator's own grid."""
    acc_scale = torch.as_tensor(acc_scale, dtype=torch.float32)
    return torch.round(bias.to(torch.float32) / acc_scale).to(torch.int32)


def requantize(acc: torch.Tensor, multiplier, zero_point: int, qmin: int, qmax: int,
               channel_dim: int = -1, inplace: bool = False) -> torch.Tensor:
    """q = clamp(round_half_even(float32(acc) * M) + zero_point, qmin, qmax) (fbgemm's form).

    `multiplier` is a float32 scalar, or one value per output channel along `channel_dim`.
    acc is the int32 accumulator, or the float32 one with_float_bias made. The result is
    float32 (integer-valued); inplace=True computes it in acc's buffer when acc is float32.
    """
    m = along_axis(torch.as_tensor(multiplier, dtype=torch.float32), acc.dim(), channel_dim)
    return _as_float32(acc, inplace).mul_(m).round_().add_(zero_point).clamp_(qmin, qmax)


def to_codes(q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Integer-valued float codes, already clamped to dtype's range, stored as `dtype`.

    8-bit codes go through int16: the same integers, but torch's float -> uint8 cast is
    several times slower than float -> int16 -> uint8.
    """
    return q.to(torch.int16).to(dtype) if dtype in (torch.uint8, torch.int8) else q.to(dtype)


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
        w_sum = w_q.sum(1, dtype=torch.int32) if w_sum is None else w_sum
        acc += c * w_sum.to(torch.int32)  # int32 + int32: a mixed int64 add is many times slower
    w_zp = torch.as_tensor(w_zp, dtype=torch.int32)
    if bool((w_zp != 0).any()):
        k = w_q.shape[1]
        acc = acc - w_zp * a.to(torch.int32).sum(1, keepdim=True) - c * w_zp * k
    return acc.reshape(*lead, w_q.shape[0])


# Float32 holds every integer n with |n| <= 2**24 (a 24-bit significand), so a sum of integer
# products computed in float32 is exact while no partial sum can pass 2**24.
FLOAT32_EXACT_LIMIT = 2**24


def float32_sum_is_exact(a_max: int, w_abs_sum: int) -> bool:
    """True when every sum_k a_k w_k with |a_k| <= a_max is exact in float32, in any order.

    Proof: each product and each partial sum is an integer, and
        |a_j w_j + ... + a_k w_k| <= sum_k |a_k| |w_k| <= a_max * sum_k |w_k| =: bound.
    While bound <= 2**24, every exact result is a float32, so no addition (or fused
    multiply-add) rounds, whatever order and blocking the kernel uses. With all-max int8
    terms (|a| = 128, |w| = 127) that is n <= 1032 terms; with uint8 codes centred on zp = 0
    (|a| = 255), n <= 518; a depthwise 3x3 has n = 9.
    """
    return a_max * w_abs_sum <= FLOAT32_EXACT_LIMIT


def weight_abs_sum(w_q: torch.Tensor) -> int:
    """max over output channels of sum_k |w_q[o, k]|: the weight's part of the float32 bound."""
    return int(w_q.to(torch.int32).abs().flatten(1).sum(1).max()) if w_q.numel() else 0


def _centred_max(dtype: torch.dtype, zero_point: int) -> int:
    """max |q - zp| over the codes of the storage dtype (uint8: 0..255, int8: -128..127)."""
    info = torch.iinfo(dtype)
    return max(int(zero_point) - info.min, info.max - int(zero_point))


def _float32_conv_is_strict() -> bool:
    """True unless torch was told to trade float32 accuracy for speed (bf16 / tf32 / lower
    matmul precision), which would break the exactness argument of float32_sum_is_exact."""
    mkldnn = torch.backends.mkldnn
    levels = (getattr(getattr(mkldnn, "conv", None), "fp32_precision", "none"),
              getattr(mkldnn, "fp32_precision", "none"), getattr(torch.backends, "fp32_precision", "none"))
    return (torch.get_float32_matmul_precision() == "highest"
            and next((p for p in levels if p != "none"), "ieee") == "ieee")


def _cached(cache: dict | None, name: str, make):
    """cache[name], made by make() on first use (no cache: made every call)."""
    if cache is None:
        return make()
    if name not in cache:
        cache[name] = make()
    return cache[name]


def int_conv2d(x_q: torch.Tensor, x_zp: int, w_q: torch.Tensor, stride=1, padding=0,
               dilation=1, groups: int = 1, cache: dict | None = None,
               allow_float32: bool = False) -> torch.Tensor:
    """acc = conv2d(x_q - x_zp, w_q) in int32, exactly (weights symmetric: zero point 0).

    One of three exact methods:
      1x1 kernel, groups 1:  a Linear over the channels of every (strided) pixel: int_linear,
                             i.e. torch._int_mm, on the channels-last view of x.
      else, if float32_sum_is_exact(max|x_q - x_zp|, weight_abs_sum(w_q)): torch's float32
                             conv2d on the integers x_q - x_zp; no sum can round.
      else:                  im2col, then torch._int_mm (groups 1) or an exact int32 sum per group.
    The first two give channels-last (NHWC) memory, which the next layer reads fastest.
    allow_float32=True returns the float32 method's result as it is (the same integers, as
    float32). `cache`: a dict the caller keeps while w_q is unchanged, for w_q's derived tensors.
    """
    if w_q.dtype != torch.int8:
        raise TypeError(f"weights must be int8, got {w_q.dtype}")
    stride, padding, dilation = (_pair(v) for v in (stride, padding, dilation))
    c_out, _, kh, kw = w_q.shape
    if (kh, kw) == (1, 1) and padding == (0, 0) and groups == 1:
        x = x_q[:, :, ::stride[0], ::stride[1]].permute(0, 2, 3, 1)  # (N, H', W', C)
        w2 = w_q.reshape(c_out, -1)
        w_sum = _cached(cache, "sum", lambda: w2.sum(1, dtype=torch.int32))
        return int_linear(x, x_zp, w2, 0, w_sum).permute(0, 3, 1, 2)
    w_abs_sum = _cached(cache, "abs_sum", lambda: weight_abs_sum(w_q))
    if float32_sum_is_exact(_centred_max(x_q.dtype, x_zp), w_abs_sum) and _float32_conv_is_strict():
        nhwc = torch.channels_last
        w_f = _cached(cache, "float32", lambda: w_q.to(torch.float32, memory_format=nhwc))
        # zero padding is right here: the padded integer 0 is x_q - x_zp at x = 0.0.
        # NNPACK (Winograd / FFT: not sums of integer products) is switched off; torch's other
        # CPU convolutions (oneDNN direct, im2col + GEMM) only multiply and add.
        with torch.backends.nnpack.flags(enabled=False):
            acc = F.conv2d(x_q.to(torch.float32, memory_format=nhwc).sub_(x_zp), w_f, None, stride,
                           padding, dilation, groups)
        return acc if allow_float32 else acc.to(torch.int32)
    return _int_conv2d_im2col(x_q, x_zp, w_q, stride, padding, dilation, groups)


def _int_conv2d_im2col(x_q, x_zp, w_q, stride, padding, dilation, groups) -> torch.Tensor:
    """int_conv2d for any values: im2col, then torch._int_mm, or an exact int32 batched sum
    for grouped and depthwise convs (tiny products, many groups). Padding uses x_zp."""
    n, _, h, w = x_q.shape
    c_out, c_in_g, kh, kw = w_q.shape
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
