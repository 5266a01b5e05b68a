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


def test_one_fold_convert_stores_exactly_what_qat_fake_quantized():
    """QAT and eval fusion share qlab.fuse.bn_fold_factor (γ·rsqrt(var+eps)): the int8 weights
    convert stores are the fake-quantized folded weights QAT trained with, bit for bit."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 64, 3, bias=False), nn.BatchNorm2d(64)
    with torch.no_grad():
        bn.running_var.uniform_(0.1, 3.0)
        bn.weight.uniform_(0.5, 2.0)
    m = QATConvBn2d.from_float(conv, bn).freeze_bn()
    m(torch.randn(2, 3, 8, 8))  # the weight fake-quant observes the folded weight
    factor = qlab.fuse.bn_fold_factor(bn.running_var, bn.eps, bn.weight).reshape(-1, 1, 1, 1)
    seen = m.weight_fake_quant(m.weight * factor)  # what QAT's forward used
    wqp = m.weight_fake_quant.qparams()
    folded, _ = m.folded_weight_bias()
    assert torch.equal(folded, m.weight * factor)
    assert torch.equal(qlab.fake_quantize(folded, wqp, axis=0), seen)
    # torch.ao's QAT ConvBn2d divides by sqrt instead: the factors differ in the last bit
    sqrt_factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    differ = (sqrt_factor != factor.flatten()).float().mean().item()
    ulp = ((sqrt_factor - factor.flatten()).abs() / torch.finfo(torch.float32).eps / factor.abs().flatten())
    assert 0 < differ < 0.6 and ulp.max() <= 2
