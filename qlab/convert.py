"""From a float model to a real int8 model, in the steps of torch.ao's eager mode.

1. fuse:      fold batch norm into conv/linear, mark conv+relu (qlab.fuse, or model.fuse_model()).
2. prepare:   attach an observer to the output of each layer and QuantStub (or prepare_qat: fake-quant).
3. calibrate: run a few batches; the observers record the ranges (QAT: train instead).
4. convert:   swap every layer for its int8 twin: int8 weights, int32 bias, fixed output qparams.
5. run/export: int8 in, integer products, int8 out (qlab.nn); to_torch() gives torch.ao's kernels.

quantize_dynamic skips 2-3: weights become int8 now, activations get their grid on every call.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .fake_quant import FakeQuantize
from .fuse import ConvBn2d, ConvBnReLU2d, ConvReLU2d, LinearReLU
from .observers import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver, Observer
from .qtypes import int8, uint8

# torch.ao's eager-mode building blocks are accepted as inputs (torchvision's quantizable
# models use them). They are optional: qlab never needs them for its own math.
try:  # pragma: no cover - present in the pinned torch
    import torch.ao.nn.intrinsic as _nni
    import torch.ao.nn.quantized as _nnq
    from torch.ao.quantization import DeQuantStub as _TorchDeQuantStub
    from torch.ao.quantization import QuantStub as _TorchQuantStub

    _TORCH_FUSED_CONV_RELU = (_nni.ConvReLU2d,)
    _TORCH_FUSED_LINEAR_RELU = (_nni.LinearReLU,)
    _TORCH_CONV_BN = (_nni.ConvBn2d,)
    _TORCH_CONV_BN_RELU = (_nni.ConvBnReLU2d,)
    _TORCH_QUANT_STUB, _TORCH_DEQUANT_STUB = (_TorchQuantStub,), (_TorchDeQuantStub,)
    _TORCH_FLOAT_FUNCTIONAL = (_nnq.FloatFunctional,)
except ImportError:  # pragma: no cover
    _TORCH_FUSED_CONV_RELU = _TORCH_FUSED_LINEAR_RELU = _TORCH_CONV_BN = _TORCH_CONV_BN_RELU = ()
    _TORCH_QUANT_STUB = _TORCH_DEQUANT_STUB = _TORCH_FLOAT_FUNCTIONAL = ()

from .nn import qat as _qat
from .nn import static as _static
from .nn.dynamic import DynamicQuantLinear, DynamicQuantLSTM

# ---------------------------------------------------------------------------------------
# QConfig
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QConfig:
    """How to observe a layer: factories for the activation and the weight observer (or
    FakeQuantize for QAT). Activations must be uint8 per-tensor, weights int8 symmetric
    (the grids the int8 modules and torch's x86 kernels compute on)."""

    activation: Callable[[], nn.Module]
    weight: Callable[[], nn.Module]

    def __post_init__(self):
        for role in ("activation", "weight"):
            factory = getattr(self, role)
            if not callable(factory):
                raise TypeError(f"QConfig.{role} must be a factory (a class or functools.partial) "
                                f"that makes an observer, got {factory!r}")
            obs = factory()
            inner = obs.activation_post_process if isinstance(obs, FakeQuantize) else obs
            if not isinstance(inner, Observer):
                raise TypeError(f"QConfig.{role} must make a qlab observer or FakeQuantize, "
                                f"got {type(obs).__name__}")
            if role == "activation" and (inner.qdtype != uint8 or inner.axis is not None):
                raise ValueError(
                    f"QConfig.activation must observe uint8 per-tensor (qdtype=qlab.uint8, "
                    f"axis=None), got qdtype={inner.qdtype!r}, axis={inner.axis}"
                )
            if role == "weight" and (inner.qdtype != int8 or not inner.symmetric
                                     or inner.axis not in (None, 0)):
                raise ValueError(
                    f"QConfig.weight must observe int8 symmetric weights, per-tensor or along "
                    f"axis 0 (qdtype=qlab.int8, symmetric=True), got qdtype={inner.qdtype!r}, "
                    f"symmetric={inner.symmetric}, axis={inner.axis}"
                )


_act = functools.partial
#: torch.ao's x86 default: histogram activations on 0..127 (reduce_range), per-channel int8 weights.
default_qconfig = QConfig(
    activation=_act(HistogramObserver, qdtype=uint8, reduce_range=True),
    weight=_act(MinMaxObserver, qdtype=int8, symmetric=True, axis=0),
)
#: Min-max activations: fast and simple (the tests' choice, with torch.ao's MinMaxObserver).
minmax_qconfig = QConfig(
    activation=_act(MinMaxObserver, qdtype=uint8, reduce_range=True),
    weight=_act(MinMaxObserver, qdtype=int8, symmetric=True, axis=0),
)
#: torch.ao's x86 QAT default: moving-average min-max fake-quant, per-channel int8 weights.
default_qat_qconfig = QConfig(
    activation=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, qdtype=uint8,
                                      reduce_range=True),
    weight=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, qdtype=int8,
                                  symmetric=True, axis=0),
)


# ---------------------------------------------------------------------------------------
# What each kind of module becomes
# ---------------------------------------------------------------------------------------

_CONV_RELU = (ConvReLU2d, *_TORCH_FUSED_CONV_RELU)
_LINEAR_RELU = (LinearReLU, *_TORCH_FUSED_LINEAR_RELU)
_CONV_BN = (ConvBn2d, *_TORCH_CONV_BN)
_CONV_BN_RELU = (ConvBnReLU2d, *_TORCH_CONV_BN_RELU)
_QUANT_STUB = (_static.QuantStub, *_TORCH_QUANT_STUB)
_DEQUANT_STUB = (_static.DeQuantStub, *_TORCH_DEQUANT_STUB)
_FLOAT_FUNCTIONAL = (_static.FloatFunctional, *_TORCH_FLOAT_FUNCTIONAL)
_LAYERS = (nn.Linear, nn.Conv2d, *_CONV_RELU, *_LINEAR_RELU)
_QAT_LAYERS = (_qat.QATLinear, _qat.QATConv2d, _qat.QATConvBn2d)
# run unchanged on int8 activations (they keep the qparams): see qlab.nn.qtensor
_PASS_THROUGH = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)

SUPPORTED_STATIC = (
    "nn.Linear, nn.Conv2d, fused ConvReLU2d / LinearReLU (qlab.fuse or torch.ao.nn.intrinsic), "
    "QuantStub, DeQuantStub, FloatFunctional (add, add_relu, mul, cat); unchanged on int8: "
    "nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity"
)
SUPPORTED_QAT_EXTRA = "ConvBn2d / ConvBnReLU2d (qlab.fuse qat=True, or torch.ao.nn.intrinsic)"
SUPPORTED_DYNAMIC = {nn.Linear: DynamicQuantLinear, nn.LSTM: DynamicQuantLSTM}


def _skipped(module: nn.Module) -> bool:
    """A module whose `qconfig` attribute is explicitly None stays float (as in torch.ao)."""
    return hasattr(module, "qconfig") and module.qconfig is None


def _observe_output(module, inputs, output):
    return module.activation_post_process(output)


def _record_example(module, args):
    """Keep the first calibration input: convert replays it to fix every layer's input qparams."""
    if getattr(module, "_qlab_example", None) is None:
        module._qlab_example = tuple(a.detach()[:1].clone() if isinstance(a, torch.Tensor)
                                     else a for a in args)


def _attach(module: nn.Module, qconfig: QConfig) -> None:
    module.qconfig = qconfig
    module.activation_post_process = qconfig.activation()
    module._qlab_hook = module.register_forward_hook(_observe_output)


def _set(parent: nn.Module, name: str, module: nn.Module) -> None:
    setattr(parent, name, module)


def _unsupported(name: str, module: nn.Module, supported: str) -> TypeError:
    return TypeError(
        f"module '{name}' ({type(module).__name__}) cannot be quantized; supported: {supported}. "
        f"Fuse batch norm first (qlab.fuse.fuse_modules or model.fuse_model()), or set "
        f"its .qconfig = None to keep it in float."
    )


def _prepare_children(parent: nn.Module, qconfig: QConfig, qat: bool, prefix: str) -> None:
    for child_name, child in list(parent.named_children()):
        name = f"{prefix}{child_name}"
        if _skipped(child):
            continue
        if isinstance(child, _QUANT_STUB):
            _attach(child, qconfig)
        elif isinstance(child, _FLOAT_FUNCTIONAL):
            child.qconfig = qconfig
            child.activation_post_process = qconfig.activation()
        elif isinstance(child, _DEQUANT_STUB + _PASS_THROUGH):
            continue
        elif isinstance(child, _QAT_LAYERS):
            continue
        elif qat and isinstance(child, _CONV_BN + _CONV_BN_RELU):
            new = _qat.QATConvBn2d.from_float(child[0], child[1], qconfig,
                                              relu=isinstance(child, _CONV_BN_RELU))
            _set(parent, child_name, new)
        elif isinstance(child, _LAYERS):
            if qat:
                relu = isinstance(child, _CONV_RELU + _LINEAR_RELU)
                layer = child[0] if relu else child
                cls = _qat.QATConv2d if isinstance(layer, nn.Conv2d) else _qat.QATLinear
                _set(parent, child_name, cls.from_float(layer, qconfig, relu=relu))
            else:
                _attach(child, qconfig)
        elif len(list(child.children())) == 0:
            if any(True for _ in child.parameters(recurse=False)) or isinstance(
                    child, nn.modules.batchnorm._BatchNorm):
                extra = f"; for QAT also {SUPPORTED_QAT_EXTRA}" if qat else ""
                raise _unsupported(name, child, SUPPORTED_STATIC + extra)
        else:
            _prepare_children(child, qconfig, qat, f"{name}.")


def prepare(model: nn.Module, qconfig: QConfig = default_qconfig, inplace: bool = False) -> nn.Module:
    """Attach observers: the output of every QuantStub, layer and FloatFunctional gets
    `qconfig.activation()` (as module.activation_post_process). Calibrate, then convert."""
    return _prepare(model, qconfig, inplace, qat=False)


def prepare_qat(model: nn.Module, qconfig: QConfig = default_qat_qconfig,
                inplace: bool = False) -> nn.Module:
    """Swap layers for QAT twins that fake-quantize weights and outputs; the model trains as
    usual (STE gradients), then convert() makes it int8. Put the model in train mode."""
    return _prepare(model, qconfig, inplace, qat=True).train()


def _prepare(model: nn.Module, qconfig: QConfig, inplace: bool, qat: bool) -> nn.Module:
    if not isinstance(qconfig, QConfig):
        raise TypeError(f"qconfig must be a qlab.QConfig, got {type(qconfig).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    _prepare_children(model, qconfig, qat=qat, prefix="")
    model._qlab_example = None  # the first calibration input, replayed by convert()
    model._qlab_example_hook = model.register_forward_pre_hook(_record_example)
    return model


# ---------------------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------------------


def _output_qparams(name: str, module: nn.Module):
    obs = getattr(module, "activation_post_process", None)
    if obs is None or not hasattr(obs, "has_data"):
        raise ValueError(f"module '{name}' ({type(module).__name__}) has no observer; "
                         "call qlab.prepare (or prepare_qat) before convert")
    if not obs.has_data():
        raise ValueError(
            f"module '{name}' ({type(module).__name__}) was never calibrated: its observer has "
            "seen no data. Run calibration batches through the prepared model before convert."
        )
    return obs.qparams()


def _weight_qparams(module: nn.Module, weight: torch.Tensor):
    """Weight qparams: from the QAT module's weight fake-quant, else a fresh qconfig.weight()."""
    wfq = getattr(module, "weight_fake_quant", None)
    if wfq is not None:
        if wfq.observer_enabled or not wfq.has_data():
            wfq.activation_post_process(weight.detach())
        return wfq.qparams()
    obs = module.qconfig.weight()
    obs(weight.detach())
    return obs.qparams()


def _remove_hook(module: nn.Module) -> None:
    hook = getattr(module, "_qlab_hook", None)
    if hook is not None:
        hook.remove()
        del module._qlab_hook


def _convert_children(parent: nn.Module, prefix: str) -> None:
    for child_name, child in list(parent.named_children()):
        name = f"{prefix}{child_name}"
        new = None
        if isinstance(child, _QUANT_STUB):
            if hasattr(child, "activation_post_process"):
                qp = _output_qparams(name, child)
                new = _static.Quantize(float(qp.scale), int(qp.zero_point))
        elif isinstance(child, _DEQUANT_STUB):
            new = _static.DeQuantize()
        elif isinstance(child, _FLOAT_FUNCTIONAL):
            if hasattr(child, "qconfig") and child.qconfig is not None:
                if child.activation_post_process.has_data():
                    qp = _output_qparams(name, child)
                    new = _static.QFunctional(float(qp.scale), int(qp.zero_point))
                else:  # never called in forward (e.g. MobileNetV2 blocks without a skip)
                    new = _static.QFunctional()
        elif isinstance(child, _qat.QATConvBn2d):
            out_qp = _output_qparams(name, child)
            w, b = child.folded_weight_bias()
            conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                             child.stride, child.padding, child.dilation, child.groups, True)
            conv.weight, conv.bias = nn.Parameter(w.detach()), nn.Parameter(b.detach())
            wqp = _weight_qparams(child, conv.weight)
            new = _static.QuantConv2d.from_float(conv, wqp, out_qp, relu=child.relu)
        elif isinstance(child, (_qat.QATLinear, _qat.QATConv2d)):
            out_qp = _output_qparams(name, child)
            cls = _static.QuantLinear if isinstance(child, nn.Linear) else _static.QuantConv2d
            new = cls.from_float(child, _weight_qparams(child, child.weight), out_qp, child.relu)
        elif isinstance(child, _LAYERS) and hasattr(child, "activation_post_process"):
            out_qp = _output_qparams(name, child)
            relu = isinstance(child, _CONV_RELU + _LINEAR_RELU)
            layer = child[0] if relu else child
            layer.qconfig = child.qconfig
            cls = _static.QuantLinear if isinstance(layer, nn.Linear) else _static.QuantConv2d
            new = cls.from_float(layer, _weight_qparams(layer, layer.weight), out_qp, relu)
        elif not isinstance(child, _LAYERS):
            _convert_children(child, f"{name}.")
        if new is not None:
            _remove_hook(child)
            setattr(parent, child_name, new)


def convert(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Swap every observed module for its int8 twin (QuantStub -> Quantize, Linear ->
    QuantLinear, Conv2d -> QuantConv2d, FloatFunctional -> QFunctional, DeQuantStub ->
    DeQuantize), using the observed qparams. Returns the int8 model in eval mode."""
    if not inplace:
        model = copy.deepcopy(model)
    example = getattr(model, "_qlab_example", None)
    hook = getattr(model, "_qlab_example_hook", None)
    if hook is not None:
        hook.remove()
    for attr in ("_qlab_example", "_qlab_example_hook"):
        if hasattr(model, attr):
            delattr(model, attr)
    observed = [(n, m) for n, m in model.named_modules()
                if hasattr(getattr(m, "activation_post_process", None), "has_data")]
    if observed and not any(m.activation_post_process.has_data() for _, m in observed):
        name, m = observed[0]
        _output_qparams(name or type(model).__name__, m)  # raises: never calibrated
    _convert_children(model, "")
    model.eval()
    if example is not None:  # fix every layer's input qparams (and int32 bias) now
        with torch.no_grad():
            model(*example)
    return model


# ---------------------------------------------------------------------------------------
# quantize_dynamic
# ---------------------------------------------------------------------------------------


def quantize_dynamic(model: nn.Module, qconfig_spec=None, per_channel: bool = False,
                     reduce_range: bool = True, inplace: bool = False) -> nn.Module:
    """Replace nn.Linear / nn.LSTM (those in qconfig_spec, default both) by dynamic int8
    modules: int8 symmetric weights (per-tensor by default, as torch.ao), activations
    quantized on every call from their own min and max (7-bit with reduce_range, as torch.ao)."""
    spec = set(SUPPORTED_DYNAMIC) if qconfig_spec is None else set(qconfig_spec)
    allowed = ", ".join(f"nn.{t.__name__}" for t in SUPPORTED_DYNAMIC)
    for t in spec:
        if t not in SUPPORTED_DYNAMIC:
            name = getattr(t, "__name__", repr(t))
            raise TypeError(f"quantize_dynamic cannot quantize {name}; supported: {allowed}")
    if not inplace:
        model = copy.deepcopy(model)

    def weight_qparams(w):
        obs = MinMaxObserver(qdtype=int8, symmetric=True, axis=0 if per_channel else None)
        obs(w.detach())
        return obs.qparams()

    def swap(module):
        if type(module) is nn.Linear and nn.Linear in spec:
            return DynamicQuantLinear.from_float(module, weight_qparams(module.weight), reduce_range)
        if type(module) is nn.LSTM and nn.LSTM in spec:
            return DynamicQuantLSTM.from_float(module, weight_qparams, reduce_range)
        return None

    new = swap(model)
    if new is not None:
        return new
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if _skipped(child):
                continue
            new = swap(child)
            if new is not None:
                setattr(parent, child_name, new)
    return model


# ---------------------------------------------------------------------------------------
# to_torch: the same int8 model on torch.ao's kernels
# ---------------------------------------------------------------------------------------


def _torch_qweight(m) -> torch.Tensor:
    if m.weight_scale.dim() == 1:
        return torch._make_per_channel_quantized_tensor(m.weight, m.weight_scale.double(),
                                                        m.weight_zero_point, 0)
    return torch._make_per_tensor_quantized_tensor(m.weight, float(m.weight_scale),
                                                   int(m.weight_zero_point))


def _torch_float_bias(m) -> torch.Tensor | None:
    """torch's kernels take a float bias: bias_q * float32(s_x * s_w) is exactly qlab's."""
    if m.bias is None:
        return None
    if m.bias.dtype != torch.int32:
        raise ValueError(f"{type(m).__name__} has not seen an input yet (its input qparams and "
                         "int32 bias are not fixed); run the qlab model once before to_torch")
    return m.bias.to(torch.float32) * (m.input_scale * m.weight_scale)


def _to_torch_module(m: nn.Module) -> nn.Module | None:
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd

    if isinstance(m, _static.Quantize):
        return nnq.Quantize(float(m.scale), int(m.zero_point), torch.quint8)
    if isinstance(m, _static.DeQuantize):
        return nnq.DeQuantize()
    if isinstance(m, _static.QFunctional):
        t = nnq.QFunctional()
        t.scale, t.zero_point = float(m.scale), int(m.zero_point)
        return t
    if isinstance(m, _static.QuantLinear):
        t = (nniq.LinearReLU if m.relu else nnq.Linear)(m.in_features, m.out_features,
                                                          m.bias is not None)
        t.set_weight_bias(_torch_qweight(m), _torch_float_bias(m))
        t.scale, t.zero_point = float(m.scale), int(m.zero_point)
        return t
    if isinstance(m, _static.QuantConv2d):
        t = (nniq.ConvReLU2d if m.relu else nnq.Conv2d)(
            m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
            m.groups, bias=m.bias is not None)
        t.set_weight_bias(_torch_qweight(m), _torch_float_bias(m))
        t.scale, t.zero_point = float(m.scale), int(m.zero_point)
        return t
    if isinstance(m, DynamicQuantLinear):
        if not m.reduce_range:
            raise ValueError("torch.ao's dynamic Linear always uses reduce_range=True; "
                             "this DynamicQuantLinear has reduce_range=False")
        t = nnqd.Linear(m.in_features, m.out_features, bias_=m.bias is not None)
        t.set_weight_bias(_torch_qweight(m), m.bias)
        return t
    if isinstance(m, DynamicQuantLSTM):
        return _to_torch_lstm(m)
    return None


def _to_torch_lstm(m: DynamicQuantLSTM) -> nn.Module:
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch.ao.nn.quantized.dynamic.modules.rnn import PackedParameter

    if not m.reduce_range:
        raise ValueError("torch.ao's dynamic LSTM always uses reduce_range=True")
    t = nnqd.LSTM(m.input_size, m.hidden_size, m.num_layers, batch_first=m.batch_first)
    params = []
    for lin in m.layers:
        ih, hh = lin["ih"], lin["hh"]
        packed_ih = torch.ops.quantized.linear_prepack(_torch_qweight(ih), ih.bias)
        packed_hh = torch.ops.quantized.linear_prepack(_torch_qweight(hh), hh.bias)
        cell = torch.ops.quantized.make_quantized_cell_params_dynamic(
            packed_ih, packed_hh, ih.bias, hh.bias, True)
        params.append(PackedParameter(cell))
    t._all_weight_values = nn.ModuleList(params)
    return t


def to_torch(model: nn.Module) -> nn.Module:
    """The same int8 model on torch.ao.nn.quantized modules (fbgemm / onednn kernels): identical
    int8 weights, qparams and (dequantized int32) biases. Inputs/outputs stay float."""
    model = copy.deepcopy(model)
    new = _to_torch_module(model)
    if new is not None:
        return new
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            new = _to_torch_module(child)
            if new is not None:
                setattr(parent, child_name, new)
    return model
