"""Low-bit grids (2-8 bits) through the whole pipeline, against torch.ao with restricted ranges
(quant_min / quant_max on quint8 and qint8): fake quantization (values and gradients), the
converted int8 weights, and the converted model's outputs."""

import functools

import pytest
import torch
import torch.ao.quantization as tq
from reference import engine
from torch import nn

import qlab
from qlab.fake_quant import FakeQuantize
from qlab.lab.kit import checkpoints, data
from qlab.observers import MinMaxObserver, MovingAverageMinMaxObserver
from qlab.qconfig import QConfig

BITS = (2, 3, 4, 6, 8)


def _signed(bits):
    """torch.ao's quant_min, quant_max for a signed grid of `bits` bits, stored in qint8."""
    return {"quant_min": -(2 ** (bits - 1)), "quant_max": 2 ** (bits - 1) - 1, "dtype": torch.qint8}


def _torch_weight_fq(bits):
    return tq.FakeQuantize(observer=tq.MovingAveragePerChannelMinMaxObserver, **_signed(bits),
                           qscheme=torch.per_channel_symmetric)


def _torch_act_fq(bits):
    return tq.FakeQuantize(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=2**bits - 1,
                           dtype=torch.quint8)


@pytest.mark.parametrize("bits", BITS)
def test_low_bit_fake_quant_values_and_gradients_equal_torch_ao(bits):
    torch.manual_seed(bits)
    ours_w = FakeQuantize(observer=MovingAverageMinMaxObserver, qdtype=qlab.qdtype(bits, True),
                          symmetric=True, axis=0)
    ours_a = FakeQuantize(observer=MovingAverageMinMaxObserver, qdtype=qlab.qdtype(bits, False))
    theirs_w, theirs_a = _torch_weight_fq(bits), _torch_act_fq(bits)
    for step in range(3):
        w = (torch.randn(6, 20) * (1 + step)).requires_grad_()
        w2 = w.detach().clone().requires_grad_()
        a = (torch.randn(4, 32) * 2 + step).requires_grad_()
        a2 = a.detach().clone().requires_grad_()
        for ours, theirs, x, x2 in ((ours_w, theirs_w, w, w2), (ours_a, theirs_a, a, a2)):
            y, y2 = ours(x), theirs(x2)
            assert torch.equal(y, y2)
            assert len(torch.unique(y[0] if x is w else y)) <= 2**bits  # on a grid of 2**bits levels
            g = torch.randn_like(y)
            y.backward(g)
            y2.backward(g)
            assert torch.equal(x.grad, x2.grad)  # the clipped STE: g inside the grid, 0 outside
    assert torch.equal(ours_w.qparams().scale, theirs_w.scale.float())


@pytest.mark.parametrize(("bits", "signed", "where", "words"), [
    (9, True, "weight", "at most 8 bits"), (9, False, "activation", "at most 8 bits"),
    (4, False, "weight", "signed symmetric"), (4, True, "activation", "unsigned"),
])
def test_low_bit_qconfig_bad_grids_are_clear_errors(bits, signed, where, words):
    grid = qlab.qdtype(bits, signed)
    good_w = functools.partial(MinMaxObserver, qdtype=qlab.int4, symmetric=True, axis=0)
    good_a = functools.partial(MinMaxObserver, qdtype=qlab.qdtype(4, False))
    bad = functools.partial(MinMaxObserver, qdtype=grid, symmetric=where == "weight")
    with pytest.raises(ValueError, match=words):
        QConfig(activation=bad, weight=good_w) if where == "activation" else QConfig(good_a, bad)


def test_one_bit_grid_is_refused_with_the_allowed_range():
    with pytest.raises(ValueError, match="bits must be between 2 and 16"):
        qlab.qdtype(1, True)


def _low_bit_qconfigs(w_bits, a_bits):
    ours = QConfig(functools.partial(MinMaxObserver, qdtype=qlab.qdtype(a_bits, False)),
                   functools.partial(MinMaxObserver, qdtype=qlab.qdtype(w_bits, True), symmetric=True,
                                     axis=0))
    theirs = tq.QConfig(
        activation=tq.MinMaxObserver.with_args(quant_min=0, quant_max=2**a_bits - 1, dtype=torch.quint8),
        weight=tq.PerChannelMinMaxObserver.with_args(**_signed(w_bits), qscheme=torch.per_channel_symmetric))
    return ours, theirs


@pytest.mark.parametrize(("w_bits", "a_bits"), [(4, 8), (4, 4), (3, 6), (2, 8)])
def test_low_bit_convert_equals_torch_ao_convert(w_bits, a_bits):
    """The lesson ResNet, fused, calibrated on the same images: qlab's int8 weights are torch.ao's,
    and qlab.to_torch(model) is torch.ao's converted model bit for bit (fbgemm)."""
    x, _ = data.digits_tensors("test")
    ours_qc, theirs_qc = _low_bit_qconfigs(w_bits, a_bits)
    ours = checkpoints.load_model("resnet")
    ours.fuse_model()
    ours = qlab.prepare(ours, ours_qc)
    theirs = checkpoints.load_model("resnet")
    theirs.fuse_model()
    theirs.qconfig = theirs_qc
    with engine("fbgemm"), torch.no_grad():
        tq.prepare(theirs, inplace=True)
        ours(x[:64])
        theirs(x[:64])
        tq.convert(theirs, inplace=True)
        ours = qlab.convert(ours)
        assert torch.equal(ours.conv1.weight, theirs.conv1.weight().int_repr())
        assert int(ours.conv1.weight.min()) >= -(2 ** (w_bits - 1))
        assert torch.equal(qlab.to_torch(ours)(x[:32]), theirs(x[:32]))


@pytest.mark.parametrize("a_bits", [4, 6])
def test_qlab_clamps_low_bit_outputs_to_their_grid_where_torch_keeps_uint8(a_bits):
    """One conv: qlab's output codes are torch.ao's clamped to the low-bit grid (torch's kernels
    clamp to 0..255 only); inside the calibrated range they are the same codes."""
    torch.manual_seed(0)
    model = nn.Sequential(tq.QuantStub(), nn.Conv2d(3, 8, 3), tq.DeQuantStub())
    ours_qc, _ = _low_bit_qconfigs(8, a_bits)
    prepared = qlab.prepare(model, ours_qc)
    prepared(torch.randn(8, 3, 10, 10))
    int8 = qlab.convert(prepared)
    x = torch.randn(8, 3, 10, 10) * 3  # beyond the calibrated range: some codes pass qmax
    with engine("fbgemm"), torch.no_grad():
        q_in = int8[0](x)  # the same int8 input for both (its codes clamped to the low-bit grid)
        torch_in = torch._make_per_tensor_quantized_tensor(q_in.int_repr, q_in.scale, q_in.zero_point)
        theirs = qlab.to_torch(int8)[1](torch_in).int_repr().to(torch.int64)
        ours = int8[1](q_in).int_repr.to(torch.int64)
    qmax = 2**a_bits - 1
    assert (theirs > qmax).any()
    assert torch.equal(ours, theirs.clamp(max=qmax))
