"""torchao (PyTorch's newer quantization library, lesson 07) computes the same integers as qlab:
choose_qparams_affine / quantize_affine / dequantize_affine against qparams_from_range / quantize /
dequantize, per tensor, per channel, per group (torchao's block_size), at ties and range edges."""

import random

import pytest
import torch

import qlab

quant_primitives = pytest.importorskip("torchao.quantization.quant_primitives")
MappingType = quant_primitives.MappingType
EPS = torch.finfo(torch.float32).eps


def _codes(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.int64)


@pytest.mark.parametrize("seed", range(5))
def test_per_tensor_affine_uint8(seed):
    torch.manual_seed(seed)
    x = torch.randn(64, 128) * (seed + 1) + seed
    choose = quant_primitives.choose_qparams_affine
    s, z = choose(x, MappingType.ASYMMETRIC, x.shape, torch.uint8, 0, 255, eps=EPS)
    qp = qlab.qparams_from_range(x.min(), x.max(), qlab.uint8)
    assert s.item() == qp.scale.item() and z.item() == qp.zero_point.item()
    q = quant_primitives.quantize_affine(x, x.shape, s, z, torch.uint8, 0, 255)
    assert torch.equal(_codes(q), _codes(qlab.quantize(x, qp)))
    back = quant_primitives.dequantize_affine(q, x.shape, s, z, torch.uint8, 0, 255)
    assert torch.equal(back, qlab.dequantize(qlab.quantize(x, qp), qp))


@pytest.mark.parametrize("bits", [8, 4])
def test_per_channel_symmetric(bits):
    torch.manual_seed(bits)
    w = torch.randn(96, 384) * torch.rand(96, 1) * 3
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    choose = quant_primitives.choose_qparams_affine
    s, z = choose(w, MappingType.SYMMETRIC, (1, w.shape[1]), torch.int8, lo, hi, eps=EPS)
    qp = qlab.qparams_from_range(w.amin(1), w.amax(1), qlab.qdtype(bits, True), symmetric=True, axis=0)
    assert torch.equal(s.flatten(), qp.scale)  # both max|w| / ((qmax - qmin) / 2): PyTorch's 127.5 at 8 bits
    q = quant_primitives.quantize_affine(w, (1, w.shape[1]), s, z, torch.int8, lo, hi)
    assert torch.equal(_codes(q), _codes(qlab.quantize(w, qp, axis=0)))


def test_per_group_int4_is_per_channel_of_the_reshaped_weight():
    """torchao's block_size (1, 32) = one scale per 32 consecutive weights of a row: qlab's
    per-channel qparams of the weight reshaped to (rows * K / 32, 32)."""
    torch.manual_seed(0)
    w = torch.randn(64, 256)
    choose = quant_primitives.choose_qparams_affine
    s, z = choose(w, MappingType.SYMMETRIC, (1, 32), torch.int8, -8, 7, eps=EPS)
    groups = w.reshape(-1, 32)
    qp = qlab.qparams_from_range(groups.amin(1), groups.amax(1), qlab.int4, symmetric=True, axis=0)
    assert torch.equal(s.flatten(), qp.scale)
    q = quant_primitives.quantize_affine(w, (1, 32), s, z, torch.int8, -8, 7)
    assert torch.equal(_codes(q).reshape(-1, 32), _codes(qlab.quantize(groups, qp, axis=0)))


def test_ties_round_half_to_even_on_the_same_inverse_scale():
    random.seed(0)
    for _ in range(200):
        scale = torch.tensor([random.uniform(1e-3, 1.0)])
        zp = torch.tensor([random.randint(0, 255)], dtype=torch.int32)
        x = (torch.arange(-300, 300, dtype=torch.float32) + 0.5) * scale  # x / s on .5, give or take a bit
        qp = qlab.QParams(scale[0], zp[0].long(), qlab.uint8, 0, 255)
        ours = qlab.quantize(x, qp)
        theirs = quant_primitives.quantize_affine(x, x.shape, scale, zp, torch.uint8, 0, 255)
        assert torch.equal(_codes(theirs), _codes(ours))
