"""Dynamic int8 modules: int8 weights; the activation grid is chosen on every call.

    per call:  s_x, z_x = choose(min(x, 0), max(x, 0))          this call's range (fbgemm's rule)
               q_x = clamp(round(x * (1/s_x)) + z_x, 0, 255)      float32 product, half to even
               acc = sum_k (q_x - z_x)(q_w - z_w)                 int32 (torch._int_mm)
               y   = fma(float32(acc), float32(s_x * s_w), b)     float out, rounded once

Nothing is calibrated: the cook measures the seasoning for every order. The numerics are
torch.ao's dynamic Linear and LSTM on x86 (fbgemm), pinned by tests that include exact ties:
qparams from ChooseQuantizationParams (double precision; reduce_range gives 7-bit activations,
0..127), z_x added after rounding, and q_x clamped to uint8's 0..255 (not to qmax: at a tie
q_x can reach 128).

Where the time goes (profile_dynamic_linear measures it): torch._int_mm alone takes about 0.8
of torch.ao's whole call; everything else is elementwise passes over x and y, which are what
this file keeps few. The weight's derived tensors are made once per weight (_Weight); the
qparams are Python numbers; q_x - z_x is quantized straight to int8 (with reduce_range it always
fits), so no zero-point correction pass; and the fma runs in float64, in cache-sized blocks,
where float64 holds the sum exactly (checked per column; a round-to-odd sum covers the rest).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..qparams import QParams, grid
from ..qtypes import int8, round_to_float32, uint8
from .base import Int8Module, expect_features, placeholder_qparams, quantize_weight

STORE_MIN, STORE_MAX = 0, 255  # q_x lives in uint8 (fbgemm clamps to this, not to qmax)
BLOCK = 1 << 18  # outputs per block of rows in to_float: its float64 temporaries stay in cache


SMALL_SCALE_THRESHOLD = round_to_float32(6.1e-5)  # fbgemm: scales below this (a float32 6.1e-5f) are raised


# --------------------------------------------------------------------------------------
# 1. Choose this call's qparams
# --------------------------------------------------------------------------------------


def choose_qparams(x_min: float, x_max: float, qmin: int, qmax: int) -> tuple[float, int]:
    """(scale, zero_point) for [x_min, x_max] (float32 values), as fbgemm's ChooseQuantizationParams:

        scale = (max - min) / (qmax - qmin)   in double; returned rounded to float32
        zp    = round(qmin - min / scale) or round(qmax - max / scale), whichever adds smaller
                terms (less rounding error), clamped to the grid; round: half to even
    """
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    scale = (hi - lo) / (qmax - qmin)
    f = round_to_float32(scale)
    if f == 0.0 or math.isinf(round_to_float32(1.0 / f)):
        scale = 0.1
    if scale < SMALL_SCALE_THRESHOLD:  # the range is widened; float32 arithmetic, as in C++
        org, scale = round_to_float32(scale), SMALL_SCALE_THRESHOLD
        if lo == 0.0:
            hi = round_to_float32(SMALL_SCALE_THRESHOLD * (qmax - qmin))
        elif hi == 0.0:
            lo = round_to_float32(-SMALL_SCALE_THRESHOLD * (qmax - qmin))
        else:
            amplifier = round_to_float32(SMALL_SCALE_THRESHOLD / org)
            lo, hi = round_to_float32(lo * amplifier), round_to_float32(hi * amplifier)
    zp_min, zp_max = qmin - lo / scale, qmax - hi / scale
    err_min, err_max = abs(qmin) - abs(lo / scale), abs(qmax) - abs(hi / scale)
    zp = zp_min if err_min < err_max else zp_max
    zp = qmin if zp < qmin else qmax if zp > qmax else round(zp)
    return round_to_float32(scale), int(zp)


def dynamic_qparams(x_min: float, x_max: float, reduce_range: bool = True) -> QParams:
    """QParams for [x_min, x_max] on uint8 (0..127 with reduce_range), as fbgemm chooses them."""
    qmin, qmax = grid(uint8, reduce_range)
    scale, zp = choose_qparams(round_to_float32(float(x_min)), round_to_float32(float(x_max)), qmin, qmax)
    return QParams(torch.tensor(scale, dtype=torch.float32), torch.tensor(zp), uint8, qmin, qmax)


class ActGrid(NamedTuple):
    """One call's activation grid, as Python numbers: q = clamp(round(x * inv) + zero_point, 0, 255).

    d_lo, d_hi bound q - zero_point over this x (before the clamp); float32 rounding is
    monotonic, so the bounds come from min(x) and max(x) alone.
    """

    scale: float
    zero_point: int
    inv: float
    d_lo: int
    d_hi: int

    def q_abs(self) -> int:
        """max |q - zero_point| over this x, after the clamp to 0..255."""
        return max(abs(max(self.d_lo, -self.zero_point)), abs(min(self.d_hi, STORE_MAX - self.zero_point)))


def choose_grid(x: torch.Tensor, reduce_range: bool = True) -> ActGrid:
    """This call's grid from min(x) and max(x) (x float32); NaN or Inf is refused."""
    if x.numel():
        x_min, x_max = (v.item() for v in torch.aminmax(x))
        if not (math.isfinite(x_min) and math.isfinite(x_max)):
            raise ValueError("the input contains NaN or Inf; dynamic quantization takes each "
                             "batch's grid from its min and max, which must be finite")
    else:
        x_min = x_max = 0.0
    scale, zp = choose_qparams(x_min, x_max, *grid(uint8, reduce_range))
    inv = round_to_float32(1.0 / scale)
    return ActGrid(scale, zp, inv, round(round_to_float32(x_min * inv)), round(round_to_float32(x_max * inv)))


# --------------------------------------------------------------------------------------
# 2. Quantize x
# --------------------------------------------------------------------------------------


def quantize_activation(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """q = clamp(round_half_even(float32(x * (1/scale))) + zp, 0, 255) as uint8 (fbgemm's Quantize).

    Rounded first, then the zero point added: rounding x * (1/scale) + zp in one step (an fma)
    differs at ties. The clamp is uint8's range: a tie at max(x) can give qmax + 1.
    """
    inv = round_to_float32(1.0 / float(qp.scale))
    q = torch.mul(x.to(torch.float32), inv).round_().add_(int(qp.zero_point))
    return q.clamp_(STORE_MIN, STORE_MAX).to(torch.uint8)


def quantize_shifted(x: torch.Tensor, g: ActGrid) -> tuple[torch.Tensor, int]:
    """(a, c) with a int8 and a + c = q - z_x exactly, the form torch._int_mm takes.

    a = q - z_x itself when it fits int8 (always with reduce_range: |q - z_x| <= 127), so c = 0
    and the zero point drops out of the product; otherwise a = q - 128 and c = 128 - z_x.
    """
    lo, hi = -g.zero_point, STORE_MAX - g.zero_point  # q - z_x after the clamp to 0..255
    t = torch.mul(x, g.inv).round_()
    if -128 <= max(g.d_lo, lo) and min(g.d_hi, hi) <= 127:
        if g.d_lo < lo or g.d_hi > hi:
            t.clamp_(lo, hi)
        return t.to(torch.int8), 0
    t.add_(g.zero_point - 128).clamp_(-128, 127)
    return t.to(torch.int8), 128 - g.zero_point


# --------------------------------------------------------------------------------------
# 3. Integer product
# --------------------------------------------------------------------------------------


class _Weight(NamedTuple):
    """What each call needs from an int8 weight, computed once per weight (see prepare_weight)."""

    w_t: torch.Tensor  # [K, N] int8, a view of w_q
    w_sum: torch.Tensor  # [N] int32: sum_k w_q
    w_zp: torch.Tensor | None  # [N] or [] int32; None when all zero (symmetric weights)
    scale: float | torch.Tensor  # s_w: a float32 value, or a float32 tensor per channel
    bias: torch.Tensor | None  # [N] float64
    row_abs: torch.Tensor  # [N] float64: sum_k |q_w - z_w|, so |acc_n| <= row_abs_n * max|q_x - z_x|
    bias_exp: torch.Tensor  # [N] int32: frexp exponent of b (b in [2**(e-1), 2**e)); 9999 for 0
    row_abs_max: float
    bias_abs_max: float
    bias_exp_min: int
    scale_min: float
    scale_max: float


def prepare_weight(w_q: torch.Tensor, w_qp: QParams, bias: torch.Tensor | None) -> _Weight:
    """The weight-derived tensors of a dynamic linear (its modules cache this per weight)."""
    if w_q.dtype != torch.int8:
        raise TypeError(f"weights must be int8, got {w_q.dtype}")
    w_zp = w_qp.zero_point.to(torch.int32)
    w_zp = w_zp if bool((w_zp != 0).any()) else None
    centred = w_q.to(torch.int32) if w_zp is None else w_q.to(torch.int32) - w_zp.reshape(-1, 1)
    row_abs = centred.abs().sum(1).double()
    scale = w_qp.scale.float() if w_qp.per_channel else float(w_qp.scale)
    if bias is None:
        b, b_exp = None, torch.full((w_q.shape[0],), 9999, dtype=torch.int32)
    else:
        b = bias.detach().double()
        b_exp = torch.where(b != 0, torch.frexp(b).exponent, 9999)
    return _Weight(w_q.t(), w_q.to(torch.int32).sum(1, dtype=torch.int32), w_zp, scale, b, row_abs,
                   b_exp, float(row_abs.max()) if row_abs.numel() else 0.0,
                   0.0 if b is None or not b.numel() else float(b.abs().max()),
                   int(b_exp.min()) if b_exp.numel() else 9999,
                   float(w_qp.scale.min()), float(w_qp.scale.max()))


def int_product(a: torch.Tensor, c: int, w: _Weight) -> torch.Tensor:
    """acc[m, n] = sum_k (a[m, k] + c)(q_w[n, k] - z_w[n]) in int32, exactly:

        a @ q_w.T  (torch._int_mm)  +  c * sum_k q_w  -  z_w * (sum_k a + c * K)
    """
    acc = torch._int_mm(a, w.w_t)
    if c:
        acc.add_(c * w.w_sum)
    if w.w_zp is not None:
        acc.sub_(w.w_zp * (a.sum(1, keepdim=True, dtype=torch.int32) + c * a.shape[1]))
    return acc


# --------------------------------------------------------------------------------------
# 4. Back to float
# --------------------------------------------------------------------------------------


def _inexact_columns(w: _Weight, g: ActGrid, m: float | torch.Tensor) -> torch.Tensor | None:
    """The output columns where float64 may not hold float32(acc) * m + b exactly; None if none.

    p = float32(acc) * m is a multiple of ulp(m) = 2**(e_m - 24), b of 2**(e_b - 24) (e: frexp's
    exponent), so p + b is a multiple of 2**(min(e_m, e_b) - 24), and float64 holds it exactly when
    |p + b| < 2**(min(e_m, e_b) + 29). With |acc| <= row_abs * max|q_x - z_x| it suffices that

        2 (row_abs * max|q_x - z_x| * m + |b|)  <  2**(min(e_m, e_b) + 29)

    First for the worst column in Python numbers, then, if that fails, per column.
    """
    q_abs = g.q_abs()
    per_channel = isinstance(m, torch.Tensor)
    m_max = round_to_float32(g.scale * w.scale_max) if per_channel else m
    m_min = round_to_float32(g.scale * w.scale_min) if per_channel else m
    bound = 2 * (w.row_abs_max * q_abs * m_max + w.bias_abs_max)
    if w.bias is None or math.frexp(bound)[1] <= min(math.frexp(m_min)[1], w.bias_exp_min) + 29:
        return None
    bound = (w.row_abs * (q_abs * m)).add_(w.bias.abs()).mul_(2)
    e_m = torch.frexp(m).exponent if per_channel else math.frexp(m)[1]
    bad = torch.frexp(bound).exponent > torch.clamp(w.bias_exp, max=e_m) + 29
    return bad.nonzero().flatten() if bool(bad.any()) else None


def _fma_round_to_odd(p: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float32(p + b) rounded once, for float64 p, b: the sum rounded to odd, then to float32.

    Rounding to odd (keep an inexact result's last bit 1) never lands on a float32 tie, so the
    second rounding is exact (53 >= 24 + 2 bits). TwoSum gives the error that says which way.
    """
    s = p + b
    bb = s - p
    err = (p - (s - bb)) + (b - bb)  # s + err == p + b exactly
    nudge = (err != 0) & ((s.view(torch.int64) & 1) == 0)
    away = torch.nextafter(s, torch.copysign(torch.full_like(s, math.inf), err))
    return torch.where(nudge, away, s).to(torch.float32)


def _fma64(acc: torch.Tensor, m: float | torch.Tensor, b: torch.Tensor | None, rounds: bool) -> torch.Tensor:
    """float32(acc) * m + b in float64 (acc * m is exact there: 24 x 24 bits)."""
    d = (acc.to(torch.float32) if rounds else acc).to(torch.float64)
    if b is None:
        return d.mul_(m)
    return torch.add(b, d, alpha=m, out=d) if isinstance(m, float) else torch.addcmul(b, d, m, out=d)


def to_float(acc: torch.Tensor, g: ActGrid, w: _Weight) -> torch.Tensor:
    """y = fma(float32(acc), m, b), m = float32(s_x * s_w): one rounding to float32, as fbgemm.

    float64 holds float32(acc) * m + b exactly where _inexact_columns says so; there the one
    rounding of the float64 sum to float32 is the fma. Other columns round to odd first.
    Blocks of rows keep the float64 temporaries in cache.
    """
    m = (torch.mul(w.scale, g.scale).double() if isinstance(w.scale, torch.Tensor)
         else round_to_float32(g.scale * w.scale))
    rounds = w.row_abs_max * g.q_abs() > 2**24  # float32(acc) rounds only past 2**24
    if acc.numel() <= BLOCK:
        y = _fma64(acc, m, w.bias, rounds).to(torch.float32)
    else:
        y = torch.empty(acc.shape, dtype=torch.float32)
        step = max(1, BLOCK // acc.shape[1])
        for i in range(0, acc.shape[0], step):
            y[i:i + step] = _fma64(acc[i:i + step], m, w.bias, rounds)
    bad = None if w.bias is None else _inexact_columns(w, g, m)
    if bad is not None:
        p = _fma64(acc[:, bad], m if isinstance(m, float) else m[bad], None, rounds)
        y[:, bad] = _fma_round_to_odd(p, w.bias[bad])
    return y


# --------------------------------------------------------------------------------------
# The whole call
# --------------------------------------------------------------------------------------


def _float_input(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"dynamic int8 modules take float input, got {got}")
    return x.detach().reshape(-1, x.shape[-1]).to(torch.float32)


def linear_steps(x32: torch.Tensor, w: _Weight, reduce_range: bool = True) -> torch.Tensor:
    """The four steps of one dynamic int8 Linear call on float32 rows x32 [m, k]."""
    g = choose_grid(x32, reduce_range)  # 1. this call's scale and zero point, from min(x), max(x)
    a, c = quantize_shifted(x32, g)  # 2. the codes: q_x - z_x = a + c, a int8
    acc = int_product(a, c, w)  # 3. the integer product, int32 (torch._int_mm)
    return to_float(acc, g, w)  # 4. back to float: fma(acc, s_x * s_w, b), once per output


def dynamic_linear(x: torch.Tensor, w_q: torch.Tensor, w_qp: QParams, bias: torch.Tensor | None,
                   reduce_range: bool = True, weight: _Weight | None = None) -> torch.Tensor:
    """y = fma(float32(sum_k (q_x - z_x)(q_w - z_w)), s_x * s_w, b), with qp_x from this x's range.

    weight: prepare_weight(w_q, w_qp, bias), when the caller keeps it (the modules do).
    """
    x32 = _float_input(x)
    w = prepare_weight(w_q, w_qp, bias) if weight is None else weight
    y = linear_steps(x32, w, reduce_range)
    return y.reshape(*x.shape[:-1], y.shape[-1]).to(x.dtype)


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
        self._prepared = None  # (ids and versions of its sources, _Weight, the sources)

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

    def prepared_weight(self) -> _Weight:
        """prepare_weight(...) of this module, cached until its weight, bias or qparams are replaced
        or changed in place (a tensor's _version counts its in-place changes; tensors made under
        torch.inference_mode have none, so replace those rather than change them in place)."""
        qp = self.weight_qparams
        sources = (self.weight, self.bias, qp, qp.scale, qp.zero_point)
        stamp = [(id(t), t._version if isinstance(t, torch.Tensor) and not t.is_inference() else None)
                 for t in sources]
        if self._prepared is None or self._prepared[0] != stamp:  # sources kept: ids stay unique
            self._prepared = (stamp, prepare_weight(self.weight, qp, self.bias), sources)
        return self._prepared[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            expect_features(self, x, self.in_features, "input")
        return dynamic_linear(x, self.weight, self.weight_qparams, self.bias, self.reduce_range,
                              self.prepared_weight())

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"per_channel={self.weight_qparams.per_channel}, reduce_range={self.reduce_range}")


def profile_dynamic_linear(module: DynamicQuantLinear, x: torch.Tensor,
                           min_run_time: float = 0.2) -> dict[str, float]:
    """Milliseconds (medians) of the four stages of one call module(x), and of the whole call:

        {"choose_qparams": min/max of x -> s_x, z_x,   "quantize": x -> int8,
         "int_product": torch._int_mm + corrections,   "to_float": the fma back to float32,
         "total": module(x)}

    choose_qparams and quantize are the run-time overhead of dynamic quantization: work a
    static int8 layer does not do per call. The stages sum to about the total.
    """
    if not isinstance(module, DynamicQuantLinear):
        raise TypeError(f"profile_dynamic_linear takes a DynamicQuantLinear, got {type(module).__name__}")
    expect_features(module, x, module.in_features, "input")
    x32, w, rr = _float_input(x), module.prepared_weight(), module.reduce_range
    g = choose_grid(x32, rr)
    a, c = quantize_shifted(x32, g)
    acc = int_product(a, c, w)
    stages = {"choose_qparams": lambda: choose_grid(x32, rr), "quantize": lambda: quantize_shifted(x32, g),
              "int_product": lambda: int_product(a, c, w), "to_float": lambda: to_float(acc, g, w),
              "total": lambda: module(x)}
    from torch.utils.benchmark import Timer  # here, not at the top: importing it is slow and noisy

    with torch.inference_mode():
        return {name: Timer("f()", globals={"f": f}).blocked_autorange(min_run_time=min_run_time).median
                * 1e3 for name, f in stages.items()}


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
        if x.shape[1 if self.batch_first else 0] == 0:
            raise ValueError(f"DynamicQuantLSTM got a sequence of length 0 (input shape "
                             f"{tuple(x.shape)}); as nn.LSTM, it needs at least one time step")
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
            w_hh, hh = lin["hh"].prepared_weight(), lin["hh"]  # checked once, used every step
            outs = []
            for t in range(seq):
                gates = x_proj[t] + linear_steps(h.to(torch.float32), w_hh, hh.reduce_range).to(h.dtype)
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
