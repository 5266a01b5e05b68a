"""qparams_from_range against torch.ao's MinMaxObserver / PerChannelMinMaxObserver: exact."""

import pytest
import torch
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

import qlab

# (name, qlab grid, symmetric, torch dtype, per-tensor scheme, per-channel scheme)
AFF = (torch.per_tensor_affine, torch.per_channel_affine)
SYM = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
SCHEMES = [
    ("quint8 affine", qlab.uint8, False, torch.quint8, *AFF),
    ("qint8 symmetric", qlab.int8, True, torch.qint8, *SYM),
    ("quint8 symmetric", qlab.uint8, True, torch.quint8, *SYM),
    ("qint8 affine", qlab.int8, False, torch.qint8, *AFF),
]


def tensors():
    """100,000-value tensors of several shapes of distribution, plus zero-width and tiny ranges."""
    g = torch.Generator().manual_seed(1)
    n = 100_000
    yield torch.randn(n, generator=g)
    yield torch.rand(n, generator=g) * 6 + 0.5  # all positive, range excludes 0
    yield -torch.rand(n, generator=g) * 3 - 1  # all negative
    yield torch.randn(n, generator=g) ** 3 * 50  # heavy tails
    yield torch.full((n,), 0.0)  # zero width at 0
    yield torch.full((n,), 2.5)  # zero width away from 0
    yield torch.full((n,), -7.0)
    yield torch.randn(n, generator=g) * 1e-9  # tinier than eps * steps: eps scale


def torch_observer(cls, dtype, qscheme, reduce_range, **kw):
    if dtype == torch.quint8 and qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric):
        if reduce_range:
            # torch.ao refuses this combination by default (see the test below); the same
            # reduced grid given explicitly is what qlab computes.
            return cls(dtype=dtype, qscheme=qscheme, quant_min=0, quant_max=127, **kw)
    return cls(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, **kw)


@pytest.mark.parametrize("reduce_range", [False, True])
@pytest.mark.parametrize("name,grid,sym,dtype,pt,pc", SCHEMES, ids=[s[0] for s in SCHEMES])
def test_per_tensor_matches_torch_observer(name, grid, sym, dtype, pt, pc, reduce_range):
    for x in tensors():
        obs = torch_observer(MinMaxObserver, dtype, pt, reduce_range)
        obs(x)
        t_scale, t_zp = obs.calculate_qparams()
        qp = qlab.qparams_from_range(x.min(), x.max(), grid, symmetric=sym, reduce_range=reduce_range)
        assert qp.scale.dtype == torch.float32
        assert torch.equal(qp.scale.reshape(1), t_scale), (name, x[:3])
        assert torch.equal(qp.zero_point.reshape(1), t_zp.to(torch.int64)), (name, x[:3])
        assert (qp.qmin, qp.qmax) == (obs.quant_min, obs.quant_max)


@pytest.mark.parametrize("reduce_range", [False, True])
@pytest.mark.parametrize("name,grid,sym,dtype,pt,pc", SCHEMES, ids=[s[0] for s in SCHEMES])
def test_per_channel_matches_torch_observer(name, grid, sym, dtype, pt, pc, reduce_range):
    g = torch.Generator().manual_seed(2)
    # 100 channels x 1,000 values, channel ranges spanning six orders of magnitude, with
    # all-positive, all-negative, all-zero and constant channels mixed in.
    w = torch.randn(100, 1000, generator=g) * torch.logspace(-3, 3, 100).unsqueeze(1)
    w[10] = w[10].abs() + 1
    w[11] = -w[11].abs() - 1
    w[12] = 0.0
    w[13] = 4.0
    for axis in (0, 1):
        x = w if axis == 0 else w.t().contiguous()
        obs = torch_observer(PerChannelMinMaxObserver, dtype, pc, reduce_range, ch_axis=axis)
        obs(x)
        t_scale, t_zp = obs.calculate_qparams()
        lo, hi = torch.aminmax(x.movedim(axis, 0).flatten(1), dim=1)
        qp = qlab.qparams_from_range(lo, hi, grid, symmetric=sym, reduce_range=reduce_range, axis=axis)
        assert qp.per_channel and qp.axis == axis
        assert torch.equal(qp.scale, t_scale)
        assert torch.equal(qp.zero_point, t_zp.to(torch.int64))


def test_quint8_symmetric_reduce_range_is_the_middle_of_the_reduced_grid():
    """torch.ao refuses quint8 symmetric with reduce_range (NotImplementedError); qlab takes
    the middle of the reduced grid 0..127, as torch.ao does when that grid is given explicitly."""
    with pytest.raises(NotImplementedError):
        MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric, reduce_range=True)
    qp = qlab.qparams_from_range(-1.0, 1.0, qlab.uint8, symmetric=True, reduce_range=True)
    assert (qp.qmin, qp.qmax, qp.zero_point.item()) == (0, 127, 63)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("sym", [False, True])
def test_low_bit_grids_match_torch_custom_range(bits, signed, sym):
    """Bit widths 2..8 are torch.ao observers with quant_min/quant_max."""
    grid = qlab.qdtype(bits, signed)
    dtype = torch.qint8 if signed else torch.quint8
    scheme = torch.per_tensor_symmetric if sym else torch.per_tensor_affine
    for x in tensors():
        obs = MinMaxObserver(dtype=dtype, qscheme=scheme, quant_min=grid.qmin, quant_max=grid.qmax)
        obs(x)
        t_scale, t_zp = obs.calculate_qparams()
        qp = qlab.qparams_from_range(x.min(), x.max(), grid, symmetric=sym)
        if not signed and sym and bits == 8:
            continue  # torch uses (0 + 255) // 2 = 127 with an explicit range, 128 by default
        assert torch.equal(qp.scale.reshape(1), t_scale)
        assert torch.equal(qp.zero_point.reshape(1), t_zp.to(torch.int64))


def test_zero_width_range_gets_eps_scale():
    qp = qlab.qparams_from_range(0.0, 0.0, qlab.uint8)
    assert qp.scale.item() == torch.finfo(torch.float32).eps and qp.zero_point.item() == 0
    qp = qlab.qparams_from_range(0.0, 0.0, qlab.int8, symmetric=True)
    assert qp.scale.item() == torch.finfo(torch.float32).eps and qp.zero_point.item() == 0
    x = torch.zeros(5)
    assert torch.equal(qlab.dequantize(qlab.quantize(x, qp), qp), x)


def test_range_always_contains_zero():
    qp = qlab.qparams_from_range(2.0, 6.0, qlab.uint8)  # widened to [0, 6]
    assert qp.zero_point.item() == 0
    assert qp.scale.item() == pytest.approx(6 / 255)
    assert qlab.dequantize(qlab.quantize(torch.zeros(1), qp), qp).item() == 0.0


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_in_range(bad):
    with pytest.raises(ValueError, match="min_val contains NaN or Inf.*must be finite"):
        qlab.qparams_from_range(bad, 1.0)
    with pytest.raises(ValueError, match="max_val contains NaN or Inf"):
        qlab.qparams_from_range(torch.tensor([0.0, 0.0]), torch.tensor([1.0, bad]))


def test_min_greater_than_max():
    with pytest.raises(ValueError, match=r"min_val must be <= max_val.*min_val=2\.0 max_val=1\.0"):
        qlab.qparams_from_range(2.0, 1.0)
    with pytest.raises(ValueError, match="min_val must be <= max_val"):
        qlab.qparams_from_range(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 2.0]))


def test_range_shapes_must_match():
    with pytest.raises(ValueError, match=r"same shape, got \(3,\) and \(4,\)"):
        qlab.qparams_from_range(torch.zeros(3), torch.ones(4))
    with pytest.raises(ValueError, match="0-d .per-tensor. or 1-d .per-channel."):
        qlab.qparams_from_range(torch.zeros(2, 2), torch.ones(2, 2))


def test_range_must_be_float():
    with pytest.raises(TypeError, match="min_val must be a float tensor, got dtype torch.int64"):
        qlab.qparams_from_range(torch.tensor(0), torch.tensor(1.0))
    with pytest.raises(TypeError, match="max_val must be a number or a float tensor, got str"):
        qlab.qparams_from_range(0.0, "1.0")


def test_bad_qdtype_and_axis():
    with pytest.raises(TypeError, match="qdtype must be a qlab QDType"):
        qlab.qparams_from_range(0.0, 1.0, torch.quint8)
    with pytest.raises(ValueError, match="axis=1 needs 1-d"):
        qlab.qparams_from_range(0.0, 1.0, axis=1)
    with pytest.raises(ValueError, match="reduce_range needs at least 3 bits"):
        qlab.qparams_from_range(0.0, 1.0, qlab.qdtype(2, False), reduce_range=True)
