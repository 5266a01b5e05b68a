"""qlab.pipeline: prepare / calibrate / convert against torch.ao, to_torch, save/reload, bad input."""

import copy
import io

import pytest
import torch
import torch.ao.quantization as tq
from reference import TORCH_QCONFIG, engine
from torch import nn

import qlab
from qlab import QConfig, QTensor, default_qat_qconfig, default_qconfig, minmax_qconfig
from qlab.nn import DynamicQuantLinear, DynamicQuantLSTM, QuantConv2d, QuantLinear
from qlab.observers import MinMaxObserver


class SmallCNN(nn.Module):
    """Conv-BN-ReLU, strided and depthwise convs, a residual add, pooling, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU()
        self.dw, self.bn3 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16)
        self.skip = nn.quantized.FloatFunctional()
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc, self.fc_relu = nn.Linear(16, 32), nn.ReLU()
        self.head = nn.Linear(32, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.skip.add(x, self.bn3(self.dw(x)))
        x = self.avg(self.pool(x))
        x = torch.flatten(x, 1)
        x = self.head(self.fc_relu(self.fc(x)))
        return self.dequant(x)

    FUSE = [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["dw", "bn3"], ["fc", "fc_relu"]]


def _trained_cnn():
    torch.manual_seed(0)
    m = SmallCNN()
    m.train()
    for _ in range(3):  # give the batch norms non-trivial statistics
        m(torch.randn(16, 3, 16, 16) * 2 + 0.5)
    return tq.fuse_modules(m.eval(), SmallCNN.FUSE)


@pytest.fixture(scope="module")
def calibrated():
    """qlab's prepared model and torch.ao's converted one, calibrated on the same batches."""
    fused = _trained_cnn()
    calib = [torch.randn(32, 3, 16, 16) * 2 + 0.5 for _ in range(3)]
    ours = qlab.prepare(fused, minmax_qconfig)
    theirs = fused
    theirs.qconfig = TORCH_QCONFIG
    theirs = tq.prepare(theirs)
    for x in calib:
        ours(x)
        theirs(x)
    return ours, theirs


def torch_convert(prepared, engine_name):
    """torch.ao's convert on `engine_name`: it packs weights for that engine's kernels."""
    with engine(engine_name):
        return tq.convert(copy.deepcopy(prepared))


@pytest.fixture(scope="module")
def models(calibrated):
    prepared, torch_prepared = calibrated
    return qlab.convert(prepared), torch_convert(torch_prepared, "fbgemm")


def test_converted_model_holds_int8_and_computes_int8(models):
    ours, _ = models
    assert isinstance(ours.conv1, QuantConv2d) and ours.conv1.relu
    assert isinstance(ours.head, QuantLinear) and isinstance(ours.fc, QuantLinear) and ours.fc.relu
    assert ours.dw.groups == 16
    for m in (ours.conv1, ours.conv2, ours.dw, ours.fc, ours.head):
        assert m.weight.dtype == torch.int8 and m.weight_qparams.per_channel
        assert m.bias_rule == "float" and m.bias.dtype == torch.float32  # the model's own bias
    x_qp = qlab.qparams_from_range(0.0, 2.0, qlab.uint8)
    y = ours.head(ours.fc(QTensor(torch.randint(0, 256, (2, 16), dtype=torch.uint8), x_qp)))
    assert y.int_repr.dtype == torch.uint8 and y.qparams is ours.head.output_qparams


def _lsb(a, b, step):
    """How many output steps apart two dequantized outputs are, per value."""
    return ((a - b).abs() / step).round()


@pytest.mark.parametrize("engine_name", ["fbgemm", "x86"])
def test_whole_model_parity_with_torch_ao(calibrated, models, engine_name):
    """qlab's own int8 path and to_torch against torch.ao's prepare/convert of the same model.

    fbgemm: bit-identical (same requantization, float bias added as fbgemm adds it).
    x86 on a CPU with VNNI runs convs on oneDNN, which rounds its float epilogue in another
    order: qlab's own path is then at most 1 output step off, on a few logits. to_torch gives
    torch.ao's very model, so it is identical on either engine.
    """
    ours, _ = models
    x = torch.randn(300, 3, 16, 16) * 2 + 0.5
    step = ours.head.scale
    with engine(engine_name):
        theirs = torch_convert(calibrated[1], engine_name)
        a, b, exported = ours(x), theirs(x), qlab.to_torch(ours)(x)
    assert torch.equal(exported, b)
    if engine_name == "fbgemm":
        assert torch.equal(a, b)
    else:
        assert _lsb(a, b, step).max() <= 1
        assert (_lsb(a, b, step) > 0).float().mean() < 0.02


def test_int32_bias_rule_costs_a_few_steps(calibrated, models):
    """The integer-only rule rounds each bias to s_x·s_w: measured here, at most 2 output steps
    on the logits (the rounding moves an output by one step, and steps add up through layers)."""
    (prepared, _), (ours, theirs) = calibrated, models
    int32 = qlab.convert(prepared, bias_rule="int32")
    assert int32.conv1.bias_rule == "int32"
    x = torch.randn(300, 3, 16, 16) * 2 + 0.5
    with engine("fbgemm"):
        lsb = _lsb(int32(x), theirs(x), ours.head.scale)
    assert 0 < lsb.max() <= 3
    assert (int32(x).argmax(1) == theirs(x).argmax(1)).float().mean() >= 0.98


def test_saved_and_reloaded_gives_identical_outputs(models):
    """The state_dict carries everything: int8 weights, float biases and every QParams."""
    ours, _ = models
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    other = qlab.convert(_prepared_and_calibrated(seed=5))  # same structure, other numbers
    x = torch.randn(50, 3, 16, 16)
    assert not torch.equal(ours(x), other(x))
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(ours(x), other(x))
    assert other.conv1.output_qparams.scale == ours.conv1.output_qparams.scale


def test_model_size_drops_about_4x():
    big = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256))
    small = qlab.quantize_dynamic(big)
    ratio = qlab.metrics.model_size_bytes(big) / qlab.metrics.model_size_bytes(small)
    assert ratio > 3.5


def _prepared_and_calibrated(seed=0, qconfig=minmax_qconfig):
    m = qlab.prepare(_trained_cnn(), qconfig)
    torch.manual_seed(seed)
    m(torch.randn(16, 3, 16, 16) * 2 + 0.5)
    return m


def test_default_qconfig_histogram_runs():
    m = qlab.convert(_prepared_and_calibrated(qconfig=default_qconfig))
    assert m(torch.randn(4, 3, 16, 16)).shape == (4, 10)


def test_qlab_fuse_and_stubs_pipeline():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = qlab.nn.QuantStub(), qlab.nn.DeQuantStub()
            self.conv, self.bn, self.relu = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()
            self.cat = qlab.nn.FloatFunctional()
            self.fc = nn.Linear(8 * 36, 5)

        def forward(self, x):
            x = self.quant(x)
            y = self.relu(self.bn(self.conv(x)))
            y = self.cat.cat([y, y], dim=1)
            return self.dequant(self.fc(y.flatten(1)))

    net = qlab.fuse.fuse_modules(Net().eval(), [["conv", "bn", "relu"]])
    m = qlab.prepare(net, minmax_qconfig)
    x = torch.randn(8, 1, 8, 8)
    m(x)
    q = qlab.convert(m)
    assert isinstance(q.cat, qlab.nn.QFunctional)
    err = (q(x) - net(x)).abs().max().item()
    assert err < 0.1 * net(x).abs().max().item()


def test_qat_pipeline_trains_and_converts():
    torch.manual_seed(0)
    m = SmallCNN()
    m = tq.fuse_modules_qat(m.train(), SmallCNN.FUSE)
    q = qlab.prepare_qat(m, default_qat_qconfig)
    assert isinstance(q.conv1, qlab.nn.QATConvBn2d) and q.conv1.relu
    opt = torch.optim.SGD(q.parameters(), lr=0.01)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(q(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    q.conv1.freeze_bn()
    q.eval()
    fq_out = q(x)
    int8 = qlab.convert(q)
    assert isinstance(int8.conv1, QuantConv2d)
    out = int8(x)
    # the int8 model computes what QAT simulated, up to a few output steps
    assert (out - fq_out).abs().max().item() <= 4 * float(int8.head.scale)


def test_quantize_dynamic_swaps_linear_and_lstm():
    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 16)
            self.lstm = nn.LSTM(16, 24, num_layers=2, batch_first=True)
            self.out = nn.Linear(24, 30)

        def forward(self, t):
            return self.out(self.lstm(self.emb(t))[0])

    m = CharLSTM()
    q = qlab.quantize_dynamic(m, {nn.Linear, nn.LSTM})
    assert isinstance(q.lstm, DynamicQuantLSTM) and isinstance(q.out, DynamicQuantLinear)
    t = torch.randint(0, 30, (3, 11))
    assert (q(t) - m(t)).abs().max().item() < 0.05
    exported = qlab.to_torch(q)
    assert torch.equal(exported(t), q(t))
    only_lin = qlab.quantize_dynamic(m, {nn.Linear})
    assert isinstance(only_lin.lstm, nn.LSTM)


# -- bad input --------------------------------------------------------------------------


def test_uncalibrated_model_names_every_uncalibrated_module():
    m = qlab.prepare(_trained_cnn(), minmax_qconfig)
    with pytest.raises(ValueError, match=r"6 module\(s\) were never calibrated.*'quant' \(QuantStub\)"
                                         r".*'conv1' \(ConvReLU2d\).*'head' \(Linear\)"):
        qlab.convert(m)


def test_a_layer_the_calibration_never_reached_is_named():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.a, self.b = tq.QuantStub(), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.a(self.quant(x))  # b never runs

    m = qlab.prepare(TwoHeads(), minmax_qconfig)
    m(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"1 module\(s\) were never calibrated.*'b' \(Linear\)"):
        qlab.convert(m)


def test_convert_and_to_torch_on_a_float_model_say_what_to_do_first():
    with pytest.raises(ValueError, match=r"no observers: call qlab.prepare"):
        qlab.convert(_trained_cnn())
    with pytest.raises(ValueError, match=r"no qlab int8 modules.*qlab.convert"):
        qlab.to_torch(_trained_cnn())
    with pytest.raises(TypeError, match="convert takes an nn.Module"):
        qlab.convert(lambda x: x)


def test_prepare_twice_or_on_a_non_module_is_refused():
    once = qlab.prepare(_trained_cnn(), minmax_qconfig)
    with pytest.raises(ValueError, match="already prepared"):
        qlab.prepare(once, minmax_qconfig)
    with pytest.raises(ValueError, match="already prepared"):
        qlab.prepare_qat(qlab.prepare_qat(tq.fuse_modules_qat(SmallCNN().train(), SmallCNN.FUSE)))
    with pytest.raises(TypeError, match="prepare takes an nn.Module, got function"):
        qlab.prepare(lambda x: x)


def test_one_calibration_pass_is_observed_once():
    """A prepared model observes each batch once (a second prepare would double-count)."""
    qc = QConfig(activation=lambda: qlab.observers.MovingAverageMinMaxObserver(
        averaging_constant=0.5, qdtype=qlab.uint8), weight=minmax_qconfig.weight)
    m = qlab.prepare(nn.Sequential(tq.QuantStub(), nn.Linear(2, 2)), qc)
    m(torch.tensor([[0.0, 1.0]]))
    m(torch.tensor([[0.0, 3.0]]))
    assert m[0].activation_post_process.calibrated_range()[1].item() == 2.0  # 1 + 0.5 * (3 - 1)


def test_a_rejected_calibration_batch_does_not_poison_convert():
    m = qlab.prepare(_trained_cnn(), minmax_qconfig)
    with pytest.raises(ValueError):
        m(torch.full((2, 3, 16, 16), float("nan")))
    with pytest.raises(RuntimeError):
        m(torch.randn(2, 5, 16, 16))  # wrong channels: fails in the float conv
    m(torch.randn(8, 3, 16, 16))
    q = qlab.convert(m)
    assert q(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_quantize_dynamic_takes_a_single_type():
    m = qlab.quantize_dynamic(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Linear)
    assert isinstance(m[0], DynamicQuantLinear)
    assert isinstance(qlab.quantize_dynamic(nn.Linear(4, 4)), DynamicQuantLinear)


def test_unsupported_module_lists_supported():
    model = nn.Sequential(tq.QuantStub(), nn.Conv1d(2, 2, 3), tq.DeQuantStub())
    with pytest.raises(TypeError, match=r"'1' \(Conv1d\).*supported: nn.Linear, nn.Conv2d"):
        qlab.prepare(model, minmax_qconfig)
    with pytest.raises(TypeError, match="supported: nn.Linear, nn.LSTM"):
        qlab.quantize_dynamic(model, {nn.Conv1d})


def test_unfused_batchnorm_is_refused():
    model = nn.Sequential(tq.QuantStub(), nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2))
    with pytest.raises(TypeError, match="Fuse batch norm first"):
        qlab.prepare(model, minmax_qconfig)


def test_qconfig_with_wrong_dtypes_is_refused():
    with pytest.raises(ValueError, match="weight must observe a signed symmetric grid"):
        QConfig(activation=MinMaxObserver, weight=MinMaxObserver)  # uint8 weights
    with pytest.raises(ValueError, match="activation must observe an unsigned per-tensor grid"):
        QConfig(activation=lambda: MinMaxObserver(qdtype=qlab.int8),
                weight=lambda: MinMaxObserver(qdtype=qlab.int8, symmetric=True))
    with pytest.raises(ValueError, match="activation must observe an unsigned per-tensor grid"):
        QConfig(activation=lambda: MinMaxObserver(qdtype=qlab.qdtype(12, False)),
                weight=lambda: MinMaxObserver(qdtype=qlab.int8, symmetric=True))
    with pytest.raises(TypeError, match=r"a factory.*functools.partial.*not MinMaxObserver\(qdtype=uint8"):
        QConfig(activation=MinMaxObserver(), weight=minmax_qconfig.weight)
    with pytest.raises(ValueError, match=r"bias rule must be one of \('float', 'int32'\), got 'fp'"):
        QConfig(activation=MinMaxObserver, weight=minmax_qconfig.weight, bias="fp")
    with pytest.raises(ValueError, match="backend must be one of"):
        qlab.get_default_qconfig("tpu")
    assert qlab.get_default_qconfig("x86") is qlab.default_qconfig
    with pytest.raises(TypeError, match="must be a qlab.QConfig"):
        qlab.prepare(nn.Linear(2, 2), TORCH_QCONFIG)


def test_float_input_to_int8_layer_is_a_clear_error(models):
    ours, _ = models
    with pytest.raises(TypeError, match="takes int8 activations"):
        ours.head(torch.randn(2, 32))
    with pytest.raises(TypeError, match="no int8 version"):
        torch.sigmoid(QTensor(torch.zeros(2, dtype=torch.uint8), ours.head.output_qparams))
    qp = ours.conv1.output_qparams
    with pytest.raises(ValueError, match=r"expects int8 input with 16 features.*got shape \(2, 31\)"):
        ours.fc(QTensor(torch.zeros(2, 31, dtype=torch.uint8), qp))
    with pytest.raises(ValueError, match=r"with 16 features in the last dimension, got shape \(\)"):
        ours.fc(QTensor(torch.zeros((), dtype=torch.uint8), qp))
    with pytest.raises(ValueError, match=r"QuantConv2d expects input of shape \(N, 3, H, W\), "
                                         r"got \(2, 4, 8, 8\)"):
        ours.conv1(QTensor(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), qp))
    with pytest.raises(ValueError, match=r"got \(3, 8, 8\)"):
        ours.conv1(QTensor(torch.zeros(3, 8, 8, dtype=torch.uint8), qp))
