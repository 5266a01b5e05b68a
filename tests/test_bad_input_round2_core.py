"""Issue 25, the core's share: bad input to the public API added since round one (QAT qconfigs,
LSQ, the freezing helpers, SmoothQuant, numpy scalars) gets a clear error (the type, and a
message naming the argument and what is allowed), or the right result where there is one."""

import warnings

import numpy as np
import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import qlab
from qlab import smoothquant as sq
from qlab.fake_quant import LearnedFakeQuantize, lsq_fake_quantize
from qlab.nn import QATConvBn2d, QATLinear
from qlab.nn.dynamic import DynamicQuantLSTM
from qlab.observers import HistogramObserver, MinMaxObserver, MSEObserver
from qlab.qconfig import low_bit_qconfig


class ConvNet(nn.Module):
    """QuantStub -> conv -> bn -> relu -> DeQuantStub, with torchvision's fuse_model (it fuses
    for QAT when the model is in train mode)."""

    def __init__(self, stubs=True):
        super().__init__()
        self.quant = tq.QuantStub() if stubs else nn.Identity()
        self.conv, self.bn, self.relu = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()
        self.dequant = tq.DeQuantStub() if stubs else nn.Identity()

    def forward(self, x):
        return self.dequant(self.relu(self.bn(self.conv(self.quant(x)))))

    def fuse_model(self):
        fuse = tq.fuse_modules_qat if self.training else tq.fuse_modules
        fuse(self, [["conv", "bn", "relu"]], inplace=True)


# -- 1. prepare_qat needs FakeQuantize factories ---------------------------------------------
@pytest.mark.parametrize("qconfig", [low_bit_qconfig(4, 8), qlab.minmax_qconfig, qlab.default_qconfig])
def test_prepare_qat_refuses_a_qconfig_without_fake_quantization(qconfig):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"prepare_qat needs a qconfig whose activation and weight "
                                        r"make FakeQuantize.*(MinMaxObserver|HistogramObserver)"):
        qlab.prepare_qat(model, qconfig)
    with pytest.raises(TypeError, match=r"qlab\.default_qat_qconfig.*low_bit_qconfig\(\.\.\., qat=True\)"):
        qlab.prepare_qat(model, qconfig)
    with pytest.raises(TypeError, match="make FakeQuantize"):
        QATLinear.from_float(nn.Linear(4, 4), qconfig)


def test_prepare_qat_takes_fake_quant_and_lsq_qconfigs():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    for qconfig in (qlab.default_qat_qconfig, low_bit_qconfig(4, 8, qat=True),
                    low_bit_qconfig(4, 8, qat=True, learned_scale=True)):
        assert isinstance(qlab.prepare_qat(model, qconfig)[0], QATLinear)


# -- 4. fused in train mode, then prepare ------------------------------------------------------
def test_prepare_after_train_mode_fusion_says_call_eval_first():
    model = ConvNet().train()
    model.fuse_model()  # train mode: torch.ao's QAT ConvBnReLU2d, batch norm kept
    with pytest.raises(TypeError, match=r"'conv' \(ConvBnReLU2d\).*model\.eval\(\) before "
                                        r"model\.fuse_model\(\)"):
        qlab.prepare(model, qlab.minmax_qconfig)
    qat_fused = qlab.fuse.fuse_modules(ConvNet().train(), [["conv", "bn", "relu"]], qat=True)
    with pytest.raises(TypeError, match=r"'conv' \(ConvBnReLU2d\).*model\.eval\(\)"):
        qlab.prepare(qat_fused, qlab.minmax_qconfig)
    assert isinstance(qlab.prepare_qat(model).conv, QATConvBn2d)  # it is right for QAT


def test_prepare_after_eval_mode_fusion_works():
    model = ConvNet().eval()
    model.fuse_model()
    qlab.prepare(model, qlab.minmax_qconfig)


# -- 6. a model without a QuantStub ------------------------------------------------------------
def _converted_without_stubs():
    model = ConvNet(stubs=False).eval()
    model.fuse_model()
    prepared = qlab.prepare(model, qlab.minmax_qconfig)
    prepared(torch.randn(2, 3, 8, 8))
    return qlab.convert(prepared)


def test_int8_model_without_quant_stub_names_the_stubs():
    int8 = _converted_without_stubs()
    with pytest.raises(TypeError, match=r"takes int8 activations.*add a QuantStub at the input "
                                        r"and a DeQuantStub at the output"):
        int8(torch.randn(2, 3, 8, 8))


def test_torch_model_without_quant_stub_names_the_stubs():
    """torch's own error is "Could not run 'quantized::conv2d.new' ... 'CPU' backend"."""
    exported = qlab.to_torch(_converted_without_stubs())
    with pytest.raises(TypeError, match=r"no QuantStub.*add a QuantStub at the input and a "
                                        r"DeQuantStub at the output"):
        exported(torch.randn(2, 3, 8, 8))


def test_torch_layer_still_takes_a_quantized_tensor():
    layer = _converted_without_stubs().conv
    xq = torch.quantize_per_tensor(torch.rand(1, 3, 8, 8), 0.01, 0, torch.quint8)
    assert qlab.to_torch(layer)(xq).is_quantized


# -- 8. freezing helpers walk the model ------------------------------------------------------
def _qat_model():
    model = ConvNet().train()
    model.fuse_model()
    return qlab.prepare_qat(model)


def _fake_quants(model):
    return [m for m in model.modules() if isinstance(m, qlab.FakeQuantize)]


@pytest.mark.parametrize("style", ["call", "apply"])
def test_freezing_helpers_walk_the_model(style):
    model = _qat_model()
    model(torch.randn(2, 3, 8, 8))

    def run(f):
        f(model) if style == "call" else model.apply(f)

    run(qlab.freeze_bn_stats)
    assert model.conv.freeze_bn_stats and not model.conv.bn.training
    run(qlab.disable_observer)
    assert _fake_quants(model) and not any(bool(f.observer_enabled) for f in _fake_quants(model))
    run(qlab.enable_observer)
    assert all(bool(f.observer_enabled) for f in _fake_quants(model))


def test_lsq_observer_cannot_be_switched_back_on():
    lsq = LearnedFakeQuantize(MinMaxObserver, qdtype=qlab.int4, symmetric=True)
    lsq.enable_observer(True)  # before the first batch: it observes that batch anyway
    lsq(torch.randn(8))
    lsq.disable_observer()  # already off: fine
    with pytest.raises(RuntimeError, match=r"LearnedFakeQuantize.*scale is learned.*cannot "
                                           r"observe again.*fresh"):
        lsq.enable_observer(True)


# -- 12. SmoothQuant ---------------------------------------------------------------------------
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_smooth_quant_keeps_a_half_precision_model_in_its_dtype(dtype):
    model = _mlp().to(dtype)
    x = torch.randn(5, 8).to(dtype)
    smoothed = sq.smooth_quant(model, [x], 0.5)
    y = smoothed(x)
    assert y.dtype == dtype and smoothed[0].smooth.inv_scale.dtype == dtype
    torch.testing.assert_close(y, model(x), rtol=0.05, atol=0.05)


def test_smooth_quant_empty_batch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"calibration batch 0 gives '0' \(Linear\) an empty "
                                         r"input.*at least one row"):
        sq.smooth_quant(_mlp(), [torch.zeros(0, 8), torch.randn(2, 8)], 0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_smooth_quant_blames_the_calibration_data_for_nan(bad):
    x = torch.randn(4, 8)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=r"calibration batch 1 gives '0' \(Linear\) NaN or Inf "
                                         r"inputs.*calibration data must be finite") as err:
        sq.smooth_quant(_mlp(), [torch.randn(4, 8), x], 0.5)
    assert "act_absmax" not in str(err.value)


# -- 13. LSQ's learned scale and channels ------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_lsq_refuses_a_nan_or_inf_scale(bad):
    lsq = LearnedFakeQuantize(MinMaxObserver, qdtype=qlab.int8, symmetric=True, axis=0)
    lsq(torch.randn(3, 4))
    with torch.no_grad():
        lsq.scale[1] = bad
    with pytest.raises(ValueError, match=r"learned scale must stay finite and > 0.*NaN or Inf"):
        lsq(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"finite and > 0"):
        lsq_fake_quantize(torch.randn(4), torch.tensor(bad), torch.tensor(0.0), -8, 7)


def test_per_channel_lsq_fed_other_channels():
    lsq = LearnedFakeQuantize(MinMaxObserver, qdtype=qlab.int8, symmetric=True, axis=0)
    lsq(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"per-channel .*3 channels but the tensor has 5 along "
                                         r"axis 0 \(shape \(5, 4\)\); they must match"):
        lsq(torch.randn(5, 4))


# -- 15. numpy scalars, and floats beyond float32 ----------------------------------------------
def test_numpy_integers_are_integers():
    assert low_bit_qconfig(np.int64(4), np.int32(8)) is not None
    q = qlab.qdtype(np.int64(4))
    assert q == qlab.int4 and type(q.bits) is int
    assert HistogramObserver(bins=np.int64(64), upsample_rate=np.int8(2)).bins == 64
    assert MSEObserver(num_candidates=np.int64(10)).num_candidates == 10
    assert MinMaxObserver(axis=np.int64(0)).axis == 0
    qp = qlab.QParams(np.float32(0.5), np.int64(3), qlab.uint8, np.int64(0), np.int64(255))
    assert (qp.qmin, qp.qmax) == (0, 255) and type(qp.qmax) is int
    x = torch.randn(3, 4)
    per_channel = qlab.qparams_from_range(x.amin(1), x.amax(1), qlab.int8, symmetric=True)
    assert torch.equal(qlab.quantize(x, per_channel, axis=np.int64(0)), qlab.quantize(x, per_channel))
    y = lsq_fake_quantize(x, torch.tensor(0.1), torch.tensor(0.0), np.int64(-8), np.int64(7))
    assert torch.equal(y, lsq_fake_quantize(x, torch.tensor(0.1), torch.tensor(0.0), -8, 7))


def test_numpy_floats_are_numbers():
    qp = qlab.qparams_from_range(np.float32(-1.5), np.float64(2.0), eps=np.float32(1e-6))
    ref = qlab.qparams_from_range(-1.5, 2.0, eps=1e-6)
    assert torch.equal(qp.scale, ref.scale) and torch.equal(qp.zero_point, ref.zero_point)
    assert sq._check_alpha(np.float32(0.5)) == 0.5


@pytest.mark.parametrize("bad", [True, np.bool_(True), 4.0, "4"])
def test_bools_and_other_things_are_still_not_bits(bad):
    with pytest.raises((TypeError, ValueError), match="bits"):
        qlab.qdtype(bad)
    with pytest.raises(ValueError, match="weight_bits must be an integer"):
        low_bit_qconfig(bad)


@pytest.mark.parametrize("name", ["min_val", "max_val"])
def test_python_float_beyond_float32_range(name):
    args = {"min_val": -1.0, "max_val": 1.0, name: 1e300 if name == "max_val" else -1e300}
    with pytest.raises(ValueError, match=rf"{name}=.*1e\+300 does not fit float32") as err:
        qlab.qparams_from_range(**args)
    assert "NaN" not in str(err.value)


@pytest.mark.parametrize("scale", [1e300, np.float64(1e300), torch.tensor(1e300, dtype=torch.float64)])
def test_scale_beyond_float32_range(scale):
    with pytest.raises(ValueError, match=r"QParams scale=1e\+300 does not fit float32") as err:
        qlab.QParams(scale, 0, qlab.uint8, 0, 255)
    assert "NaN" not in str(err.value)


# -- also: exports, quantize_dynamic with nothing to do, a length-0 LSTM sequence --------------
def test_public_names_are_exported_from_qlab():
    from qlab import fake_quant, qconfig, smoothquant
    from qlab import nn as qnn

    expected = {"low_bit_qconfig": qconfig.low_bit_qconfig,
                "LearnedFakeQuantize": fake_quant.LearnedFakeQuantize,
                "freeze_bn_stats": qnn.freeze_bn_stats,
                "disable_observer": fake_quant.disable_observer,
                "enable_observer": fake_quant.enable_observer,
                "smooth_quant": smoothquant.smooth_quant,
                "input_channel_absmax": smoothquant.input_channel_absmax,
                "smooth_scales": smoothquant.smooth_scales}
    for name, obj in expected.items():
        assert getattr(qlab, name) is obj and name in qlab.__all__
    assert qlab.smoothquant is smoothquant and "smoothquant" in qlab.__all__


def test_quantize_dynamic_with_nothing_to_quantize_warns():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.warns(UserWarning, match=r"found nothing to quantize: it looks for nn\.Linear, "
                                         r"nn\.LSTM.*the model holds Conv2d, ReLU"):
        out = qlab.quantize_dynamic(model)
    assert type(out[0]) is nn.Conv2d
    with pytest.warns(UserWarning, match=r"looks for nn\.LSTM .*holds Linear"):
        qlab.quantize_dynamic(nn.Linear(3, 3), {nn.LSTM})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qlab.quantize_dynamic(nn.Sequential(nn.Linear(3, 3)))


@pytest.mark.parametrize("batch_first", [False, True])
def test_dynamic_lstm_on_an_empty_sequence_is_a_clear_error(batch_first):
    """nn.LSTM refuses it too ("Expected sequence length to be larger than 0 in RNN")."""
    lstm = qlab.quantize_dynamic(nn.LSTM(4, 3, batch_first=batch_first))
    assert isinstance(lstm, DynamicQuantLSTM)
    x = torch.zeros((2, 0, 4) if batch_first else (0, 2, 4))
    with pytest.raises(ValueError, match=r"sequence of length 0.*at least one time step"):
        lstm(x)
