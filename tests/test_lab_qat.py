"""Lesson 05's numbers (qlab.lab.lessons.l05_quantization_aware_training): the STE curves, the QAT recipe
against torch.ao's, freezing, and the recorded runs (their int8 checkpoints reproduce their recorded
accuracy)."""

import pytest
import torch

from qlab.fake_quant import FakeQuantize
from qlab.lab.kit import data
from qlab.lab.lessons.l05_quantization_aware_training import numbers
from qlab.qconfig import low_bit_qconfig

X, Y = data.digits_tensors("test")


def test_ste_curves_are_autograd_of_fake_quantize():
    c = numbers.ste_curves(bits=3, lo=-1.0, hi=1.0)
    lo, hi = c["inside"]
    inside = (c["x"] >= lo - c["step"] / 2) & (c["x"] <= hi + c["step"] / 2)
    assert torch.equal(c["ste"][inside], torch.ones(int(inside.sum())))
    far = (c["x"] < lo - c["step"]) | (c["x"] > hi + c["step"])
    assert torch.equal(c["ste"][far], torch.zeros(int(far.sum())))
    assert len(torch.unique(c["y"])) == c["levels"] == 8
    assert not c["true"].any()


@pytest.mark.parametrize(("kwargs", "words"), [({"bits": 1}, "bits must be"), ({"bits": 9}, "bits must be"),
                                               ({"lo": 0.5, "hi": 1.0}, "must contain 0")])
def test_ste_curves_bad_input(kwargs, words):
    with pytest.raises(ValueError, match=words):
        numbers.ste_curves(**kwargs)


def test_evaluating_does_not_move_the_grids():
    model = numbers.prepare_for_qat("resnet", low_bit_qconfig(4, 8, qat=True))
    model(X[:32])
    fq = next(m for m in model.modules() if isinstance(m, FakeQuantize))
    before = fq.observer.min_val.clone(), fq.observer.max_val.clone()
    numbers.fake_quant_accuracy(model, X * 3, Y)
    assert torch.equal(before[0], fq.observer.min_val) and torch.equal(before[1], fq.observer.max_val)
    assert bool(fq.observer_enabled)  # restored


@pytest.mark.parametrize(("kwargs", "words"), [({"epochs": 0}, "epochs"), ({"lr": 0}, "lr"),
                                               ({"freeze_bn_at": 1.5}, "fraction")])
def test_run_qat_bad_schedule(kwargs, words):
    model = numbers.prepare_for_qat("resnet", low_bit_qconfig(8, 8, qat=True))
    with pytest.raises(ValueError, match=words):
        numbers.run_qat(model, **kwargs)


def test_qlab_qat_follows_torch_ao_qat_and_converts_to_what_it_trained():
    """One epoch of the ResNet at 4-bit weights with the same recipe: the fake-quant accuracies of
    qlab and torch.ao stay within one test image in 100 at every evaluation, the frozen model
    converts, and the int8 weights are the codes of the weights QAT trained."""
    ours_model = numbers.prepare_for_qat("resnet", low_bit_qconfig(4, 8, qat=True))
    ours = numbers.run_qat(ours_model, epochs=1, lr=3e-3, eval_every=6)
    theirs = numbers.torch_ao_qat("resnet", 4, 8, epochs=1, lr=3e-3, eval_every=6)
    assert ours["steps"] == theirs["history"]["steps"]
    for a, b in zip(ours["accuracy"], theirs["history"]["accuracy"], strict=True):
        assert abs(a - b) <= 0.01
    done = numbers.finish(ours_model)
    assert done["weights_match"]
    assert abs(done["int"] - done["fake"]) <= 0.005


@pytest.mark.parametrize("run", ["mobilenet_v2_w2a8_observers", "resnet_w2a8_observers",
                                 "mobilenet_v2_w2a8_lsq", "mobilenet_v2_w8a3_observers"])
def test_recorded_runs_reproduce_their_int8_accuracy(run):
    recorded = numbers.recorded_runs()[run]
    c = recorded["config"]
    model = numbers.load_int8(c["model"], c["w_bits"], c["a_bits"], c["method"])
    with torch.no_grad():
        acc = float((model(X).argmax(1) == Y).float().mean())
    assert acc == pytest.approx(recorded["int_accuracy"], abs=1e-4)
    assert int(model.features[0][0].weight.abs().max() if c["model"] == "mobilenet_v2"
               else model.conv1.weight.abs().max()) <= 2 ** (c["w_bits"] - 1)


def test_every_sweep_run_is_recorded_and_unknown_runs_are_named():
    recorded = numbers.recorded_runs()
    assert {numbers.run_name(*r) for r in numbers.SWEEP} <= set(recorded)
    with pytest.raises(ValueError, match="no recorded QAT run 'resnet_w5a8_observers'"):
        numbers.load_int8("resnet", 5, 8)
    with pytest.raises(ValueError, match="method must be one of"):
        numbers.run_name("resnet", 4, 8, "magic")
