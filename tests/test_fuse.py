"""qlab.fuse: batch-norm folding and conv/linear + relu fusion match the unfused model in eval."""

import pytest
import torch
from torch import nn

from qlab.fuse import ConvBnReLU2d, ConvReLU2d, LinearReLU, fold_bn, fuse_modules


def _bn(n, cls=nn.BatchNorm2d):
    bn = cls(n)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn.eval()


@pytest.mark.parametrize("bias", [True, False])
def test_fold_bn_formula_matches_conv_then_bn(bias):
    conv, bn = nn.Conv2d(3, 6, 3, bias=bias).eval(), _bn(6)
    fused = fold_bn(conv, bn)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(fused(x), bn(conv(x)), atol=1e-5)
    sigma = torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * (bn.weight / sigma).reshape(-1, 1, 1, 1)
    assert torch.allclose(fused.weight, w)


def test_fold_bn_into_linear():
    lin, bn = nn.Linear(5, 4), _bn(4, nn.BatchNorm1d)
    x = torch.randn(7, 5)
    assert torch.allclose(fold_bn(lin, bn)(x), bn(lin(x)), atol=1e-5)


def test_fuse_modules_eval_and_qat():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _bn(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5),
                          nn.ReLU()).eval()
    fused = fuse_modules(model, [["0", "1", "2"], ["4", "5"]])
    assert isinstance(fused[0], ConvReLU2d) and isinstance(fused[4], LinearReLU)
    assert isinstance(fused[1], nn.Identity)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(fused(x), model(x), atol=1e-5)
    qat = fuse_modules(model.train(), [["0", "1", "2"]], qat=True)
    assert isinstance(qat[0], ConvBnReLU2d)


def test_fuse_bad_input():
    with pytest.raises(ValueError, match="call model.eval"):
        fuse_modules(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)), [["0", "1"]])
    with pytest.raises(ValueError, match="fusable sequences"):
        fuse_modules(nn.Sequential(nn.ReLU(), nn.Conv2d(1, 1, 1)).eval(), [["0", "1"]])
    with pytest.raises(ValueError, match="features"):
        fold_bn(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(3))
