"""qlab.integer: exact integer products and the two requantizations (float and fixed point)."""

import math

import pytest
import torch
import torch.nn.functional as F

from qlab.integer import (
    FLOAT32_EXACT_LIMIT,
    _rounding_divide_by_pot,
    float32_sum_is_exact,
    float_multiplier,
    int_conv2d,
    int_linear,
    quantize_multiplier,
    requantize,
    requantize_fixed_point,
    to_codes,
    weight_abs_sum,
    with_float_bias,
)


def test_int_linear_is_exact_for_uint8_and_int8_inputs_and_weight_zero_points():
    for dtype, lo, hi in ((torch.uint8, 0, 256), (torch.int8, -128, 128)):
        x = torch.randint(lo, hi, (13, 37), dtype=dtype)
        w = torch.randint(-128, 128, (11, 37), dtype=torch.int8)
        for x_zp in (lo, (lo + hi) // 2, hi - 1):
            for w_zp in (0, torch.randint(-5, 5, (11,))):
                ref = (x.long() - x_zp) @ (w.long() - torch.as_tensor(w_zp).reshape(-1, 1)).T
                assert torch.equal(int_linear(x, x_zp, w, w_zp).long(), ref)


@pytest.mark.parametrize("c_in,c_out,k,stride,padding,dilation,groups", [
    (3, 8, 3, 1, 1, 1, 1), (8, 16, 3, 2, 0, 1, 1), (8, 8, 3, 1, 1, 1, 8),
    (8, 12, 3, 1, 2, 2, 4), (4, 6, (1, 3), (2, 1), (0, 1), 1, 2),
])
def test_int_conv2d_is_exact(c_in, c_out, k, stride, padding, dilation, groups):
    x = torch.randint(0, 256, (2, c_in, 9, 10), dtype=torch.uint8)
    kk = (k, k) if isinstance(k, int) else k
    w = torch.randint(-128, 128, (c_out, c_in // groups, *kk), dtype=torch.int8)
    zp = 77
    ref = F.conv2d(x.double() - zp, w.double(), None, stride, padding, dilation, groups)
    got = int_conv2d(x, zp, w, stride, padding, dilation, groups)
    assert got.dtype == torch.int32 and torch.equal(got.double(), ref)


def _exact_conv(x, zp, w, stride=1, padding=0, dilation=1, groups=1):
    """The reference: conv2d of the integers in float64 (exact: every sum is far below 2**53)."""
    return F.conv2d(x.double() - zp, w.double(), None, stride, padding, dilation, groups)


@pytest.mark.parametrize("c_in,c_out,k,stride,padding,groups", [
    (16, 24, 1, 1, 0, 1), (16, 24, 1, 2, 0, 1),  # 1x1: int_linear (torch._int_mm), no im2col
    (8, 16, 3, 1, 1, 1), (16, 16, 3, 2, 1, 16), (8, 12, 3, 1, 1, 4),  # float32 conv (bound holds)
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_int_conv2d_methods_are_exact_for_any_layout(c_in, c_out, k, stride, padding, groups,
                                                     channels_last):
    x = torch.randint(0, 256, (3, c_in, 9, 10), dtype=torch.uint8)
    if channels_last:  # what the previous int8 conv hands on
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randint(-128, 128, (c_out, c_in // groups, k, k), dtype=torch.int8)
    cache = {}
    for _ in range(2):  # the second call uses the cached weight tensors
        got = int_conv2d(x, 77, w, stride, padding, 1, groups, cache)
        assert got.dtype == torch.int32
        assert torch.equal(got.double(), _exact_conv(x, 77, w, stride, padding, 1, groups))
    got = int_conv2d(x, 77, w, stride, padding, 1, groups, cache, allow_float32=True)
    assert torch.equal(got.double(), _exact_conv(x, 77, w, stride, padding, 1, groups))


@pytest.mark.parametrize("groups", [1, 4])
def test_int_conv2d_falls_back_to_integers_beyond_the_float32_bound(groups):
    """All-max weights: 255 * sum|w| > 2**24, so the exact im2col + integer path runs."""
    c_in = 256
    w = torch.full((8, c_in // groups, 3, 3), 127, dtype=torch.int8)
    w[::2] = -128
    x = torch.randint(0, 256, (2, c_in, 6, 7), dtype=torch.uint8)
    x[0] = 255  # one all-max image: every sum is as large as it gets
    assert not float32_sum_is_exact(255, weight_abs_sum(w))
    got = int_conv2d(x, 0, w, 1, 1, 1, groups)
    assert torch.equal(got.double(), _exact_conv(x, 0, w, 1, 1, 1, groups))
    assert got.abs().max() > FLOAT32_EXACT_LIMIT  # sums beyond float32's integers


def test_weight_abs_sum_is_the_largest_l1_norm_of_an_output_channel():
    w = torch.tensor([[[[1, -2]], [[3, 0]]], [[[-128, 127]], [[0, -1]]]], dtype=torch.int8)
    assert weight_abs_sum(w) == 256  # 128 + 127 + 0 + 1 (int8 -128 has no int8 absolute value)


@pytest.mark.parametrize("dtype,code,a_max,w,n_inside", [
    (torch.uint8, 255, 255, 127, 518),   # uint8 codes centred on zp = 0: |a| <= 255
    (torch.int8, -128, 128, 127, 1032),  # int8 codes centred on zp = 0: |a| <= 128
])
def test_float32_bound_at_its_edge(dtype, code, a_max, w, n_inside):
    """n all-max terms a * w: n * a_max * w <= 2**24 is the edge of float32_sum_is_exact.

    Just inside, the float32 conv runs and is exact; one term more, the bound fails and
    int_conv2d falls back to integers, still exact, for both a regular and a depthwise conv.
    """
    assert n_inside * a_max * w <= FLOAT32_EXACT_LIMIT < (n_inside + 1) * a_max * w
    for n, inside in ((n_inside, True), (n_inside + 1, False)):
        x = torch.full((1, 2, 1, n), code, dtype=dtype)
        regular = (x[:, :1], torch.full((3, 1, 1, n), w, dtype=torch.int8), 1)
        depthwise = (x, torch.full((2, 1, 1, n), w, dtype=torch.int8), 2)
        for x_q, w_q, groups in (regular, depthwise):
            assert float32_sum_is_exact(a_max, weight_abs_sum(w_q)) == inside
            got = int_conv2d(x_q, 0, w_q, groups=groups)
            assert torch.equal(got.long(), torch.full_like(got, n * code * w, dtype=torch.long))


def test_float32_sum_just_outside_the_bound_is_wrong():
    """Why the bound: 519 terms 255 * 127 = 32385 sum to 16,807,815, odd and above 2**24, which
    no float32 holds; a float32 conv on these integers cannot give it, int_conv2d does."""
    n, exact = 519, 519 * 255 * 127
    assert exact > FLOAT32_EXACT_LIMIT and exact % 2 == 1
    assert int(torch.tensor(exact, dtype=torch.float32)) != exact
    x = torch.full((1, 1, 1, n), 255, dtype=torch.uint8)
    w = torch.full((1, 1, 1, n), 127, dtype=torch.int8)
    float_conv = F.conv2d(x.float(), w.float())
    assert int(float_conv) != exact
    assert int(int_conv2d(x, 0, w)) == exact


def test_float32_conv_is_not_used_when_torch_trades_float32_accuracy():
    """With a lower matmul precision torch may compute float32 convs in bf16 / tf32: then the
    exactness argument fails, and int_conv2d uses the integer path (here: still exact)."""
    x = torch.randint(0, 256, (2, 8, 7, 7), dtype=torch.uint8)
    w = torch.randint(-128, 128, (4, 8, 3, 3), dtype=torch.int8)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        got = int_conv2d(x, 3, w, padding=1, allow_float32=True)
    finally:
        torch.set_float32_matmul_precision(before)
    assert got.dtype == torch.int32 and torch.equal(got.double(), _exact_conv(x, 3, w, 1, 1))


def test_requantize_and_float_bias_leave_acc_alone_unless_inplace():
    acc = torch.tensor([[1.0, 3.0], [5.0, -7.0]])
    kept = acc.clone()
    y = requantize(with_float_bias(acc, torch.tensor([0.5, 1.0]), 0.5), 0.25, 10, 0, 255)
    assert torch.equal(acc, kept) and y.tolist() == [[10, 11], [12, 9]]  # (acc + [1, 2]) / 4
    z = requantize(with_float_bias(acc, torch.tensor([0.5, 1.0]), 0.5, inplace=True), 0.25, 10, 0,
                   255, inplace=True)
    assert z.data_ptr() == acc.data_ptr() and torch.equal(z, y)


def test_to_codes_stores_clamped_float_codes_exactly():
    q = torch.tensor([0.0, 1.0, 127.0, 128.0, 255.0])
    assert to_codes(q, torch.uint8).tolist() == [0, 1, 127, 128, 255]
    assert to_codes(q - 128, torch.int8).tolist() == [-128, -127, -1, 0, 127]
    assert to_codes(q * 100, torch.int32).tolist() == [0, 100, 12700, 12800, 25500]


def test_float_multiplier_is_float32_product_over_scale():
    m = float_multiplier(0.1, torch.tensor([0.02, 0.03]), 0.7)
    s = torch.tensor(0.1, dtype=torch.float32) * torch.tensor([0.02, 0.03])
    assert m.dtype == torch.float32 and torch.equal(m, s / torch.tensor(0.7))


def test_requantize_rounds_half_to_even_and_clamps():
    acc = torch.tensor([1, 3, 5, -1, -3, 1000, -1000])
    q = requantize(acc, 0.5, 10, 0, 255)  # 0.5, 1.5, 2.5, -0.5, -1.5 -> 0, 2, 2, -0, -2
    assert q.tolist() == [10, 12, 12, 10, 8, 255, 0]


def test_quantize_multiplier_reconstructs_m():
    for m in (1e-5, 0.0123, 0.25, 0.5, 0.999999, 1.0, 3.7):
        m0, shift = quantize_multiplier(m)
        assert 2**30 <= m0 < 2**31
        assert math.isclose(m0 * 2.0 ** (-31 - shift), m, rel_tol=2**-30)
    with pytest.raises(ValueError, match="positive"):
        quantize_multiplier(0.0)


def test_rounding_divide_by_pot_rounds_ties_away_from_zero():
    x = torch.tensor([5, -5, 6, -6, 7, -7])
    assert _rounding_divide_by_pot(x, 1).tolist() == [3, -3, 3, -3, 4, -4]


@pytest.mark.parametrize("double_rounding,max_rate", [(False, 1e-4), (True, 0.05)])
def test_fixed_point_agrees_with_float_except_rare_one_lsb_cases(double_rounding, max_rate):
    """Measured rarity of 1-LSB disagreements between fbgemm's float multiplier and the
    fixed point (M0, shift), over 200 multipliers M (log-uniform in 1e-4..0.3) x 20,000
    accumulators whose results land near the int8 grid (|acc * M| <= 300).

    Single rounding (TFLite): they differ only where acc * M is within float32 rounding of a
    .5 tie (float32 keeps 24 bits of the product, M0 has 31) or exactly on one (even vs up).
    Measured: 4.75e-6 of values (19 in 4 million), never more than 1 LSB.
    gemmlowp's double rounding: the high multiply keeps only `shift` fraction bits before the
    second rounding; measured 2.9e-2 (2.9% of values), never more than 1 LSB.
    """
    g = torch.Generator().manual_seed(0)
    total = differ = 0
    for _ in range(200):
        m = float(torch.tensor(10 ** (-4 + 3.5 * torch.rand(1, generator=g).item()),
                               dtype=torch.float32))
        bound = min(int(300 / m), 2**30)  # accumulators whose result lands near the int8 grid
        acc = torch.randint(-bound, bound, (20_000,), generator=g, dtype=torch.int32)
        a = requantize(acc, m, 0, -(2**31), 2**31 - 1).long()
        m0, shift = quantize_multiplier(m)
        b = requantize_fixed_point(acc, m0, shift, 0, -(2**31), 2**31 - 1, double_rounding)
        d = (a - b).abs()
        assert d.max().item() <= 1
        total += acc.numel()
        differ += int((d > 0).sum())
    rate = differ / total
    print(f"fixed point (double_rounding={double_rounding}) vs float: {differ} of {total} "
          f"differ by 1 LSB ({rate:.2e})")
    assert rate < max_rate


def test_fixed_point_exact_on_ties_and_left_shift():
    acc = torch.tensor([1, 3, -1, -3, 100])
    m0, shift = quantize_multiplier(0.5)
    assert requantize_fixed_point(acc, m0, shift, 0, -1000, 1000).tolist() == [1, 2, 0, -1, 50]
    # gemmlowp's high multiply also rounds ties up (its nudge is 1 - 2**30 for negatives)
    assert requantize_fixed_point(acc, m0, shift, 0, -1000, 1000, double_rounding=True).tolist() \
        == [1, 2, 0, -1, 50]
    m0, shift = quantize_multiplier(2.0)
    assert requantize_fixed_point(acc, m0, shift, 0, -1000, 1000).tolist() == [2, 6, -2, -6, 200]
