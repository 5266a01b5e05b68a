"""Parity 1: QuantLinear / QuantConv2d against torch.ao's quantized Linear / Conv2d.

fbgemm is the reference the int8 modules follow bit for bit: integer products, then the float
bias added as b / (s_x s_w), then requantization by M = s_x s_w / s_out. On the x86 engine,
Linear runs on fbgemm too; Conv2d runs on oneDNN where the CPU has VNNI (and groups <= 100),
whose float epilogue rounds in another order: rare 1-step differences, measured below.
"""

import pytest
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
from reference import engine
from torch import nn

import qlab
from qlab.integer import float32_sum_is_exact, weight_abs_sum
from qlab.nn import QFunctional, QuantConv2d, QuantLinear
from qlab.tensor import QTensor


@pytest.fixture(autouse=True)
def _fbgemm():
    with engine("fbgemm"):
        yield


def _weight_qparams(w, per_channel):
    if per_channel:
        return qlab.qparams_from_range(w.flatten(1).amin(1), w.flatten(1).amax(1), qlab.int8,
                                       symmetric=True)
    return qlab.qparams_from_range(w.min(), w.max(), qlab.int8, symmetric=True)


def _compare(ours_out: QTensor, ref) -> tuple[int, float]:
    d = (ours_out.int_repr.int() - ref.int_repr().int()).abs()
    return int(d.max()), float((d > 0).float().mean())


def _input(shape, scale=0.05, zp=100, spread=2.0, qmax=255):
    """The same uint8 input for qlab (a QTensor) and torch (a quint8 tensor), codes <= qmax."""
    x = (torch.randn(shape) * spread).clamp((0 - zp) * scale, (qmax - zp) * scale)
    xq = torch.quantize_per_tensor(x, scale, zp, torch.quint8)
    qp = qlab.QParams(torch.tensor(scale), torch.tensor(zp), qlab.uint8, 0, 255)
    return QTensor(xq.int_repr(), qp), xq


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
    assert _compare(y, ref) == (0, 0.0)


CONV_CASES = [  # c_in, c_out, k, stride, padding, groups, dilation
    (3, 16, 3, 1, 1, 1, 1), (16, 32, 3, 2, 1, 1, 1), (16, 16, 3, 1, 1, 16, 1),  # depthwise
    (32, 32, 5, 2, 2, 32, 1), (16, 24, 1, 1, 0, 1, 1), (8, 16, 3, 1, 0, 2, 1),
    (8, 8, 3, 1, 2, 1, 2), (16, 32, 1, 2, 0, 1, 1),  # a strided 1x1 (ResNet's downsample)
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
    # 7-bit inputs (reduce_range), as calibrated models feed fbgemm: its int16 pair sums
    # of uint8 x int8 products cannot saturate then
    x, xq = _input((2, c_in, 11, 12), 0.05, 60, qmax=127)
    twin = qlab.to_torch(ours)
    assert type(twin) is (nniq.ConvReLU2d if relu else nnq.Conv2d)
    assert _compare(ours(x), twin(xq)) == (0, 0.0)


def test_quant_conv2d_matches_torch_beyond_the_float32_bound_and_on_channels_last_input():
    """All |w_q| = 127 and 864 terms: 195 * sum|w_q| > 2**24, so int_conv2d leaves the float32
    conv for im2col + torch._int_mm; and an input in channels-last memory (what an int8 conv
    hands on). Both still match torch.ao to the step."""
    torch.manual_seed(3)
    conv = nn.Conv2d(96, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randint(0, 2, conv.weight.shape) * 2.0 - 1.0)  # +-1: q_w = +-127
    x, xq = _input((2, 96, 6, 7), 0.05, 60, qmax=127)
    y_float = conv(xq.dequantize()).detach()
    out_qp = qlab.qparams_from_range(y_float.min(), y_float.max(), qlab.uint8)
    ours = QuantConv2d.from_float(conv, _weight_qparams(conv.weight.detach(), False), out_qp)
    assert not float32_sum_is_exact(255 - 60, weight_abs_sum(ours.weight))
    assert _compare(ours(x), qlab.to_torch(ours)(xq)) == (0, 0.0)
    x_cl = QTensor(x.int_repr.contiguous(memory_format=torch.channels_last), x.qparams)
    pointwise = nn.Conv2d(96, 16, 1)
    small = QuantConv2d.from_float(pointwise, _weight_qparams(pointwise.weight.detach(), True), out_qp)
    for module in (ours, small):
        assert torch.equal(module(x_cl).int_repr, module(x).int_repr)
        assert _compare(module(x_cl), qlab.to_torch(module)(xq)) == (0, 0.0)


def test_float_bias_is_fbgemms_on_ties_and_many_values():
    """Millions of outputs against torch's own nnq.Linear built from the float bias: identical."""
    torch.manual_seed(1)
    lin = nn.Linear(32, 512)
    with torch.no_grad():
        lin.bias.mul_(5)
    wqp = _weight_qparams(lin.weight.detach(), True)
    ours = QuantLinear.from_float(lin, wqp, qlab.qparams_from_range(-1.0, 0.0, qlab.uint8))
    x, xq = _input((4096, 32), 0.0123, 3)
    t = nnq.Linear(32, 512)
    t.set_weight_bias(torch.quantize_per_channel(lin.weight.detach(), wqp.scale.double(),
                                                 wqp.zero_point, 0, torch.qint8), lin.bias.detach())
    t.scale, t.zero_point = ours.scale, ours.zero_point
    assert _compare(ours(x), t(xq)) == (0, 0.0)


def test_x86_convs_on_onednn_are_at_most_one_step_off():
    """Where x86 hands convs to oneDNN, the same model can differ by one output step, rarely."""
    conv = nn.Conv2d(16, 32, 3, padding=1)
    ours = QuantConv2d.from_float(conv, _weight_qparams(conv.weight.detach(), True),
                                  qlab.qparams_from_range(-0.3, 0.3, qlab.uint8))
    x, xq = _input((8, 16, 24, 24), 0.0123, 3, spread=0.5)
    with engine("x86"):
        worst, frac = _compare(ours(x), qlab.to_torch(ours)(xq))
    assert worst <= 1 and frac <= 1e-4


def test_bias_rules_float_and_int32():
    """"float" adds b / (s_x s_w) in float32; "int32" adds round(b / (s_x s_w)) to the integers."""
    lin = nn.Linear(8, 4)
    wqp = _weight_qparams(lin.weight.detach(), True)
    out_qp = qlab.qparams_from_range(-1.0, 1.0, qlab.uint8)
    fl = QuantLinear.from_float(lin, wqp, out_qp)
    i32 = QuantLinear.from_float(lin, wqp, out_qp, bias_rule="int32")
    assert fl.bias_rule == "float" and torch.equal(fl.bias, lin.bias.detach())
    x, _ = _input((64, 8), 0.02, 100)
    s_acc = torch.tensor(0.02, dtype=torch.float32) * wqp.scale
    assert torch.equal(i32.int32_bias(x.qparams), torch.round(lin.bias.detach() / s_acc).to(torch.int32))
    diff = (fl(x).int_repr.int() - i32(x).int_repr.int()).abs()
    assert diff.max() <= 1  # the bias moves by at most half a unit of s_x s_w
    with pytest.raises(ValueError, match=r"bias rule must be one of \('float', 'int32'\)"):
        QuantLinear.from_float(lin, wqp, out_qp, bias_rule="int8")


def test_int8_module_state_dict_loads_into_a_fresh_module():
    conv = nn.Conv2d(4, 6, 3, groups=2)
    ours = QuantConv2d.from_float(conv, _weight_qparams(conv.weight.detach(), True),
                                  qlab.qparams_from_range(-2.0, 3.0, qlab.uint8), relu=True)
    fresh = QuantConv2d(4, 6, 3, groups=2, relu=True)
    fresh.load_state_dict(ours.state_dict())
    x, _ = _input((2, 4, 7, 7))
    assert torch.equal(fresh(x).int_repr, ours(x).int_repr)


def test_qfunctional_and_pooling_match_torch():
    a, aq = _input((2, 8, 7, 9), 0.031, 128)
    b, bq = _input((2, 8, 7, 9), 0.047, 120)
    ours = QFunctional(qlab.QParams(torch.tensor(0.071), torch.tensor(110), qlab.uint8, 0, 255))
    ref = nnq.QFunctional()
    ref.scale, ref.zero_point = 0.071, 110
    for op in ("add", "add_relu", "mul"):
        worst, _ = _compare(getattr(ours, op)(a, b), getattr(ref, op)(aq, bq))
        assert worst == 0
    assert _compare(ours.cat([a, b], 1), ref.cat([aq, bq], 1))[0] == 0
    for size in ((1, 1), (3, 4)):
        assert _compare(nn.AdaptiveAvgPool2d(size)(a), nn.AdaptiveAvgPool2d(size)(aq))[0] == 0
    assert _compare(nn.MaxPool2d(3, 2, 1)(a), nn.MaxPool2d(3, 2, 1)(aq))[0] == 0
    assert _compare(torch.flatten(nn.ReLU()(a), 1), torch.flatten(nn.ReLU()(aq), 1))[0] == 0


@pytest.mark.parametrize("zp", [0, 77, 128, 255])
def test_adaptive_avg_pool_matches_torch_on_channels_last_codes(zp):
    """int8 convs (torch.ao's and qlab's) hand on channels-last tensors; there torch's pooling
    kernel rounds as qlab does, ties included (odd zero points too), for equal and unequal windows.
    (On NCHW-contiguous quint8 tensors torch takes another kernel, which can differ at ties.)"""
    torch.manual_seed(zp)
    q = torch.randint(0, 256, (4, 64, 6, 10), dtype=torch.uint8).contiguous(
        memory_format=torch.channels_last)
    a = QTensor(q, qlab.QParams(torch.tensor(0.031), torch.tensor(zp), qlab.uint8, 0, 255))
    aq = torch._make_per_tensor_quantized_tensor(q, 0.031, zp)
    for size in (1, (2, 5), (3, 3), (4, 7)):
        assert _compare(nn.AdaptiveAvgPool2d(size)(a), nn.AdaptiveAvgPool2d(size)(aq)) == (0, 0.0)
