"""Parity 2: DynamicQuantLinear / DynamicQuantLSTM against torch.ao's dynamic Linear / LSTM.

Tolerance: 1e-3 of one output step, where the output step is s_x * s_w (the float value of one
int32 accumulator unit). The int32 accumulators are identical (same qparams from fbgemm's
ChooseQuantizationParams, same quantized input); only the last float step, fma(acc, s_x*s_w, b),
is emulated in float64 and can differ from fbgemm's fused multiply-add in the last float32 bit
when the product has more than 53 significant bits. Measured: bit-identical outputs.
"""

import pytest
import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic as torch_quantize_dynamic

import qlab
from qlab.nn import DynamicQuantLinear, DynamicQuantLSTM
from qlab.nn.dynamic import choose_qparams

pytestmark = pytest.mark.filterwarnings("ignore:.*quantiz.*deprecated:UserWarning")


def test_choose_qparams_matches_fbgemm():
    g = torch.Generator().manual_seed(0)
    for i in range(500):
        mag = 10.0 ** torch.randint(-7, 3, (1,), generator=g).item()
        x = torch.randn(9, generator=g) * mag + (i % 3 - 1) * mag
        for rr in (True, False):
            s, z = torch._choose_qparams_per_tensor(x, rr)
            assert choose_qparams(*(float(v) for v in torch.aminmax(x)), rr) == (
                float(torch.tensor(s, dtype=torch.float32)), z)


def _unit(x, w_scale):
    s_x, _ = choose_qparams(float(x.min()), float(x.max()), True)
    return s_x * float(w_scale.max())


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
    diff = (ours(x) - ref(x)).abs().max().item() / _unit(x, ours.weight_scale)
    assert diff <= 1e-3


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
            assert (p - q).abs().max().item() <= 1e-6
    assert (ours(x)[0] - lstm(x)[0]).abs().max().item() < 0.02  # and close to float


def test_dynamic_reduce_range_false_and_bad_input():
    lin = nn.Linear(8, 4)
    m = qlab.quantize_dynamic(lin, reduce_range=False)
    assert (m(torch.randn(2, 8)) - lin(torch.randn(2, 8))).shape == (2, 4)
    with pytest.raises(ValueError, match="reduce_range=True"):
        qlab.to_torch(m)
    with pytest.raises(TypeError, match="float input"):
        m(torch.ones(2, 8, dtype=torch.int64))
