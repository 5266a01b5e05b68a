"""quantize / dequantize / fake_quantize against torch's kernels: exact, ties and edges included."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import TORCH_DTYPE

import qlab

N = 100_000


def parity_inputs(qp: qlab.QParams, n: int = N) -> torch.Tensor:
    """Random values, exact ties (x / scale = k + 0.5), near-ties and values at and beyond the edges."""
    g = torch.Generator().manual_seed(3)
    s, zp = qp.scale.item(), qp.zero_point.item()
    lo, hi = (qp.qmin - zp) * s, (qp.qmax - zp) * s
    width = hi - lo
    k = torch.arange(qp.qmin - zp - 3, qp.qmax - zp + 3, dtype=torch.float32)
    return torch.cat([
        torch.rand(n, generator=g) * width * 1.4 + lo - 0.2 * width,  # in range and 20% beyond
        (k + 0.5) * s,  # ties: round half to even decides
        (k + 0.5) * s * (1 + 1e-7), (k + 0.5) * s * (1 - 1e-7),  # one ulp around the tie
        k * s,  # exactly on the grid
        torch.tensor([lo, hi, lo - s / 2, hi + s / 2, lo - 1e6 * s, hi + 1e6 * s, 0.0, -0.0]),
    ])  # fmt: skip


# (-16, 15.875) and (-15.9375, 15.9375) give scale 0.125: exact ties. (0, 0) is zero width.
RANGES = [(-1.0, 1.0), (-0.3, 2.7), (-16.0, 15.875), (-15.9375, 15.9375), (0.0, 0.0), (-5e-3, 1e-9)]


def torch_qparams_cases():
    for grid in (qlab.uint8, qlab.int8):
        for sym in (False, True):
            for lo, hi in RANGES:
                yield grid, sym, lo, hi


CASES = list(torch_qparams_cases())


@pytest.mark.parametrize("grid,sym,lo,hi", CASES)
def test_quantize_per_tensor_matches_torch(grid, sym, lo, hi):
    qp = qlab.qparams_from_range(lo, hi, grid, symmetric=sym)
    x = parity_inputs(qp)
    ref = torch.quantize_per_tensor(x, qp.scale.item(), qp.zero_point.item(), TORCH_DTYPE[grid])
    q = qlab.quantize(x, qp)
    assert q.dtype == grid.storage
    assert torch.equal(q, ref.int_repr())
    assert torch.equal(qlab.dequantize(q, qp), ref.dequantize())


def test_far_beyond_the_grid_saturates():
    """qlab clamps in float; torch's kernel converts to int32 first, so a value more than
    2**31 steps away wraps around (here to 0 instead of 255). qlab saturates, as it should."""
    qp = qlab.qparams_from_range(-5e-3, 0.0, qlab.uint8)  # scale ~2e-5: 1e5 is 5e9 steps
    x = torch.tensor([1e5, -1e5])
    assert qlab.quantize(x, qp).tolist() == [255, 0]
    ref = torch.quantize_per_tensor(x, qp.scale.item(), qp.zero_point.item(), torch.quint8)
    assert ref.int_repr().tolist() == [0, 0]  # torch's int32 overflow


def test_ties_round_half_to_even():
    qp = qlab.qparams_from_range(-15.9375, 15.9375, qlab.int8, symmetric=True)  # 15.9375 / 127.5
    assert qp.scale.item() == 0.125
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5]) * 0.125
    assert qlab.quantize(x, qp).tolist() == [0, 2, 2, 0, -2]


@pytest.mark.parametrize("grid", [qlab.uint8, qlab.int8])
@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_per_channel_matches_torch(grid, sym, axis):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 50, 60, generator=g)  # 120,000 values
    x = x * torch.logspace(-2, 2, x.shape[axis]).reshape([-1 if d == axis % 3 else 1 for d in range(3)])
    lo, hi = torch.aminmax(x.movedim(axis, 0).flatten(1), dim=1)
    qp = qlab.qparams_from_range(lo * 0.8, hi * 0.8, grid, symmetric=sym, axis=axis)  # 20% clipped
    ref = torch.quantize_per_channel(
        x, qp.scale.double(), qp.zero_point, axis % 3, TORCH_DTYPE[grid]
    )
    q = qlab.quantize(x, qp)
    assert torch.equal(q, ref.int_repr())
    assert torch.equal(qlab.dequantize(q, qp), ref.dequantize())
    # ties and edges, channel by channel: a 2-d (channels, values) tensor along axis 0
    s = qp.scale.unsqueeze(1)
    k = torch.arange(-300, 300, dtype=torch.float32)
    edges = torch.cat([(k + 0.5) * s, k * s, (k + 0.5) * s * (1 + 1e-7)], dim=1)
    qp0 = qlab.QParams(qp.scale, qp.zero_point, grid, qp.qmin, qp.qmax, axis=0)
    ref = torch.quantize_per_channel(edges, qp.scale.double(), qp.zero_point, 0, TORCH_DTYPE[grid])
    assert torch.equal(qlab.quantize(edges, qp0), ref.int_repr())


def fq_cases():
    for bits in range(2, 9):
        for signed in (False, True):
            for sym in (False, True):
                yield bits, signed, sym


@pytest.mark.parametrize("bits,signed,sym", list(fq_cases()))
def test_fake_quantize_per_tensor_matches_torch_values_and_grads(bits, signed, sym):
    grid = qlab.qdtype(bits, signed)
    for lo, hi in [(-1.0, 1.0), (-0.7, 3.1), (0.0, 0.0)]:
        qp = qlab.qparams_from_range(lo, hi, grid, symmetric=sym)
        x = parity_inputs(qp)
        g_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y = qlab.fake_quantize(x1, qp)
        ref = torch.fake_quantize_per_tensor_affine(
            x2, qp.scale.item(), qp.zero_point.item(), qp.qmin, qp.qmax
        )
        assert torch.equal(y, ref)
        y.backward(g_out)
        ref.backward(g_out)
        assert torch.equal(x1.grad, x2.grad)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("sym", [False, True])
def test_fake_quantize_per_channel_matches_torch_values_and_grads(bits, sym):
    grid = qlab.qdtype(bits, signed=sym)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(16, 8, 900, generator=g) * torch.logspace(-2, 1, 8).reshape(1, 8, 1)
    lo, hi = torch.aminmax(x.movedim(1, 0).flatten(1), dim=1)
    qp = qlab.qparams_from_range(lo * 0.9, hi * 0.9, grid, symmetric=sym, axis=1)
    g_out = torch.randn(x.shape, generator=g)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = qlab.fake_quantize(x1, qp)
    ref = torch.fake_quantize_per_channel_affine(
        x2, qp.scale, qp.zero_point.to(torch.int32), 1, qp.qmin, qp.qmax
    )
    assert torch.equal(y, ref)
    y.backward(g_out)
    ref.backward(g_out)
    assert torch.equal(x1.grad, x2.grad)


def test_ste_gradient_is_one_inside_and_zero_outside():
    qp = qlab.qparams_from_range(-1.0, 1.0, qlab.int8, symmetric=True)
    x = torch.tensor([-3.0, -0.5, 0.0, 0.99, 3.0], requires_grad=True)
    qlab.fake_quantize(x, qp).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


# -- properties -------------------------------------------------------------------------------
floats = st.floats(-1e4, 1e4, allow_nan=False, width=32)
grids = st.sampled_from([qlab.qdtype(b, s) for b in (2, 3, 4, 8, 12, 16) for s in (False, True)])


@st.composite
def range_and_values(draw):
    a, b = sorted([draw(floats), draw(floats)])
    grid, sym = draw(grids), draw(st.booleans())
    qp = qlab.qparams_from_range(a, b, grid, symmetric=sym)
    lo, hi = min(a, 0.0), max(b, 0.0)
    if sym:
        lo, hi = -max(-lo, hi), max(-lo, hi)
    lo, hi = lo + 0.0, hi + 0.0  # -0.0 -> 0.0
    xs = draw(st.lists(st.floats(lo, hi, width=32), min_size=1, max_size=50))
    return qp, torch.tensor(xs, dtype=torch.float32), sym, lo, hi


@settings(max_examples=300, deadline=None)
@given(range_and_values())
def test_round_trip_error_at_most_half_a_step_inside_the_range(case):
    qp, x, sym, lo, hi = case
    x_hat = qlab.dequantize(qlab.quantize(x, qp), qp)
    s = qp.scale.item()
    # the symmetric grid has one step more below 0 than above (-128..127): +amax lands on 127.5
    tol = s / 2 * (1 + 1e-5) + 1e-6 * x.abs()
    assert ((x_hat - x).abs() <= tol).all(), (qp, x, x_hat)


@settings(max_examples=200, deadline=None)
@given(range_and_values(), st.lists(floats, min_size=1, max_size=50))
def test_fake_quantize_is_idempotent(case, extra):
    qp = case[0]
    x = torch.cat([case[1], torch.tensor(extra)])
    once = qlab.fake_quantize(x, qp)
    assert torch.equal(qlab.fake_quantize(once, qp), once)


@settings(max_examples=200, deadline=None)
@given(range_and_values(), st.lists(floats, min_size=2, max_size=50))
def test_quantize_is_monotone(case, extra):
    qp = case[0]
    x = torch.sort(torch.cat([case[1], torch.tensor(extra)])).values
    q = qlab.quantize(x, qp).to(torch.int64)
    assert (q[1:] >= q[:-1]).all()


# -- bad input --------------------------------------------------------------------------------
QP = qlab.qparams_from_range(-1.0, 1.0)
QP_PC = qlab.qparams_from_range(-torch.ones(3), torch.ones(3), axis=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_input(bad):
    x = torch.tensor([0.0, bad])
    for fn in (qlab.quantize, qlab.fake_quantize):
        with pytest.raises(ValueError, match="x contains NaN or Inf; only finite values"):
            fn(x, QP)


@pytest.mark.parametrize("x", [torch.arange(4), torch.ones(3, dtype=torch.uint8), [0.5, 1.0]])
def test_non_float_input(x):
    for fn in (qlab.quantize, qlab.fake_quantize):
        with pytest.raises(TypeError, match="x must be a"):
            fn(x, QP)


def test_dequantize_wants_integers():
    with pytest.raises(TypeError, match="q must be an integer tensor"):
        qlab.dequantize(torch.ones(3), QP)


def test_qparams_wrong_type():
    with pytest.raises(TypeError, match="qp must be QParams"):
        qlab.quantize(torch.ones(3), (0.1, 0))


def test_axis_that_does_not_exist():
    with pytest.raises(ValueError, match=r"axis=2 does not exist.*shape \(3, 4\).*-2\.\.1"):
        qlab.quantize(torch.ones(3, 4), QP_PC, axis=2)
    with pytest.raises(ValueError, match="axis=0 was given but qp is per-tensor"):
        qlab.quantize(torch.ones(3, 4), QP, axis=0)


def test_per_channel_shape_mismatch():
    with pytest.raises(ValueError, match=r"3 channels but the tensor has 4 along axis 1"):
        qlab.quantize(torch.ones(3, 4), QP_PC, axis=1)
    with pytest.raises(ValueError, match=r"3 channels but the tensor has 5 along axis 0"):
        qlab.dequantize(torch.ones(5, dtype=torch.uint8), QP_PC)
