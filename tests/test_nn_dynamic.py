"""Parity 2: DynamicQuantLinear / DynamicQuantLSTM against torch.ao's dynamic Linear / LSTM.

Bit-identical: the same qparams from fbgemm's ChooseQuantizationParams, the same quantized
input (round(x * (1/s)) in float32, then + z, clamped to 0..255), the same int32 accumulators,
and fbgemm's final fma(float32(acc), s_x*s_w, b) rounded once to float32. Inputs are built to
hit the cases where a near miss would show: exact ties, a tie at max(x), accumulators past
2**24, and an fma that float64 alone would round twice.
"""

import math
from fractions import Fraction

import pytest
import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic as torch_quantize_dynamic

import qlab
from qlab.nn import DynamicQuantLinear, DynamicQuantLSTM
from qlab.nn.dynamic import (
    ActGrid,
    choose_grid,
    dynamic_qparams,
    prepare_weight,
    profile_dynamic_linear,
    quantize_activation,
    quantize_shifted,
    to_float,
)


def torch_linear(w_q: torch.Tensor, scale, bias=None, per_channel: bool = False, zero_point=None):
    """torch.ao's dynamic linear (fbgemm) over the int8 weight w_q: x -> y."""
    if per_channel:
        zp = torch.zeros(len(scale), dtype=torch.long) if zero_point is None else zero_point
        w = torch._make_per_channel_quantized_tensor(w_q, scale.double(), zp, 0)
    else:
        w = torch._make_per_tensor_quantized_tensor(w_q, float(scale), int(zero_point or 0))
    packed = torch.ops.quantized.linear_prepack(w, bias)
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed, True)


def torch_quantized_input(x: torch.Tensor) -> torch.Tensor:
    """The uint8 codes torch.ao's dynamic linear gives x, read back through an identity weight."""
    y = torch_linear(torch.eye(x.shape[1], dtype=torch.int8), 1.0)(x)
    qp = dynamic_qparams(*torch.aminmax(x))
    return (torch.round(y.double() / float(qp.scale)) + int(qp.zero_point)).to(torch.uint8)


def near_ties(base: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Values at (j + 1/2) * s_x, some an ulp or two off: where rounding decides. The first and
    last columns hold min(base) and max(base), so the grid is base's."""
    qp = dynamic_qparams(*torch.aminmax(base))
    scale, zp = float(qp.scale), int(qp.zero_point)
    j = torch.randint(-zp, 127 - zp, base.shape, generator=g).double()
    x = ((j + 0.5) * scale).float().clamp(base.min(), base.max())
    nudge = torch.randint(-2, 3, base.shape, generator=g)
    for _ in range(2):
        x = torch.where(nudge > 0, torch.nextafter(x, torch.tensor(math.inf)), x)
        x = torch.where(nudge < 0, torch.nextafter(x, torch.tensor(-math.inf)), x)
        nudge = nudge - nudge.sign()
    x[..., 0], x[..., -1] = base.min(), base.max()
    return x


def fma_f32(a: float, m: float, b: float) -> float:
    """float32(a * m + b) rounded once (half to even), exactly, with fractions."""
    v = Fraction(a) * Fraction(m) + Fraction(b)
    f = torch.tensor(float(v), dtype=torch.float32)
    near = [torch.nextafter(f, torch.tensor(-math.inf)), f, torch.nextafter(f, torch.tensor(math.inf))]
    return float(min(near, key=lambda z: (abs(Fraction(float(z)) - v), int(z.view(torch.int32)) & 1)))


# ------------------------------------------------------------------------------------------
# choose qparams
# ------------------------------------------------------------------------------------------


def test_choose_qparams_matches_fbgemm():
    g = torch.Generator().manual_seed(0)
    for i in range(500):
        mag = 10.0 ** torch.randint(-7, 3, (1,), generator=g).item()
        x = torch.randn(9, generator=g) * mag + (i % 3 - 1) * mag
        for rr in (True, False):
            s, z = torch._choose_qparams_per_tensor(x, rr)
            qp = dynamic_qparams(*(float(v) for v in torch.aminmax(x)), rr)
            assert (float(qp.scale), int(qp.zero_point)) == (
                float(torch.tensor(s, dtype=torch.float32)), z)


@pytest.mark.parametrize("lo, hi", [
    (0.0, 0.0), (0.0, 1e-30), (-1e-30, 0.0), (-3e-7, 1e-7), (-1e-9, 2.5e-6), (0.0, 7.7e-3),
    (-7.7e-3, 0.0), (-1e-45, 1e-45), (-1.0, 1e-8), (-1e-8, 1.0), (-3e38, 3e38), (0.0, 3.4e38),
    (-0.09375, 7.84375), (2.0, 5.0), (-5.0, -2.0)])
def test_choose_qparams_edges_match_fbgemm(lo, hi):
    """Zero and tiny ranges (the 0.1 and 6.1e-5 branches, in float32 as in C++), huge ones, ties."""
    x = torch.tensor([lo, hi], dtype=torch.float32)
    for rr in (True, False):
        s, z = torch._choose_qparams_per_tensor(x, rr)
        qp = dynamic_qparams(*x.tolist(), rr)
        assert (float(qp.scale), int(qp.zero_point)) == (float(torch.tensor(s).float()), z)


# ------------------------------------------------------------------------------------------
# quantize
# ------------------------------------------------------------------------------------------


def test_quantize_matches_torch_at_ties():
    """round(x * (1/s)) first, + z after: an fma(x, 1/s, z) rounds these ties the other way."""
    g = torch.Generator().manual_seed(1)
    for k in (8, 13, 64, 384):
        x = near_ties(torch.randn(17, k, generator=g) * 3, g)
        qp = dynamic_qparams(*torch.aminmax(x))
        assert torch.equal(quantize_activation(x, dynamic_qparams(*torch.aminmax(x))),
                           torch_quantized_input(x))
        fma_like = torch.round((x.double() * (1 / qp.scale.double()) + int(qp.zero_point)).float())
        assert not torch.equal(fma_like.to(torch.uint8), torch_quantized_input(x))  # ties were hit


def test_quantize_tie_at_max_gives_qmax_plus_one_as_torch():
    """scale 1/16, z = 2 (a tie): max(x) * 16 = 125.5 rounds to 126, + 2 = 128 > qmax = 127."""
    x = torch.tensor([[-0.09375, 7.84375, 0.5, 7.84375]])
    qp = dynamic_qparams(*torch.aminmax(x))
    assert (float(qp.scale), int(qp.zero_point), qp.qmax) == (0.0625, 2, 127)
    assert quantize_activation(x, qp).tolist() == [[0, 128, 10, 128]] == torch_quantized_input(x).tolist()


def test_quantize_shifted_fits_int8_with_reduce_range():
    """With reduce_range, q - z always fits int8: the zero point drops out of the product."""
    g = torch.Generator().manual_seed(2)
    for _ in range(300):
        mag = 10.0 ** torch.randint(-6, 4, (1,), generator=g).item()
        x = (torch.randn(5, 7, generator=g) + torch.randn(1, generator=g)) * mag
        grid = choose_grid(x, reduce_range=True)
        a, c = quantize_shifted(x, grid)
        assert c == 0 and a.dtype == torch.int8
        q = quantize_activation(x, dynamic_qparams(*torch.aminmax(x)))
        assert torch.equal(a.int() + grid.zero_point, q.int())
        a, c = quantize_shifted(x, choose_grid(x, reduce_range=False))  # 0..255: q - 128 and c
        q = quantize_activation(x, dynamic_qparams(*torch.aminmax(x), reduce_range=False))
        assert torch.equal(a.int() + c, q.int() - choose_grid(x, False).zero_point)


# ------------------------------------------------------------------------------------------
# the whole linear
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("shape", [(1, 32), (17, 64), (3, 9, 130), (2, 1, 5), (40, 384), (0, 16)])
def test_dynamic_linear_matches_torch(per_channel, shape):
    lin = nn.Linear(shape[-1], 50)
    ours = qlab.quantize_dynamic(nn.Sequential(lin), per_channel=per_channel)[0]
    assert isinstance(ours, DynamicQuantLinear) and ours.weight.dtype == torch.int8
    ref = qlab.to_torch(ours)
    if not per_channel:  # torch.ao's own conversion gives the same int8 weights
        theirs = torch_quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)[0]
        assert torch.equal(theirs.weight().int_repr(), ours.weight)
        ref = theirs
    x = torch.randn(*shape) * 3 + 1
    assert torch.equal(ours(x), ref(x))


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_dynamic_linear_matches_torch_many_shapes_and_ties(per_channel, bias):
    g = torch.Generator().manual_seed(3)
    for k, n, rows in [(1, 1, 1), (7, 3, 5), (64, 50, 33), (130, 17, 2), (384, 384, 64), (1536, 40, 9)]:
        lin = nn.Linear(k, n, bias=bias)
        ours = qlab.quantize_dynamic(lin, per_channel=per_channel)
        ref = qlab.to_torch(ours)
        base = torch.randn(rows, k, generator=g) * 2 - 0.5
        for x in (base, near_ties(base, g), base.abs(), -base.abs(), torch.zeros(rows, k)):
            assert torch.equal(ours(x), ref(x)), (k, n, rows)


@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_zero_points_match_torch(per_channel):
    """Asymmetric int8 weights (a zero point per tensor or per channel): z_w * sum_k a is subtracted."""
    g = torch.Generator().manual_seed(7)
    n, k = 24, 70
    w = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    scale = torch.rand(n, generator=g) * 0.02 + 1e-3 if per_channel else torch.tensor(0.013)
    zp = torch.randint(-20, 21, (n,), generator=g) if per_channel else torch.tensor(-7)
    qp = qlab.QParams(scale, zp, qlab.int8, -128, 127)
    bias = torch.randn(n, generator=g)
    ours = DynamicQuantLinear(k, n)
    ours.weight, ours.weight_qparams, ours.bias = w, qp, bias
    x = torch.randn(33, k, generator=g) * 2
    assert torch.equal(ours(x), torch_linear(w, scale, bias, per_channel, zp)(x))


def test_reduce_range_false_is_the_exact_formula():
    """8-bit activations (qlab only): q - z_x no longer fits int8, so a = q - 128 and c = 128 - z_x."""
    g = torch.Generator().manual_seed(8)
    for per_channel in (False, True):
        lin = nn.Linear(40, 6)
        m = qlab.quantize_dynamic(lin, per_channel=per_channel, reduce_range=False)
        x = torch.randn(5, 40, generator=g) * 3 + 1
        qp = dynamic_qparams(*torch.aminmax(x), reduce_range=False)
        assert qp.qmax == 255 and quantize_shifted(x, choose_grid(x, False))[1] == 128 - int(qp.zero_point)
        acc = (quantize_activation(x, qp).long() - int(qp.zero_point)) @ m.weight.long().t()
        s_w = m.weight_qparams.scale.expand(6)
        want = [[fma_f32(acc[i, j].item(), float((qp.scale * s_w[j]).float()), m.bias[j].item())
                 for j in range(6)] for i in range(5)]
        assert m(x).tolist() == want


def test_dynamic_linear_tiny_and_huge_biases_match_torch():
    """Biases far below and far above the products: where float64 may not hold acc * m + b."""
    g = torch.Generator().manual_seed(4)
    lin = nn.Linear(96, 64)
    with torch.no_grad():
        lin.bias.copy_(torch.randn(64, generator=g) * 10.0 ** torch.randint(-30, 8, (64,), generator=g))
        lin.bias[:4] = 0.0
    for per_channel in (False, True):
        ours = qlab.quantize_dynamic(lin, per_channel=per_channel)
        x = torch.randn(50, 96, generator=g) * 4
        assert torch.equal(ours(x), qlab.to_torch(ours)(x))


def test_accumulators_past_2_24_round_to_float32_first_as_torch():
    """fbgemm converts the int32 accumulator to float32 before the fma: past 2**24 that rounds."""
    k, n = 1536, 64
    w = torch.full((n, k), 127, dtype=torch.int8)
    scale = torch.rand(n, generator=torch.Generator().manual_seed(5)) * 0.01 + 1e-3
    bias = torch.randn(n) * 1000
    q = torch.full((300, k), 127.0)
    for i in range(300):
        q[i, :i + 1] = 126  # odd accumulators above 2**24
    x = q * 0.01  # s_x = 0.01, z_x = 0: q comes back exactly
    for per_channel in (False, True):
        s = scale if per_channel else scale[0]
        qp = qlab.QParams(s, torch.zeros_like(s, dtype=torch.long), qlab.int8, -128, 127)
        ours = DynamicQuantLinear.from_weight(w.float() * (s.reshape(-1, 1) if per_channel else s), bias, qp)
        assert torch.equal(ours.weight, w)
        y = torch_linear(w, s, bias, per_channel)(x)
        assert torch.equal(ours(x), y)
        exact_acc = (q.double() @ w.double().t() * 0.01 * s.double() + bias.double()).float()
        assert not torch.equal(exact_acc, y)  # the rounding mattered


def test_fma_that_float64_rounds_twice_matches_torch():
    """acc = 2**23 - 1, m = (1 + 2**-23) 2**-47, b = 1 + 2**-23: acc * m + b lies 2**-70 below a
    float32 tie; float64 rounds it onto the tie, then to even (wrong). fbgemm's fma rounds once."""
    k = 1024
    q = torch.zeros(k)
    w = torch.zeros(k, dtype=torch.int8)
    q[:521], w[:520], w[520] = 127, 127, 12  # 520 * 127 * 127 + 127 * 12 = 2**23 - 4
    q[521], w[521] = 3, 1
    assert int((q.long() * w.long()).sum()) == 2**23 - 1
    x = (q * 2.0**-7).reshape(1, k)  # s_x = 2**-7, z_x = 0
    s_w = (1 + 2.0**-23) * 2.0**-40
    bias = torch.tensor([1 + 2.0**-23, 1 + 2.0**-23])
    w2 = torch.stack([w, w])
    qp = qlab.QParams(torch.tensor(s_w), torch.tensor(0), qlab.int8, -128, 127)
    ours = DynamicQuantLinear.from_weight(w2.float() * s_w, bias, qp)
    assert torch.equal(ours.weight, w2)
    m = s_w * 2.0**-7
    want = fma_f32(2**23 - 1, m, 1 + 2.0**-23)
    twice = float(torch.tensor((2**23 - 1) * m + (1 + 2.0**-23), dtype=torch.float64).float())
    assert want == 1 + 2.0**-23 and twice == 1 + 2.0**-22
    assert ours(x).tolist() == [[want, want]] == torch_linear(w2, s_w, bias)(x).tolist()


def test_to_float_is_the_exact_fma():
    """to_float against fractions on adversarial accumulators, scales and biases."""
    g = torch.Generator().manual_seed(6)
    n = 24
    for trial in range(20):
        w_q = (torch.randint(0, 2, (n, 1536), generator=g, dtype=torch.int8) * 2 - 1) * 127
        exp = torch.randint(-40, 20, (n,), generator=g).double()
        bias = (torch.randn(n, generator=g, dtype=torch.float64) * torch.exp2(exp)).float()
        bias[::5] = 0.0
        per_channel = trial % 2 == 1
        s_w = (torch.rand(n, generator=g) * 0.01 + 1e-6) if per_channel else torch.tensor(0.0123)
        qp = qlab.QParams(s_w, torch.zeros_like(s_w, dtype=torch.long), qlab.int8, -128, 127)
        w = prepare_weight(w_q, qp, bias)
        grid = ActGrid(float(torch.tensor(2.0 ** -trial * 1.37).float()), 60, 0.0, -60, 67)
        # |acc| <= row_abs * q_abs = 1536 * 127 * 67, as the grid and weight allow
        acc = torch.randint(-(2**23), 2**23, (7, n), generator=g, dtype=torch.int32)
        acc[0] = 2**23 - 1
        y = to_float(acc, grid, w)
        for i in range(acc.shape[0]):
            for j in range(n):
                m = float(torch.tensor(grid.scale * float(s_w[j] if per_channel else s_w)).float())
                assert y[i, j].item() == fma_f32(acc[i, j].item(), m, bias[j].item())


def test_dynamic_reduce_range_false_is_closer_to_float():
    """8-bit activations (no reduce_range) halve the activation step: closer to float."""
    lin = nn.Linear(64, 32)
    x = torch.randn(256, 64)
    errors = {rr: (qlab.quantize_dynamic(lin, reduce_range=rr)(x) - lin(x)).pow(2).mean().item()
              for rr in (True, False)}
    assert errors[False] < 0.6 * errors[True]
    with pytest.raises(ValueError, match="always uses reduce_range=True"):
        qlab.to_torch(qlab.quantize_dynamic(lin, reduce_range=False))


def test_changed_weight_bias_or_qparams_are_used():
    """The weight-derived tensors are cached; a change to weight, bias or qparams refreshes them."""
    lin = nn.Linear(16, 8)
    m = qlab.quantize_dynamic(lin)
    x = torch.randn(5, 16)
    m(x)
    with torch.no_grad():
        m.weight[0, :] = 100  # in place
        m.bias.mul_(3.0)
    assert torch.equal(m(x), qlab.to_torch(m)(x))
    m.bias = torch.randn(8)  # replaced
    assert torch.equal(m(x), qlab.to_torch(m)(x))
    m.weight_qparams = qlab.QParams(torch.tensor(0.05), torch.tensor(0), qlab.int8, -128, 127)
    assert torch.equal(m(x), qlab.to_torch(m)(x))
    other = qlab.quantize_dynamic(nn.Linear(16, 8))
    m.load_state_dict(other.state_dict())
    assert torch.equal(m(x), other(x))
    with torch.inference_mode():  # inference tensors have no version counter
        made_here = qlab.quantize_dynamic(nn.Linear(16, 8))
        assert torch.equal(made_here(x), qlab.to_torch(made_here)(x))


# ------------------------------------------------------------------------------------------
# LSTM
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [False, True])
def test_dynamic_lstm_matches_torch(batch_first):
    lstm = nn.LSTM(20, 32, num_layers=2, batch_first=batch_first)
    theirs = torch_quantize_dynamic(nn.Sequential(lstm), {nn.LSTM}, dtype=torch.qint8)[0]
    ours = qlab.quantize_dynamic(nn.Sequential(lstm), {nn.LSTM})[0]
    assert isinstance(ours, DynamicQuantLSTM)
    x = torch.randn(3, 12, 20)
    b = 3 if batch_first else 12
    h0 = (torch.randn(2, b, 32) * 0.1, torch.randn(2, b, 32) * 0.1)
    for hx in (None, h0):
        (a, (ha, ca)), (o, (ho, co)) = theirs(x, hx), ours(x, hx)
        for p, q in ((a, o), (ha, ho), (ca, co)):
            assert torch.equal(p, q)
    assert (ours(x)[0] - lstm(x)[0]).abs().max().item() < 0.02  # and close to float


@pytest.mark.parametrize("hidden, layers, seq, batch", [(5, 1, 1, 1), (64, 3, 7, 4), (192, 2, 6, 32)])
def test_dynamic_lstm_shapes_and_large_states_match_torch(hidden, layers, seq, batch):
    g = torch.Generator().manual_seed(hidden)
    lstm = nn.LSTM(11, hidden, num_layers=layers)
    theirs = torch_quantize_dynamic(nn.Sequential(lstm), {nn.LSTM}, dtype=torch.qint8)[0]
    ours = qlab.quantize_dynamic(nn.Sequential(lstm), {nn.LSTM})[0]
    x = torch.randn(seq, batch, 11, generator=g) * 3
    hx = tuple(torch.randn(layers, batch, hidden, generator=g) * s for s in (2, 5))
    (a, (ha, ca)), (o, (ho, co)) = theirs(x, hx), ours(x, hx)
    assert torch.equal(a, o) and torch.equal(ha, ho) and torch.equal(ca, co)


# ------------------------------------------------------------------------------------------
# profile and bad input
# ------------------------------------------------------------------------------------------


def test_profile_dynamic_linear_times_the_four_stages():
    m = qlab.quantize_dynamic(nn.Linear(128, 256))
    t = profile_dynamic_linear(m, torch.randn(64, 128), min_run_time=0.02)
    assert list(t) == ["choose_qparams", "quantize", "int_product", "to_float", "total"]
    assert all(isinstance(v, float) and v > 0 for v in t.values())
    stages = sum(v for k, v in t.items() if k != "total")
    assert 0.3 * t["total"] < stages < 3 * t["total"]  # loose: a shared machine is noisy
    with pytest.raises(TypeError, match="takes a DynamicQuantLinear, got Linear"):
        profile_dynamic_linear(nn.Linear(4, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="128 features"):
        profile_dynamic_linear(m, torch.randn(2, 4))


def test_dynamic_bad_input_names_the_expected_shape():
    m = qlab.quantize_dynamic(nn.Linear(8, 4))
    with pytest.raises(TypeError, match="float input"):
        m(torch.ones(2, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"expects input with 8 features in the last dimension, "
                                         r"got shape \(2, 7\)"):
        m(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        m(torch.tensor(1.0))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="contains NaN or Inf.*must be finite"):
            m(torch.full((2, 8), bad))
    lstm = qlab.quantize_dynamic(nn.LSTM(6, 5, num_layers=2))
    with pytest.raises(ValueError, match=r"\(seq, batch, feature\) with feature = input_size = 6, "
                                         r"got \(3, 2, 7\)"):
        lstm(torch.randn(3, 2, 7))
    with pytest.raises(ValueError, match=r"got \(3, 6\)"):
        lstm(torch.randn(3, 6))
    h = torch.zeros(1, 2, 5)
    with pytest.raises(ValueError, match=r"hx = \(h_0, c_0\), each of shape .* = \(2, 2, 5\), "
                                         r"got \[\(1, 2, 5\), \(1, 2, 5\)\]"):
        lstm(torch.randn(3, 2, 6), (h, h))
    with pytest.raises(ValueError, match="unidirectional LSTMs.*bidirectional=True"):
        qlab.quantize_dynamic(nn.LSTM(6, 5, bidirectional=True))
