"""Parity 1: QuantLinear / QuantConv2d against torch.ao's x86 quantized Linear / Conv2d."""

import pytest
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
from torch import nn

import qlab
from qlab.nn import QFunctional, QTensor, QuantConv2d, QuantLinear

pytestmark = pytest.mark.filterwarnings("ignore:.*quantiz.*deprecated:UserWarning")


@pytest.fixture(autouse=True)
def _x86():
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    yield
    torch.backends.quantized.engine = old


def _weight_qparams(w, per_channel):
    if per_channel:
        return qlab.qparams_from_range(w.flatten(1).amin(1), w.flatten(1).amax(1), qlab.int8,
                                       symmetric=True)
    return qlab.qparams_from_range(w.min(), w.max(), qlab.int8, symmetric=True)


def _compare(ours_out: QTensor, ref) -> tuple[int, float]:
    d = (ours_out.int_repr.int() - ref.int_repr().int()).abs()
    return int(d.max()), float((d > 0).float().mean())


def _input(shape, scale=0.05, zp=100):
    x = torch.randn(shape) * 2
    xq = torch.quantize_per_tensor(x, scale, zp, torch.quint8)
    return QTensor(xq.int_repr(), scale, zp), xq


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("m,k,n", [(1, 16, 8), (33, 100, 50), (64, 256, 128)])
def test_quant_linear_matches_torch(per_channel, relu, m, k, n):
    lin = nn.Linear(k, n)
    out_qp = qlab.qparams_from_range(-3.0, 4.0, qlab.uint8)
    ours = QuantLinear.from_float(lin, _weight_qparams(lin.weight.detach(), per_channel), out_qp,
                                  relu)
    x, xq = _input((m, k))
    y = ours(x)
    ref = qlab.to_torch(ours)(xq)
    assert isinstance(ref, torch.Tensor) and ref.is_quantized
    worst, frac = _compare(y, ref)
    assert worst <= 1 and frac <= 1e-3


CONV_CASES = [  # c_in, c_out, k, stride, padding, groups, dilation
    (3, 16, 3, 1, 1, 1, 1), (16, 32, 3, 2, 1, 1, 1), (16, 16, 3, 1, 1, 16, 1),  # depthwise
    (32, 32, 5, 2, 2, 32, 1), (16, 24, 1, 1, 0, 1, 1), (8, 16, 3, 1, 0, 2, 1),
    (8, 8, 3, 1, 2, 1, 2),
]


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("c_in,c_out,k,stride,padding,groups,dilation", CONV_CASES)
def test_quant_conv2d_matches_torch(per_channel, relu, c_in, c_out, k, stride, padding, groups,
                                    dilation):
    conv = nn.Conv2d(c_in, c_out, k, stride, padding, dilation, groups)
    out_qp = qlab.qparams_from_range(-2.0, 3.0, qlab.uint8)
    ours = QuantConv2d.from_float(conv, _weight_qparams(conv.weight.detach(), per_channel), out_qp,
                                  relu)
    x, xq = _input((2, c_in, 11, 12))
    y = ours(x)  # the first call fixes the input qparams and the int32 bias
    twin = qlab.to_torch(ours)
    assert type(twin) is (nniq.ConvReLU2d if relu else nnq.Conv2d)
    worst, frac = _compare(y, twin(xq))
    assert worst <= 1 and frac <= 1e-3


def test_against_torch_own_float_bias_within_one_lsb():
    """torch built from the float bias (not our int32 one): still <= 1 LSB, rare mismatches."""
    lin = nn.Linear(300, 200)
    wqp = _weight_qparams(lin.weight.detach(), True)
    ours = QuantLinear.from_float(lin, wqp, qlab.qparams_from_range(-3.0, 4.0, qlab.uint8))
    x, xq = _input((64, 300), 0.02, 60)
    y = ours(x)
    t = nnq.Linear(300, 200)
    qw = torch.quantize_per_channel(lin.weight.detach(), wqp.scale, wqp.zero_point, 0, torch.qint8)
    t.set_weight_bias(qw, lin.bias.detach())
    t.scale, t.zero_point = float(ours.scale), int(ours.zero_point)
    worst, frac = _compare(y, t(xq))
    assert worst <= 1 and frac <= 5e-3


def test_weights_are_int8_and_bias_int32_after_first_call():
    lin = nn.Linear(8, 4)
    ours = QuantLinear.from_float(lin, _weight_qparams(lin.weight.detach(), True),
                                  qlab.qparams_from_range(-1.0, 1.0, qlab.uint8))
    assert ours.weight.dtype == torch.int8 and ours.bias.dtype == torch.float32
    ours(_input((2, 8))[0])
    assert ours.bias.dtype == torch.int32
    with pytest.raises(ValueError, match="fixed input qparams"):
        ours(_input((2, 8), scale=0.07)[0])


def test_qfunctional_and_pooling_match_torch():
    a, aq = _input((2, 8, 7, 9), 0.031, 128)
    b, bq = _input((2, 8, 7, 9), 0.047, 120)
    ours, ref = QFunctional(0.071, 110), nnq.QFunctional()
    ref.scale, ref.zero_point = 0.071, 110
    for op in ("add", "add_relu", "mul"):
        worst, _ = _compare(getattr(ours, op)(a, b), getattr(ref, op)(aq, bq))
        assert worst == 0
    assert _compare(ours.cat([a, b], 1), ref.cat([aq, bq], 1))[0] == 0
    for size in ((1, 1), (3, 4)):
        assert _compare(nn.AdaptiveAvgPool2d(size)(a), nn.AdaptiveAvgPool2d(size)(aq))[0] == 0
    assert _compare(nn.MaxPool2d(3, 2, 1)(a), nn.MaxPool2d(3, 2, 1)(aq))[0] == 0
    assert _compare(torch.flatten(nn.ReLU()(a), 1), torch.flatten(nn.ReLU()(aq), 1))[0] == 0
