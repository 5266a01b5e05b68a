"""From a float model to a real int8 model, in the steps of torch.ao's eager mode.

1. fuse:      fold batch norm into conv/linear, mark conv+relu (qlab.fuse, or model.fuse_model()).
2. prepare:   an observer on the output of every QuantStub, layer and FloatFunctional
              (prepare_qat: swap layers for QAT twins that fake-quantize).
3. calibrate: run a few batches; the observers record the ranges (QAT: train instead).
4. convert:   swap every observed module for its int8 twin, built complete from what was observed.
5. run:       int8 in, integer products, int8 out (qlab.nn); to_torch() gives torch.ao's kernels.

quantize_dynamic skips 2-3: weights become int8 now, activations get their grid on every call.

Every step is the same walk over the model (`swap`) with its own table of what each kind of
module becomes, as torch.ao's quantization_mappings.py.
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Callable

import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.ao.quantization as tq
from torch import nn

from .fuse import ConvBn2d, ConvBnReLU2d, ConvReLU2d, LinearReLU
from .nn import (
    DeQuantize,
    DeQuantStub,
    DynamicQuantLinear,
    DynamicQuantLSTM,
    FloatFunctional,
    QATConv2d,
    QATConvBn2d,
    QATLinear,
    QFunctional,
    QuantConv2d,
    Quantize,
    QuantLinear,
    QuantStub,
)
from .nn.qat import check_qat_qconfig
from .observers import MinMaxObserver
from .qconfig import QConfig, check_bias_rule, default_qat_qconfig, default_qconfig
from .qparams import QParams
from .qtypes import int8


def swap(module: nn.Module, make: Callable[[str, nn.Module], nn.Module | None],
         name: str = "") -> nn.Module:
    """Walk the model: where make(name, module) returns a module, that takes the module's place
    (and is not looked inside); where it returns None, walk into the module's children.
    Returns the module or its replacement."""
    new = make(name, module)
    if new is not None:
        return new
    for child_name, child in list(module.named_children()):
        new = swap(child, make, f"{name}.{child_name}" if name else child_name)
        if new is not child:
            module.set_submodule(child_name, new)
    return module


# ---------------------------------------------------------------------------------------
# The tables: which float modules are observed, and what each becomes
# ---------------------------------------------------------------------------------------

# torch.ao's eager building blocks count as qlab's own (torchvision's quantizable models use them).
QUANT_STUBS = (QuantStub, tq.QuantStub)
DEQUANT_STUBS = (DeQuantStub, tq.DeQuantStub)
FLOAT_FUNCTIONALS = (FloatFunctional, nnq.FloatFunctional)
CONV_RELU = (ConvReLU2d, nni.ConvReLU2d)
LINEAR_RELU = (LinearReLU, nni.LinearReLU)
CONV_BN = (ConvBn2d, nni.ConvBn2d, ConvBnReLU2d, nni.ConvBnReLU2d)
#: conv/linear + batch norm kept apart for QAT: what fusing a model in train mode makes
QAT_FUSED = (*CONV_BN, nni.ConvBn1d, nni.ConvBn3d, nni.ConvBnReLU1d, nni.ConvBnReLU3d, nni.LinearBn1d)
#: modules whose output prepare observes, and convert turns into an int8 layer
OBSERVED = (*QUANT_STUBS, nn.Linear, nn.Conv2d, *CONV_RELU, *LINEAR_RELU)
#: run unchanged on int8 activations (they keep the qparams): see qlab.tensor
PASS_THROUGH = (*DEQUANT_STUBS, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
                nn.Dropout, nn.Identity)

#: prepare_qat: float layer -> its QAT twin
QAT_MODULES = {
    nn.Linear: lambda m, qc: QATLinear.from_float(m, qc),
    nn.Conv2d: lambda m, qc: QATConv2d.from_float(m, qc),
    **{t: lambda m, qc: QATLinear.from_float(m[0], qc, relu=True) for t in LINEAR_RELU},
    **{t: lambda m, qc: QATConv2d.from_float(m[0], qc, relu=True) for t in CONV_RELU},
    **{t: lambda m, qc: QATConvBn2d.from_float(m[0], m[1], qc, relu=len(m) == 3) for t in CONV_BN},
}

#: quantize_dynamic: float layer -> its dynamic int8 twin
DYNAMIC_MODULES = {nn.Linear: DynamicQuantLinear, nn.LSTM: DynamicQuantLSTM}

SUPPORTED = ("nn.Linear, nn.Conv2d, fused ConvReLU2d / LinearReLU (qlab.fuse or torch.ao.nn.intrinsic), "
             "QuantStub, DeQuantStub, FloatFunctional (add, add_relu, mul, cat); unchanged on int8: "
             "nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity; "
             "for QAT also ConvBn2d / ConvBnReLU2d (qlab.fuse qat=True, or torch.ao.nn.intrinsic)")


def _skipped(module: nn.Module) -> bool:
    """A module whose `qconfig` attribute is explicitly None stays float (as in torch.ao)."""
    return hasattr(module, "qconfig") and module.qconfig is None


def _is_prepared(module: nn.Module) -> bool:
    return isinstance(getattr(module, "activation_post_process", None), nn.Module) and not isinstance(
        module.activation_post_process, nn.Identity)


# ---------------------------------------------------------------------------------------
# prepare / prepare_qat
# ---------------------------------------------------------------------------------------


def _observe_output(module, inputs, output):
    return module.activation_post_process(output)


def _attach_observer(module: nn.Module, qconfig: QConfig) -> nn.Module:
    """module.activation_post_process = qconfig.activation(), called on module's output."""
    module.qconfig = qconfig
    module.activation_post_process = qconfig.activation()
    if not isinstance(module, FLOAT_FUNCTIONALS):  # a FloatFunctional calls its own
        module.register_forward_hook(_observe_output)
    return module


def _prepare_one(name: str, m: nn.Module, qconfig: QConfig, qat: bool) -> nn.Module | None:
    if _skipped(m) or isinstance(m, PASS_THROUGH):
        return m
    if isinstance(m, QUANT_STUBS + FLOAT_FUNCTIONALS):
        return _attach_observer(m, qconfig)
    if qat and type(m) in QAT_MODULES:
        return QAT_MODULES[type(m)](m, qconfig)
    if not qat and isinstance(m, OBSERVED):
        return _attach_observer(m, qconfig)
    if not qat and isinstance(m, QAT_FUSED):
        raise TypeError(
            f"module '{name or type(m).__name__}' ({type(m).__name__}) keeps conv and batch norm "
            f"apart for QAT: fusing (model.fuse_model() or fuse_modules) makes it when the model is "
            f"in train mode. For static quantization call model.eval() before model.fuse_model(), "
            f"so that batch norm is folded; for QAT use qlab.prepare_qat."
        )
    if next(m.children(), None) is None and (
            next(m.parameters(recurse=False), None) is not None
            or isinstance(m, nn.modules.batchnorm._BatchNorm)):
        raise TypeError(
            f"module '{name or type(m).__name__}' ({type(m).__name__}) cannot be quantized; "
            f"supported: {SUPPORTED}. "
            f"Fuse batch norm first (qlab.fuse.fuse_modules or model.fuse_model()), or set "
            f"its .qconfig = None to keep it in float."
        )
    return None  # a container: look inside


def _prepare(model: nn.Module, qconfig: QConfig, inplace: bool, qat: bool) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare takes an nn.Module, got {type(model).__name__}")
    if not isinstance(qconfig, QConfig):
        raise TypeError(f"qconfig must be a qlab.QConfig, got {type(qconfig).__name__}")
    if qat:
        check_qat_qconfig(qconfig)
    done = [n or type(model).__name__ for n, m in model.named_modules()
            if _is_prepared(m) or isinstance(m, (QATLinear, QATConv2d, QATConvBn2d, QuantLinear,
                                                 QuantConv2d, DynamicQuantLinear))]
    if done:
        raise ValueError(f"the model is already prepared or converted ({', '.join(done[:3])} "
                         "already have observers or are int8): prepare a fresh float model")
    if not inplace:
        model = copy.deepcopy(model)
    return swap(model, functools.partial(_prepare_one, qconfig=qconfig, qat=qat))


def prepare(model: nn.Module, qconfig: QConfig = default_qconfig, inplace: bool = False) -> nn.Module:
    """Attach observers: the output of every QuantStub, layer and FloatFunctional gets
    `qconfig.activation()` (as module.activation_post_process). Calibrate, then convert."""
    return _prepare(model, qconfig, inplace, qat=False)


def prepare_qat(model: nn.Module, qconfig: QConfig = default_qat_qconfig,
                inplace: bool = False) -> nn.Module:
    """Swap layers for QAT twins that fake-quantize weights and outputs; the model trains as
    usual (STE gradients), then convert() makes it int8. Returns the model in train mode.
    qconfig must make FakeQuantize modules (default_qat_qconfig, low_bit_qconfig(..., qat=True)):
    an observer-only qconfig is refused, as QAT would then train the float model."""
    return _prepare(model, qconfig, inplace, qat=True).train()


# ---------------------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------------------


def _weight_qparams(m: nn.Module, weight: torch.Tensor) -> QParams:
    """From a QAT layer's weight fake-quant (which sees the final weight first, as in torch.ao),
    else from a fresh qconfig.weight() observer."""
    obs = getattr(m, "weight_fake_quant", None)
    if obs is None:
        obs = m.qconfig.weight()
        obs(weight.detach())
    elif obs.observer_enabled or not obs.has_data():
        obs.activation_post_process(weight.detach())
    return obs.qparams()


def _int8_layer(m: nn.Module, bias_rule: str | None) -> nn.Module:
    """The int8 twin of an observed Linear / Conv2d: plain, fused with a ReLU, or QAT."""
    fused = isinstance(m, CONV_RELU + LINEAR_RELU)
    layer = m[0] if fused else m  # the float layer: geometry, weight, bias
    relu = fused or getattr(m, "relu", False)
    weight, bias = m.folded_weight_bias() if isinstance(m, QATConvBn2d) else (layer.weight, layer.bias)
    w_qp = _weight_qparams(m, weight)
    out_qp = m.activation_post_process.qparams()
    rule = bias_rule or m.qconfig.bias
    if isinstance(layer, nn.Linear):
        return QuantLinear.from_float(layer, w_qp, out_qp, relu, rule)
    return QuantConv2d.from_float(layer, w_qp, out_qp, relu, rule, weight_bias=(weight, bias))


def _qfunctional(m: nn.Module, bias_rule: str | None) -> QFunctional:
    """A FloatFunctional that never ran in calibration (a block without a skip) has no qparams."""
    obs = m.activation_post_process
    return QFunctional(obs.qparams() if obs.has_data() else None)


#: convert: observed float module -> its int8 twin, fn(module, bias_rule)
INT8_MODULES = {
    **{t: lambda m, rule: Quantize(m.activation_post_process.qparams()) for t in QUANT_STUBS},
    **{t: lambda m, rule: DeQuantize() for t in DEQUANT_STUBS},
    **{t: _qfunctional for t in FLOAT_FUNCTIONALS},
    **{t: _int8_layer for t in (nn.Linear, nn.Conv2d, *CONV_RELU, *LINEAR_RELU, QATLinear,
                                QATConv2d, QATConvBn2d)},
}


def _observed(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module convert will swap that has an observer."""
    return [(name or type(model).__name__, m) for name, m in model.named_modules()
            if type(m) in INT8_MODULES and _is_prepared(m)]


def convert(model: nn.Module, inplace: bool = False, bias_rule: str | None = None) -> nn.Module:
    """Swap every observed module for its int8 twin (QuantStub -> Quantize, Linear ->
    QuantLinear, Conv2d -> QuantConv2d, FloatFunctional -> QFunctional, DeQuantStub ->
    DeQuantize), built from the observed qparams. bias_rule ("float" or "int32") overrides
    each layer's qconfig.bias. Returns the int8 model in eval mode."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert takes an nn.Module, got {type(model).__name__}")
    if bias_rule is not None:
        check_bias_rule(bias_rule)
    observed = _observed(model)
    if not observed:
        raise ValueError("the model has no observers: call qlab.prepare(model) (or prepare_qat), "
                         "run calibration batches through it, then convert")
    never = [f"'{n}' ({type(m).__name__})" for n, m in observed
             if not isinstance(m, FLOAT_FUNCTIONALS) and not m.activation_post_process.has_data()]
    if never:
        raise ValueError(f"{len(never)} module(s) were never calibrated (their observers saw no "
                         f"data): {', '.join(never)}. Run calibration batches through the prepared "
                         "model before convert.")
    if not inplace:
        model = copy.deepcopy(model)

    def make(name, m):
        if _skipped(m):
            return m
        if type(m) in INT8_MODULES and (_is_prepared(m) or isinstance(m, DEQUANT_STUBS)):
            return INT8_MODULES[type(m)](m, bias_rule)
        return None

    return swap(model, make).eval()


# ---------------------------------------------------------------------------------------
# quantize_dynamic
# ---------------------------------------------------------------------------------------


def quantize_dynamic(model: nn.Module, qconfig_spec=None, per_channel: bool = False,
                     reduce_range: bool = True, inplace: bool = False) -> nn.Module:
    """Replace nn.Linear / nn.LSTM (the types in qconfig_spec, a type or a set; default both)
    by dynamic int8 modules: int8 symmetric weights (per-tensor by default, as torch.ao),
    activations quantized on every call from their own min and max (7-bit with reduce_range)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_dynamic takes an nn.Module, got {type(model).__name__}")
    if isinstance(qconfig_spec, type):
        qconfig_spec = {qconfig_spec}
    spec = set(DYNAMIC_MODULES) if qconfig_spec is None else set(qconfig_spec)
    allowed = ", ".join(f"nn.{t.__name__}" for t in DYNAMIC_MODULES)
    for t in spec:
        if t not in DYNAMIC_MODULES:
            raise TypeError(f"quantize_dynamic cannot quantize {getattr(t, '__name__', repr(t))}; "
                            f"supported: {allowed} (a type or a set of them)")
    if not inplace:
        model = copy.deepcopy(model)

    def weight_qparams(w):
        obs = MinMaxObserver(qdtype=int8, symmetric=True, axis=0 if per_channel else None)
        obs(w.detach())
        return obs.qparams()

    swapped = []

    def make(name, m):
        if _skipped(m):
            return m
        if type(m) not in spec:
            return None  # look inside
        swapped.append(name)
        if type(m) is nn.Linear:
            return DynamicQuantLinear.from_float(m, weight_qparams(m.weight), reduce_range)
        return DynamicQuantLSTM.from_float(m, weight_qparams, reduce_range)

    model = swap(model, make)
    if not swapped:
        _warn_nothing_quantized(model, spec)
    return model


def _warn_nothing_quantized(model: nn.Module, spec: set) -> None:
    """quantize_dynamic changed nothing: say what it looked for and what the model holds."""
    wanted = ", ".join(f"nn.{t.__name__}" for t in DYNAMIC_MODULES if t in spec)
    held = list(dict.fromkeys(type(m).__name__ for m in model.modules()
                              if next(m.children(), None) is None))
    warnings.warn(f"quantize_dynamic found nothing to quantize: it looks for {wanted} (qconfig_spec), "
                  f"and skips modules whose .qconfig is None; the model holds {', '.join(held[:8])}"
                  f"{', ...' if len(held) > 8 else ''}. It is returned unchanged.", UserWarning,
                  stacklevel=3)


# ---------------------------------------------------------------------------------------
# to_torch: the same int8 model on torch.ao's kernels
# ---------------------------------------------------------------------------------------


def _torch_weight(m) -> torch.Tensor:
    qp = m.weight_qparams
    if qp.per_channel:
        return torch._make_per_channel_quantized_tensor(m.weight, qp.scale.double(), qp.zero_point, 0)
    return torch._make_per_tensor_quantized_tensor(m.weight, float(qp.scale), int(qp.zero_point))


def _torch_output(m, t: nn.Module) -> nn.Module:
    """Give torch module t m's output qparams.

    torch computes on the full quint8 grid 0..255. A narrower unsigned grid (4-bit activations:
    0..15) keeps its scale and zero point, as torch.ao's convert does with quant_max=15, but
    torch's kernels do not clamp to it: codes past qmax (values beyond the calibrated range)
    survive there, while qlab's own int8 modules clamp them, as fake quantization did."""
    qp = m.output_qparams
    if qp.qdtype.signed or qp.qdtype.bits > 8:
        raise ValueError(f"torch's int8 kernels compute on quint8 activations (unsigned, at most 8 "
                         f"bits); this {type(m).__name__} outputs {qp.qdtype!r}")
    t.scale, t.zero_point = float(qp.scale), int(qp.zero_point)
    return t


def _torch_linear(m: QuantLinear) -> nn.Module:
    t = (nniq.LinearReLU if m.relu else nnq.Linear)(m.in_features, m.out_features,
                                                               m.bias is not None)
    t.set_weight_bias(_torch_weight(m), m.bias)  # the float bias: torch.ao's own model
    return _torch_output(m, t)


def _torch_conv(m: QuantConv2d) -> nn.Module:
    t = (nniq.ConvReLU2d if m.relu else nnq.Conv2d)(
        m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
        bias=m.bias is not None)
    t.set_weight_bias(_torch_weight(m), m.bias)
    return _torch_output(m, t)


def _torch_dynamic_linear(m: DynamicQuantLinear) -> nn.Module:
    _torch_reduce_range(m)
    t = nnqd.Linear(m.in_features, m.out_features, bias_=m.bias is not None)
    t.set_weight_bias(_torch_weight(m), m.bias)
    return t


def _torch_reduce_range(m) -> None:
    if not m.reduce_range:
        raise ValueError(f"torch.ao's dynamic {type(m).__name__.removeprefix('DynamicQuant')} always "
                         f"uses reduce_range=True; this {type(m).__name__} has reduce_range=False")


def _torch_lstm(m: DynamicQuantLSTM) -> nn.Module:
    from torch.ao.nn.quantized.dynamic.modules.rnn import PackedParameter

    _torch_reduce_range(m)
    t = nnqd.LSTM(m.input_size, m.hidden_size, m.num_layers, batch_first=m.batch_first)
    cells = []
    for lin in m.layers:
        ih, hh = lin["ih"], lin["hh"]
        packed = [torch.ops.quantized.linear_prepack(_torch_weight(x), x.bias) for x in (ih, hh)]
        cells.append(PackedParameter(torch.ops.quantized.make_quantized_cell_params_dynamic(
            *packed, ih.bias, hh.bias, True)))
    t._all_weight_values = nn.ModuleList(cells)
    return t


#: to_torch: qlab int8 module -> the torch.ao quantized module with the same numbers
TORCH_MODULES = {
    Quantize: lambda m: nnq.Quantize(float(m.output_qparams.scale), int(m.output_qparams.zero_point),
                                     torch.quint8),
    DeQuantize: lambda m: nnq.DeQuantize(),
    QFunctional: lambda m: _torch_output(m, nnq.QFunctional()) if m.output_qparams else nnq.QFunctional(),
    QuantLinear: _torch_linear,
    QuantConv2d: _torch_conv,
    DynamicQuantLinear: _torch_dynamic_linear,
    DynamicQuantLSTM: _torch_lstm,
}


def to_torch(model: nn.Module) -> nn.Module:
    """The same int8 model on torch.ao.nn.quantized modules (fbgemm / onednn kernels): identical
    int8 weights, qparams and float biases, so it is the model torch.ao's own convert makes.
    Inputs and outputs stay float."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_torch takes an nn.Module, got {type(model).__name__}")
    found = [m for m in model.modules() if type(m) in TORCH_MODULES]
    if not found:
        raise ValueError("the model has no qlab int8 modules: make it int8 first with "
                         "qlab.convert (after prepare and calibration) or qlab.quantize_dynamic")
    exported = swap(copy.deepcopy(model),
                    lambda name, m: TORCH_MODULES[type(m)](m) if type(m) in TORCH_MODULES else None)
    if _lacks_quant_stub(model, found):
        exported.register_forward_pre_hook(_refuse_float_input)
    return exported


def _lacks_quant_stub(model: nn.Module, found: list[nn.Module]) -> bool:
    """A model (not a lone int8 layer, which is fed quantized tensors) with static int8 layers
    and no Quantize in front of them."""
    static = any(isinstance(m, (QuantLinear, QuantConv2d, QFunctional)) for m in found)
    return (static and type(model) not in TORCH_MODULES
            and not any(isinstance(m, Quantize) for m in found))


def _refuse_float_input(model: nn.Module, args) -> None:
    """to_torch's model without a Quantize: its int8 layers take quantized tensors only. A float
    input would fail deep in torch ("Could not run 'quantized::conv2d.new' ... 'CPU' backend")."""
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and not x.is_quantized:
        raise TypeError(
            f"this {type(model).__name__} has no QuantStub, so its int8 layers would get the "
            f"{x.dtype} input as it is: add a QuantStub at the input and a DeQuantStub at the "
            f"output of the float model, then prepare, calibrate and convert it again (or pass "
            f"a quantized tensor, torch.quantize_per_tensor(...))"
        )
