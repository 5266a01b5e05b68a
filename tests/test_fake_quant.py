"""qlab.FakeQuantize against torch.ao's FakeQuantize; switches; STE gradient."""

import pytest
import torch
import torch.ao.quantization as tq

import qlab
from qlab.fake_quant import FakeQuantize
from qlab.observers import MovingAverageMinMaxObserver


def test_matches_torch_fake_quantize_per_tensor_and_per_channel():
    ours = FakeQuantize(observer=MovingAverageMinMaxObserver, qdtype=qlab.uint8)
    theirs = tq.FakeQuantize(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255)
    ours_w = FakeQuantize(observer=MovingAverageMinMaxObserver, qdtype=qlab.int8, symmetric=True,
                          axis=0)
    theirs_w = tq.default_per_channel_weight_fake_quant()
    for _ in range(3):
        x = torch.randn(4, 16) * 3
        assert torch.equal(ours(x), theirs(x))
        w = torch.randn(6, 5)
        assert torch.equal(ours_w(w), theirs_w(w))


def test_switches_and_ste():
    fq = FakeQuantize(qdtype=qlab.uint8)
    x = torch.linspace(-1, 1, 11, requires_grad=True)
    y = fq(x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(11))  # inside the grid: gradient 1
    fq.disable_fake_quant()
    assert torch.equal(fq(x), x)
    fq.enable_fake_quant().disable_observer()
    before = fq.qparams().scale.clone()
    fq(x * 10)
    assert torch.equal(fq.qparams().scale, before)
    with pytest.raises(TypeError, match="qlab Observer"):
        FakeQuantize(observer=torch.nn.Identity)


def test_bad_switches_and_observer_instances_are_clear_errors():
    fq = FakeQuantize(qdtype=qlab.uint8)
    with pytest.raises(TypeError, match="enable_observer takes True or False, got 'no'"):
        fq.enable_observer("no")
    with pytest.raises(TypeError, match="enable_fake_quant takes True or False"):
        fq.enable_fake_quant(1)
    with pytest.raises(TypeError, match=r"an observer class or factory.*not an instance"):
        FakeQuantize(observer=MovingAverageMinMaxObserver())


def test_frozen_observer_keeps_its_qparams_without_searching_again(monkeypatch):
    fq = FakeQuantize(observer=qlab.observers.HistogramObserver, qdtype=qlab.uint8)
    fq(torch.randn(1000))
    fq.disable_observer()
    calls = []
    original = qlab.observers.HistogramObserver.qparams
    monkeypatch.setattr(qlab.observers.HistogramObserver, "qparams",
                        lambda self: calls.append(1) or original(self))
    for _ in range(5):
        fq(torch.randn(100))
    assert len(calls) <= 1
    fq.enable_observer()
    fq(torch.randn(100))
    fq(torch.randn(100))
    assert len(calls) >= 3  # observing again: the grid follows the data every step
