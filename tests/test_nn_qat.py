"""QAT modules: fake-quantized weights and outputs; QATConvBn2d folds BN with running stats."""

import torch
from torch import nn

import qlab
from qlab.nn import QATConv2d, QATConvBn2d, QATLinear


def test_qat_linear_and_conv_fake_quantize_weights_and_outputs():
    lin = QATLinear.from_float(nn.Linear(8, 4), relu=True)
    x = torch.randn(5, 8, requires_grad=True)
    y = lin(x)
    qp = lin.activation_post_process.qparams()
    assert torch.allclose(y, qlab.fake_quantize(y.detach(), qp))
    assert (y >= 0).all()
    y.sum().backward()
    assert lin.weight.grad is not None and x.grad is not None
    conv = QATConv2d.from_float(nn.Conv2d(3, 4, 3))
    assert conv(torch.randn(2, 3, 6, 6)).shape == (2, 4, 4, 4)


def test_qat_conv_bn_matches_conv_then_bn_with_fake_quant_off():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6)
    m = QATConvBn2d.from_float(conv, bn)
    m.weight_fake_quant.disable_fake_quant()
    m.activation_post_process.disable_fake_quant()
    x = torch.randn(4, 3, 8, 8)
    ref_bn = nn.BatchNorm2d(6)
    ref_bn.load_state_dict(bn.state_dict())
    expected = ref_bn(conv(x))  # training mode: batch statistics
    assert torch.allclose(m(x), expected, atol=1e-5)
    assert torch.allclose(m.bn.running_mean, ref_bn.running_mean)
    m.freeze_bn()
    m.train()
    mean = m.bn.running_mean.clone()
    m(x)
    assert torch.equal(m.bn.running_mean, mean)  # frozen: no more updates
    ref_bn.eval()
    assert torch.allclose(m(x), ref_bn(conv(x)), atol=1e-5)
