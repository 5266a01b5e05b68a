"""Parity 2: DynamicQuantLinear / DynamicQuantLSTM against torch.ao's dynamic Linear / LSTM.

Bit-identical: the same qparams from fbgemm's ChooseQuantizationParams, the same quantized
input (one fused multiply-add), the same int32 accumulators, and fbgemm's final
fma(acc, s_x*s_w, b) emulated in float64 then rounded once to float32.
"""

import pytest
import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic as torch_quantize_dynamic

import qlab
from qlab.nn import DynamicQuantLinear, DynamicQuantLSTM
from qlab.nn.dynamic import dynamic_qparams


def test_choose_qparams_matches_fbgemm():
    g = torch.Generator().manual_seed(0)
    for i in range(500):
        mag = 10.0 ** torch.randint(-7, 3, (1,), generator=g).item()
        x = torch.randn(9, generator=g) * mag + (i % 3 - 1) * mag
        for rr in (True, False):
            s, z = torch._choose_qparams_per_tensor(x, rr)
            qp = dynamic_qparams(*(float(v) for v in torch.aminmax(x)), rr)
            assert (float(qp.scale), int(qp.zero_point)) == (
                float(torch.tensor(s, dtype=torch.float32)), z)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("shape", [(1, 32), (17, 64), (3, 9, 130)])
def test_dynamic_linear_matches_torch(per_channel, shape):
    lin = nn.Linear(shape[-1], 50)
    ours = qlab.quantize_dynamic(nn.Sequential(lin), per_channel=per_channel)[0]
    assert isinstance(ours, DynamicQuantLinear) and ours.weight.dtype == torch.int8
    ref = qlab.to_torch(ours)
    if not per_channel:  # torch.ao's own conversion gives the same int8 weights
        theirs = torch_quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)[0]
        assert torch.equal(theirs.weight().int_repr(), ours.weight)
        ref = theirs
    x = torch.randn(*shape) * 3 + 1
    assert torch.equal(ours(x), ref(x))


@pytest.mark.parametrize("batch_first", [False, True])
def test_dynamic_lstm_matches_torch(batch_first):
    lstm = nn.LSTM(20, 32, num_layers=2, batch_first=batch_first)
    theirs = torch_quantize_dynamic(nn.Sequential(lstm), {nn.LSTM}, dtype=torch.qint8)[0]
    ours = qlab.quantize_dynamic(nn.Sequential(lstm), {nn.LSTM})[0]
    assert isinstance(ours, DynamicQuantLSTM)
    x = torch.randn(3, 12, 20)
    b = 3 if batch_first else 12
    h0 = (torch.randn(2, b, 32) * 0.1, torch.randn(2, b, 32) * 0.1)
    for hx in (None, h0):
        (a, (ha, ca)), (o, (ho, co)) = theirs(x, hx), ours(x, hx)
        # gates are sums of dynamic-linear outputs of size ~1e-2 per step; 1e-6 absolute is
        # far below 1e-3 of any output step here
        for p, q in ((a, o), (ha, ho), (ca, co)):
            assert torch.equal(p, q)
    assert (ours(x)[0] - lstm(x)[0]).abs().max().item() < 0.02  # and close to float


def test_dynamic_reduce_range_false_is_closer_to_float():
    """8-bit activations (no reduce_range) halve the activation step: closer to float."""
    lin = nn.Linear(64, 32)
    x = torch.randn(256, 64)
    errors = {rr: (qlab.quantize_dynamic(lin, reduce_range=rr)(x) - lin(x)).pow(2).mean().item()
              for rr in (True, False)}
    assert errors[False] < 0.6 * errors[True]
    with pytest.raises(ValueError, match="always uses reduce_range=True"):
        qlab.to_torch(qlab.quantize_dynamic(lin, reduce_range=False))


def test_dynamic_bad_input_names_the_expected_shape():
    m = qlab.quantize_dynamic(nn.Linear(8, 4))
    with pytest.raises(TypeError, match="float input"):
        m(torch.ones(2, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"expects input with 8 features in the last dimension, "
                                         r"got shape \(2, 7\)"):
        m(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        m(torch.tensor(1.0))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="contains NaN or Inf.*must be finite"):
            m(torch.full((2, 8), bad))
    lstm = qlab.quantize_dynamic(nn.LSTM(6, 5, num_layers=2))
    with pytest.raises(ValueError, match=r"\(seq, batch, feature\) with feature = input_size = 6, "
                                         r"got \(3, 2, 7\)"):
        lstm(torch.randn(3, 2, 7))
    with pytest.raises(ValueError, match=r"got \(3, 6\)"):
        lstm(torch.randn(3, 6))
    h = torch.zeros(1, 2, 5)
    with pytest.raises(ValueError, match=r"hx = \(h_0, c_0\), each of shape .* = \(2, 2, 5\), "
                                         r"got \[\(1, 2, 5\), \(1, 2, 5\)\]"):
        lstm(torch.randn(3, 2, 6), (h, h))
    with pytest.raises(ValueError, match="unidirectional LSTMs.*bidirectional=True"):
        qlab.quantize_dynamic(nn.LSTM(6, 5, bidirectional=True))
