"""LSQ (learned step size): qlab.fake_quant.lsq_fake_quantize against torch's learnable fake
quantization (values and the gradients of x, scale and zero point), a finite-difference check
of the scale's gradient, and LearnedFakeQuantize training its scale and converting."""

import functools

import pytest
import torch
from torch import nn

import qlab
from qlab.fake_quant import LearnedFakeQuantize, lsq_fake_quantize
from qlab.observers import MinMaxObserver
from qlab.qconfig import QConfig


def _grads(f, x, s, z):
    x, s, z = (t.detach().clone().requires_grad_() for t in (x, s, z))
    y = f(x, s, z)
    g = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    y.backward(g)
    return y.detach(), x.grad, s.grad, z.grad


@pytest.mark.parametrize(("qmin", "qmax", "zp"), [(-8, 7, 0.0), (0, 15, 3.0), (-2, 1, 0.0), (0, 255, 17.0)])
@pytest.mark.parametrize("grad_factor", [1.0, 0.05])
def test_per_tensor_equals_torch_learnable_fake_quantize(qmin, qmax, zp, grad_factor):
    torch.manual_seed(qmax)
    x = torch.randn(300) * 2
    s, z = torch.tensor([0.37]), torch.tensor([zp])
    ours = _grads(lambda x, s, z: lsq_fake_quantize(x, s, z, qmin, qmax, grad_factor), x, s, z)
    theirs = _grads(lambda x, s, z: torch._fake_quantize_learnable_per_tensor_affine(
        x, s, z, qmin, qmax, grad_factor), x, s, z)
    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(ours[1], theirs[1])
    assert torch.allclose(ours[2], theirs[2], rtol=1e-5, atol=1e-5)
    assert torch.allclose(ours[3], theirs[3], rtol=1e-5, atol=1e-5)


def test_per_channel_equals_torch_learnable_fake_quantize():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3)
    s, z = torch.rand(6) * 0.2 + 0.05, torch.zeros(6)
    ours = _grads(lambda x, s, z: lsq_fake_quantize(x, s, z, -8, 7, 0.1, axis=0), w, s, z)
    theirs = _grads(lambda x, s, z: torch._fake_quantize_learnable_per_channel_affine(
        x, s, z, 0, -8, 7, 0.1), w, s, z)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_scale_gradient_by_hand_and_by_finite_differences():
    """Clipped values: x_hat = qmax * s (or qmin * s) is linear in s, so a finite difference gives
    LSQ's gradient exactly. Values inside the grid: the gradient is the paper's round(x/s) - x/s
    (round's straight-through part), derived by hand here."""
    s, z = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    clipped = torch.tensor([3.0, -3.0, 5.0], dtype=torch.float64)  # 4 bits at s = 0.2: -1.6 .. 1.4
    inside = torch.tensor([0.11, -0.52, 0.93], dtype=torch.float64)
    for x in (clipped, inside):
        x = x.requires_grad_(False)
        s_ = s.clone().requires_grad_()
        lsq_fake_quantize(x, s_, z, -8, 7).sum().backward()
        if x is clipped:
            eps = 1e-6
            up, down = (lsq_fake_quantize(x, s + d, z, -8, 7).sum() for d in (eps, -eps))
            fd = up - down
            assert s_.grad.item() == pytest.approx((fd / (2 * eps)).item(), rel=1e-9)
            assert s_.grad.item() == pytest.approx(7 - 8 + 7)
        else:
            assert s_.grad.item() == pytest.approx((torch.round(x / s) - x / s).sum().item(), rel=1e-12)


def test_learned_fake_quantize_trains_its_scale_and_converts():
    torch.manual_seed(0)
    lsq = functools.partial(LearnedFakeQuantize.with_args, observer=MinMaxObserver)
    qc = QConfig(activation=lsq(qdtype=qlab.qdtype(4, False)),
                 weight=lsq(qdtype=qlab.int4, symmetric=True, axis=0))
    model = nn.Sequential(qlab.nn.QuantStub(), nn.Linear(8, 4), nn.ReLU(), qlab.nn.DeQuantStub())
    prepared = qlab.prepare_qat(model, qc)
    x, y = torch.randn(64, 8), torch.randn(64, 4).relu()
    prepared(x)  # the first batch starts every LSQ quantizer: its scale becomes a parameter
    scales = [n for n, _ in prepared.named_parameters() if n.endswith(".scale")]
    assert len(scales) == 3  # input, weight (per channel), output
    opt = torch.optim.SGD(prepared.parameters(), lr=0.05)
    before = prepared[1].weight_fake_quant.scale.detach().clone()
    for _ in range(20):
        opt.zero_grad()
        loss = ((prepared(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    assert not torch.equal(before, prepared[1].weight_fake_quant.scale.detach())
    prepared.eval()
    with torch.no_grad():
        fake = prepared(x)
        int8 = qlab.convert(prepared)
        assert torch.equal(int8[1].weight_qparams.scale, prepared[1].weight_fake_quant.scale.detach())
        assert torch.allclose(int8(x), fake, atol=1e-5)


def test_lsq_bad_input():
    with pytest.raises(ValueError, match="scale must stay > 0"):
        lsq_fake_quantize(torch.randn(4), torch.tensor(-0.1), torch.tensor(0.0), -8, 7)
    with pytest.raises(ValueError, match="qmin < qmax"):
        lsq_fake_quantize(torch.randn(4), torch.tensor(0.1), torch.tensor(0.0), 7, -8)
    with pytest.raises(RuntimeError, match="run a batch"):
        LearnedFakeQuantize(qdtype=qlab.int4, symmetric=True).qparams()


def test_learned_fake_quantize_state_dict_round_trip():
    make = functools.partial(LearnedFakeQuantize, observer=MinMaxObserver, qdtype=qlab.int4, symmetric=True,
                             axis=0)
    a = make()
    a(torch.randn(5, 7))
    b = make()
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 7)
    assert torch.equal(a(x), b(x))
