"""Lesson 04: static post-training quantization, looked at one int8 layer at a time.

    int8_layers(model)                        name -> QuantConv2d / QuantLinear of a converted model
    int8_logits(model, x)                     its outputs on torch.ao's fbgemm kernels (= qlab's float rule)
    step_layer(model, name, image)            one layer's integer arithmetic, step by step, vs torch.ao
    walk_image(model, image)                  one row per int8 layer: grids, accumulator, steps off torch.ao
    bias_rule_cost(prepared, x, y)            what the integer-only "int32" bias costs over a whole model
    layer_sensitivity_sqnr(model, calib, x)   quantize one layer at a time: SQNR against fp32 (dB)
    propose_fp32_layers(sensitivity, count)   the least tolerant layers: candidates to keep in float
    quantize_except(model, calib, keep)       an int8 model with the `keep` layers left in float
    keep_fp32_scan(model, calib, x, y, ...)   accuracy and SQNR as more sensitive layers stay float
    calibrated_accuracy(model, calib, x, y)   fuse, prepare, calibrate, convert, evaluate: the baseline
    calibrate_shifted(model, calib, x, y, shift, amount)   the same after calibrating on shifted images
    SHIFTS, shift_images(images, shift, amount)            the shifts the panel offers

An int8 layer computes, for input codes q_x on (s_x, z_x) and int8 weights q_w on s_w:

    acc   = sum_k (q_x - z_x) q_w                                       int32, exact
    q_out = clamp(round((acc + b / (s_x s_w)) * M) + z_out, lo, qmax),  M = s_x s_w / s_out

with the bias added as a float ("float" rule: fbgemm/x86, torch.ao's numbers) or rounded once
to an int32, round(b / (s_x s_w)) ("int32" rule: integer-only hardware). torch.ao's codes are
always measured on the fbgemm engine, where qlab's float rule equals them bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.ao.nn.quantized as tnnq
from torch import nn

import qlab
from qlab.fake_quant import FakeQuantize
from qlab.integer import (
    float_multiplier,
    int_conv2d,
    int_linear,
    quantize_multiplier,
    requantize,
    requantize_fixed_point,
    with_float_bias,
)
from qlab.lab.kit.check import check_choice, check_int
from qlab.lab.kit.torch_ao import PARITY_ENGINE, engine
from qlab.lab.kit.train import top1
from qlab.nn import DeQuantize, DeQuantStub, QuantConv2d, QuantLinear, QuantStub
from qlab.pipeline import CONV_RELU, LINEAR_RELU
from qlab.qconfig import QConfig
from qlab.qtypes import along_axis

INT8_LAYERS = (QuantConv2d, QuantLinear)




# ---------------------------------------------------------------------------------------
# Helpers: the engine, the inputs, the hooks
# ---------------------------------------------------------------------------------------


def int8_layers(model: nn.Module) -> dict[str, nn.Module]:
    """name -> int8 layer (QuantConv2d, QuantLinear) of a model made by qlab.convert, in call order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module converted by qlab.convert, got {type(model).__name__}")
    layers = {name: m for name, m in model.named_modules() if isinstance(m, INT8_LAYERS)}
    if not layers:
        raise ValueError(_why_no_int8_layers(model))
    return layers


def _is_torch_ao_quantized(m: nn.Module) -> bool:
    """A torch.ao quantized module (torch.ao.convert's, or qlab.to_torch's); torchvision's float
    models hold torch.ao's FloatFunctional, which is float."""
    path = type(m).__module__
    return (path.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
            and not isinstance(m, (tnnq.FloatFunctional, tnnq.FXFloatFunctional)))


def _observed(m: nn.Module) -> bool:
    """Has prepare (or prepare_qat) given m an observer? (a float FloatFunctional holds an Identity)"""
    observer = getattr(m, "activation_post_process", None)
    observing = isinstance(observer, nn.Module) and not isinstance(observer, nn.Identity)
    return observing or isinstance(m, FakeQuantize)


def _why_no_int8_layers(model: nn.Module) -> str:
    """int8_layers' message: what the model is instead (torch.ao's, prepared, float) and what to do."""
    what = f"the model ({type(model).__name__}) has no int8 layers (QuantConv2d, QuantLinear)"
    if any(_is_torch_ao_quantized(m) for m in model.modules()):
        return (f"{what}. It holds torch.ao's quantized modules: pass qlab's converted model, not "
                "qlab.to_torch(model).")
    if any(_observed(m) for m in model.modules()):
        return (f"{what}: it is prepared (it has observers) but not converted: convert it first: "
                "`qlab.convert(p)`")
    return (f"{what}: it is a float model: convert it first: model.fuse_model(); p = qlab.prepare(model, "
            "qlab.minmax_qconfig); run calibration batches through p; `qlab.convert(p)`")


def _check_image(image) -> torch.Tensor:
    """One float image, (C, H, W) or (1, C, H, W) -> (1, C, H, W)."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        got = image.dtype if isinstance(image, torch.Tensor) else type(image).__name__
        raise TypeError(f"image must be a float tensor of shape (C, H, W) or (1, C, H, W), got {got}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be one image, of shape (C, H, W) or (1, C, H, W), "
                         f"got shape {tuple(image.shape)}")
    return image


def _check_xy(x, y) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4 or len(x) == 0:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a non-empty float batch of images (N, C, H, W), got {got}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must hold one label per image of x, shape ({len(x)},), got {got}")


@torch.no_grad()
def _capture(model: nn.Module, layers: dict[str, nn.Module], x: torch.Tensor) -> dict:
    """Run model(x) with forward hooks: name -> (the layer's input, its output)."""
    seen = {}

    def hook(name):
        def record(module, inputs, output):
            seen[name] = (inputs[0], output)
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _accumulator(layer: nn.Module, x: qlab.QTensor) -> tuple[torch.Tensor, int]:
    """(acc = sum_k (q_x - z_x) q_w in int32, its channel dim): the layer's integer product."""
    if isinstance(layer, QuantConv2d):
        return int_conv2d(x.int_repr, x.zero_point, layer.weight, layer.stride, layer.padding,
                          layer.dilation, layer.groups), 1
    return int_linear(x.int_repr, x.zero_point, layer.weight, layer.weight_qparams.zero_point), -1


def torch_layer_codes(layer: nn.Module, x: qlab.QTensor) -> torch.Tensor:
    """torch.ao's output codes (int64) of `layer` (made torch.ao's by qlab.to_torch) on the same
    int8 input x, on the fbgemm engine."""
    with engine(PARITY_ENGINE):
        t = qlab.to_torch(layer)
        qx = torch._make_per_tensor_quantized_tensor(x.int_repr, x.scale, x.zero_point)
        with torch.no_grad():
            return t(qx).int_repr().to(torch.int64)


def _fixed_point(acc: torch.Tensor, m0: list[int], shift: list[int], zp: int, lo: int, qmax: int,
                 channel_dim: int) -> torch.Tensor:
    """requantize_fixed_point for every output channel with its own (M0, shift)."""
    if len(m0) == 1:
        return requantize_fixed_point(acc, m0[0], shift[0], zp, lo, qmax)
    per_channel = acc.movedim(channel_dim, 0)
    rows = [requantize_fixed_point(per_channel[c], m0[c], shift[c], zp, lo, qmax) for c in range(len(m0))]
    return torch.stack(rows).movedim(0, channel_dim)


def _with_bias(layer: nn.Module, acc: torch.Tensor, input_qp, channel_dim: int) -> tuple:
    """The bias under both rules, and the accumulator with each added:
    (b / (s_x s_w), round(b / (s_x s_w)), float32(acc) + b / (s_x s_w), acc + round(b / (s_x s_w)))."""
    if layer.bias is None:
        return None, None, acc.to(torch.float32), acc
    acc_scale = layer.accumulator_scale(input_qp)  # float32(s_x s_w)
    b_int32 = layer.int32_bias(input_qp)
    return (layer.bias.float() / acc_scale, b_int32, with_float_bias(acc, layer.bias, acc_scale, channel_dim),
            acc + along_axis(b_int32, acc.dim(), channel_dim))


def _kind(layer: nn.Module) -> str:
    """A short description: 'conv 3x3', 'depthwise 3x3', 'linear', with '+ ReLU' when fused."""
    if isinstance(layer, QuantLinear):
        kind = "linear"
    else:
        kh, kw = layer.kernel_size
        kind = f"{'depthwise' if layer.groups == layer.in_channels > 1 else 'conv'} {kh}x{kw}"
        if 1 < layer.groups < layer.in_channels:
            kind = f"grouped ({layer.groups}) {kh}x{kw}"
    return kind + (" + ReLU" if layer.relu else "")


def _steps(ours: torch.Tensor, theirs: torch.Tensor) -> dict:
    """How far our codes are from torch.ao's: the differences, the share that differ, the max."""
    diff = ours.to(torch.int64) - theirs.to(torch.int64)
    return {"diff": diff, "differ": float((diff != 0).float().mean()), "max": int(diff.abs().max())}


# ---------------------------------------------------------------------------------------
# The integer stepper and the whole-image walk
# ---------------------------------------------------------------------------------------


def step_layer(model: nn.Module, layer_name: str, image: torch.Tensor) -> dict:
    """Every step of one int8 layer's arithmetic on one image, and torch.ao's codes beside it.

        acc       = sum_k (q_x - z_x) q_w                        int32 (the layer's integer product)
        b_float   = b / (s_x s_w)         b_int32 = round(b / (s_x s_w))   (the two bias rules)
        M         = float32(s_x s_w) / s_out = M0 * 2**-31 * 2**-shift      (per output channel)
        out_float = clamp(round((acc + b_float) * M) + z_out, lo, qmax)     fbgemm / torch.ao
        out_int32 = clamp(round((acc + b_int32) * M) + z_out, lo, qmax)     integer-only bias
        out_fixed = clamp(round((acc + b_int32) * M0 / 2**(31 + shift)) + z_out, lo, qmax)
                                                                            integers only (TFLite)

    lo is z_out when a ReLU is fused (0.0 is the zero point), else qmin = 0. The layer's input is
    captured with a forward hook on the converted model; torch.ao's codes are those of the same
    layer (qlab.to_torch) on the same int8 input, on the fbgemm engine.

    Returns a dict (tensors without the batch dim, codes as int64):
      layer, type, kind, relu, bias_rule (the model's own), input_codes, input_scale,
      input_zero_point, weight_codes, weight_scale (1-D: one per channel, or one), accumulator,
      acc_min, acc_max,
      bias (float, or None), bias_float, bias_int32, multiplier (M), m0, shift (lists, one per
      channel), output_scale, output_zero_point, out_float, out_int32, out_fixed_point,
      out_model (what the model itself computed), out_torch, and steps: rule -> {"diff" (codes
      minus torch.ao's), "differ" (share of codes that differ), "max" (largest difference)}
      for the rules "float", "int32", "fixed_point" and "model".
    """
    layers = int8_layers(model)
    if not isinstance(layer_name, str) or layer_name not in layers:
        raise ValueError(f"layer_name {layer_name!r} is not an int8 layer of this model; "
                         f"its int8 layers are: {', '.join(layers)}")
    image = _check_image(image)
    layer = layers[layer_name]
    seen = _capture(model, {layer_name: layer}, image)
    if layer_name not in seen:
        raise ValueError(f"layer {layer_name!r} was not called when the model ran on the image")
    x, out = seen[layer_name]
    in_qp, w_qp, out_qp = x.qparams, layer.weight_qparams, layer.output_qparams
    acc, cdim = _accumulator(layer, x)
    b_float, b_int32, acc_float, acc_int32 = _with_bias(layer, acc, in_qp, cdim)
    mult = float_multiplier(in_qp.scale, w_qp.scale, out_qp.scale)
    m0, shift = map(list, zip(*(quantize_multiplier(float(m)) for m in mult.flatten()), strict=True))
    zp = int(out_qp.zero_point)
    lo = zp if layer.relu else out_qp.qmin
    codes = {
        "float": requantize(acc_float, mult, zp, lo, out_qp.qmax, channel_dim=cdim),
        "int32": requantize(acc_int32, mult, zp, lo, out_qp.qmax, channel_dim=cdim),
        "fixed_point": _fixed_point(acc_int32, m0, shift, zp, lo, out_qp.qmax, cdim),
        "model": out.int_repr,
    }
    codes = {k: v.to(torch.int64)[0] for k, v in codes.items()}
    theirs = torch_layer_codes(layer, x)[0]
    return {
        "layer": layer_name, "type": type(layer).__name__, "kind": _kind(layer), "relu": layer.relu,
        "bias_rule": layer.bias_rule,
        "input_codes": x.int_repr[0], "input_scale": x.scale, "input_zero_point": x.zero_point,
        "weight_codes": layer.weight, "weight_scale": w_qp.scale.reshape(-1),
        "accumulator": acc[0], "acc_min": int(acc.min()), "acc_max": int(acc.max()),
        "bias": layer.bias, "bias_float": b_float, "bias_int32": b_int32,
        "multiplier": mult, "m0": m0, "shift": shift,
        "output_scale": float(out_qp.scale), "output_zero_point": zp,
        "out_float": codes["float"], "out_int32": codes["int32"],
        "out_fixed_point": codes["fixed_point"], "out_model": codes["model"], "out_torch": theirs,
        "steps": {rule: _steps(c, theirs) for rule, c in codes.items()},
    }


def walk_image(model: nn.Module, image: torch.Tensor) -> list[dict]:
    """One row per int8 layer, in call order, for one image through the converted model.

    Each row: layer, type, kind, rule (the layer's bias rule), input_scale, input_zero_point,
    output_scale, output_zero_point, acc_min, acc_max (the int32 accumulator sum_k (q_x - z_x) q_w),
    differ (share of the layer's output codes that differ from torch.ao's, fbgemm, on the same
    int8 input) and max_steps (the largest difference, in output steps).
    """
    layers = int8_layers(model)
    image = _check_image(image)
    seen = _capture(model, layers, image)
    rows = []
    for name, layer in layers.items():
        if name not in seen:
            continue  # a layer this model does not call
        x, out = seen[name]
        acc, _ = _accumulator(layer, x)
        steps = _steps(out.int_repr, torch_layer_codes(layer, x))
        rows.append({
            "layer": name, "type": type(layer).__name__, "kind": _kind(layer), "rule": layer.bias_rule,
            "input_scale": x.scale, "input_zero_point": x.zero_point,
            "output_scale": layer.scale, "output_zero_point": layer.zero_point,
            "acc_min": int(acc.min()), "acc_max": int(acc.max()),
            "differ": steps["differ"], "max_steps": steps["max"],
        })
    return rows


# ---------------------------------------------------------------------------------------
# Evaluating an int8 model quickly: torch.ao's kernels (fbgemm) = qlab's float-bias path
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def int8_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A converted model's float outputs on torch.ao's fbgemm kernels (qlab.to_torch), which equal
    qlab's own path under the float-bias rule bit for bit, and are much faster.

    Only the float rule exists in torch.ao: an "int32"-rule model is exported with its float bias."""
    with engine(PARITY_ENGINE):
        return qlab.to_torch(model)(x)


def _output_step(model: nn.Module, x: torch.Tensor) -> float:
    """The scale of the int8 tensor the model dequantizes at its output (one output step)."""
    scales = set()

    def record(module, inputs, output):
        if isinstance(inputs[0], qlab.QTensor):
            scales.add(inputs[0].scale)

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, DeQuantize)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if len(scales) != 1:
        raise ValueError(f"the model must dequantize one int8 output (one DeQuantize on a QTensor); "
                         f"found {len(scales)} output scales")
    return scales.pop()


@torch.no_grad()
def bias_rule_cost(prepared_model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """What the integer-only bias costs: convert a calibrated model with each rule and compare logits.

        float rule: logits of torch.ao's model (qlab.to_torch on fbgemm; qlab's own path equals it)
        int32 rule: logits of qlab's own integer path with b_q = round(b / (s_x s_w))
        steps     = |int32 - float| / s_out        (s_out: the step of the int8 logits)

    Returns {"steps" (int64, one per logit), "histogram" ({steps: count}), "max_steps",
    "differ" (share of logits that moved), "accuracy_float", "accuracy_int32",
    "same_predictions" (share of images with the same top-1 class), "step" (s_out)}.
    """
    _check_xy(x, y)
    float_rule = qlab.convert(prepared_model, bias_rule="float")
    int32_rule = qlab.convert(prepared_model, bias_rule="int32")
    a, b = int32_rule(x), int8_logits(float_rule, x)
    step = _output_step(int32_rule, x)
    steps = ((a - b).abs() / step).round().to(torch.int64).flatten()
    values, counts = torch.unique(steps, return_counts=True)
    return {
        "steps": steps, "histogram": dict(zip(values.tolist(), counts.tolist(), strict=True)),
        "max_steps": int(steps.max()), "differ": float((steps > 0).float().mean()),
        "accuracy_float": top1(b, y), "accuracy_int32": top1(a, y),
        "same_predictions": float((a.argmax(1) == b.argmax(1)).float().mean()), "step": step,
    }


# ---------------------------------------------------------------------------------------
# Per-layer sensitivity: quantize one layer at a time; and what to keep in float
# ---------------------------------------------------------------------------------------


def _fused_copy(float_model: nn.Module) -> nn.Module:
    """A fused eval-mode copy of the float model (conv+bn(+relu) folded by its fuse_model())."""
    if not isinstance(float_model, nn.Module):
        raise TypeError(f"float_model must be an nn.Module, got {type(float_model).__name__}")
    model = copy.deepcopy(float_model).eval()
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        if not hasattr(model, "fuse_model"):
            raise ValueError("float_model has batch norms and no fuse_model(): fuse it first "
                             "(qlab.fuse.fuse_modules)")
        model.fuse_model()
    return model


def _check_calib(calib) -> torch.Tensor:
    if not isinstance(calib, torch.Tensor) or not calib.is_floating_point() or calib.dim() != 4:
        got = tuple(calib.shape) if isinstance(calib, torch.Tensor) else type(calib).__name__
        raise ValueError(f"calib must be a float batch of calibration images (N, C, H, W), got {got}")
    if len(calib) == 0:
        raise ValueError("the calibration set is empty: pass at least one image (the lesson uses "
                         "64 to 256 training images)")
    return calib


def quantizable_layers(float_model: nn.Module) -> list[str]:
    """Names of the layers convert makes int8 (Conv2d, Linear, fused ConvReLU2d / LinearReLU), in
    definition order. Fusing keeps a conv's name, so they are the converted model's layer names."""
    if not isinstance(float_model, nn.Module):
        raise TypeError(f"float_model must be an nn.Module, got {type(float_model).__name__}")
    layer_types = (nn.Conv2d, nn.Linear, *CONV_RELU, *LINEAR_RELU)
    names, inside = [], None
    for name, m in float_model.named_modules():
        if inside is not None and name.startswith(inside):
            continue  # the conv inside a fused ConvReLU2d
        if isinstance(m, layer_types):
            names.append(name)
            inside = name + "."
    return names


def _wrap(model: nn.Module, name: str, make) -> nn.Module:
    """Replace the submodule `name` by make(it)."""
    model.set_submodule(name, make(model.get_submodule(name)))
    return model


@torch.no_grad()
def _calibrate(prepared: nn.Module, calib: torch.Tensor, batch_size: int = 64) -> nn.Module:
    for batch in calib.split(batch_size):
        prepared(batch)
    return prepared


def quantize_only(float_model: nn.Module, layer_name: str, calib: torch.Tensor,
                  qconfig: QConfig = qlab.minmax_qconfig) -> nn.Module:
    """The model with only `layer_name` int8: QuantStub -> layer -> DeQuantStub around it (its
    input, weight and output quantized, calibrated on calib); every other module has
    .qconfig = None, so prepare and convert leave it float."""
    model = _fused_copy(float_model)
    calib = _check_calib(calib)
    names = quantizable_layers(model)
    if layer_name not in names:
        raise ValueError(f"layer_name {layer_name!r} is not a quantizable layer; they are: "
                         f"{', '.join(names)}")
    _wrap(model, layer_name, lambda m: nn.Sequential(QuantStub(), m, DeQuantStub()))
    path = layer_name.split(".")
    ancestors = {".".join(path[:i]) for i in range(len(path) + 1)}
    for name, m in model.named_modules():
        if name not in ancestors and not name.startswith(layer_name + "."):
            m.qconfig = None
    prepared = _calibrate(qlab.prepare(model, qconfig, inplace=True), calib)
    return qlab.convert(prepared, inplace=True)


@torch.no_grad()
def _run_watching(model: nn.Module, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(model(x), the output of its submodule `name` in that run)."""
    seen = {}

    def record(module, inputs, output):
        seen["y"] = output  # returns None, so the output is left as it is

    handle = model.get_submodule(name).register_forward_hook(record)
    try:
        out = model(x)
    finally:
        handle.remove()
    return out, seen["y"]


def _feeds_output(model: nn.Module, name: str, probe: torch.Tensor) -> bool:
    """Is the output of layer `name` the model's own output (the logits, through a DeQuantStub)?"""
    out, y = _run_watching(model, name, probe)
    return y is out


def quantize_except(float_model: nn.Module, calib: torch.Tensor, keep: Sequence[str] = (),
                    qconfig: QConfig = qlab.minmax_qconfig) -> nn.Module:
    """The whole model int8 except the layers in `keep`, which stay float between a DeQuantStub
    and a QuantStub (.qconfig = None on the layer itself), as in torch.ao's eager mode. A kept
    layer whose output is the model's output gets no QuantStub: its logits stay float."""
    model = _fused_copy(float_model)
    calib = _check_calib(calib)
    names = quantizable_layers(model)
    if isinstance(keep, str) or any(k not in names for k in keep):
        raise ValueError(f"keep must be a list of quantizable layer names, got {keep!r}; "
                         f"they are: {', '.join(names)}")
    last = {name for name in keep if _feeds_output(model, name, calib[:1])}
    for name in keep:
        model.get_submodule(name).qconfig = None
        after = () if name in last else (QuantStub(),)
        _wrap(model, name, lambda m, after=after: nn.Sequential(DeQuantStub(), m, *after))
    prepared = _calibrate(qlab.prepare(model, qconfig, inplace=True), calib)
    return qlab.convert(prepared, inplace=True)


def layer_sensitivity_sqnr(float_model: nn.Module, calib: torch.Tensor, x: torch.Tensor,
                           qconfig: QConfig = qlab.minmax_qconfig, at: str = "logits",
                           layers: Sequence[str] | None = None) -> dict[str, float]:
    """Quantize ONE layer at a time (all others float) and measure the damage, in dB:

        SQNR = 10 log10(sum y_fp32^2 / sum (y_fp32 - y_one_int8)^2)

    at="logits": y is the model's output; at="layer": y is that layer's own output. The layer's
    input, weight and output are quantized (quantize_only); the model runs on torch.ao's
    fbgemm kernels. Low SQNR = a sensitive layer. layers: the names to scan (default: every
    quantizable layer). Returns name -> dB, in the model's order.
    """
    if at not in ("logits", "layer"):
        raise ValueError(f"at must be 'logits' or 'layer', got {at!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) == 0:
        raise ValueError("x must be a non-empty float batch of images (N, C, H, W)")
    fused = _fused_copy(float_model)
    calib = _check_calib(calib)
    names = quantizable_layers(fused)
    if layers is not None and (isinstance(layers, str) or any(n not in names for n in layers)):
        raise ValueError(f"layers must be a list of quantizable layer names, got {layers!r}; "
                         f"they are: {', '.join(names)}")
    with torch.no_grad():
        reference = fused(x)
    out = {}
    for name in names if layers is None else [n for n in names if n in layers]:
        with engine(PARITY_ENGINE):
            mixed = qlab.to_torch(quantize_only(fused, name, calib, qconfig))
            if at == "logits":
                ref, got = reference, mixed(x)
            else:
                ref, got = _run_watching(fused, name, x)[1], _run_watching(mixed, name, x)[1]
            out[name] = qlab.metrics.sqnr(ref, got)
    return out


def propose_fp32_layers(sensitivity: dict[str, float], count: int = 3,
                        below_db: float | None = None) -> list[str]:
    """The `count` layers with the lowest SQNR, most sensitive first: candidates to keep in fp32.
    With below_db, only layers whose SQNR is below it (none when every layer tolerates int8)."""
    if not isinstance(sensitivity, dict) or not sensitivity:
        raise ValueError("sensitivity must be the non-empty dict layer_sensitivity_sqnr returns")
    check_int("count", count, 0, len(sensitivity), what=f"an integer in [0, {len(sensitivity)}]")
    ranked = sorted(sensitivity, key=sensitivity.get)[:count]
    return ranked if below_db is None else [n for n in ranked if sensitivity[n] < below_db]


def keep_fp32_scan(float_model: nn.Module, calib: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   sensitivity: dict[str, float], counts: Sequence[int] = (0, 1, 2, 3),
                   qconfig: QConfig = qlab.minmax_qconfig) -> list[dict]:
    """Keep the k most sensitive layers in float, for each k in counts, and measure.

    One row per k: {"count", "kept" (names), "sqnr" (logits vs fp32, dB), "accuracy"}; and
    the fp32 accuracy in every row as "fp32_accuracy"."""
    _check_xy(x, y)
    fused = _fused_copy(float_model)
    with torch.no_grad():
        reference = fused(x)
    rows = []
    for k in counts:
        kept = propose_fp32_layers(sensitivity, k)
        logits = int8_logits(quantize_except(fused, calib, kept, qconfig), x)
        rows.append({"count": k, "kept": kept, "sqnr": qlab.metrics.sqnr(reference, logits),
                     "accuracy": top1(logits, y), "fp32_accuracy": top1(reference, y)})
    return rows


# ---------------------------------------------------------------------------------------
# Where static breaks: calibrating on data unlike the test data
# ---------------------------------------------------------------------------------------

#: shift -> (lowest, highest) amount, and what the amount means. The images are normalized
#: over the training set (mean 0, std 1), so amounts are in training-set standard deviations.
SHIFTS = {
    "brightness": (-3.0, 3.0),  # x + amount: every pixel brighter (or darker)
    "contrast": (0.25, 4.0),    # mean + amount * (x - mean), per image: 1 leaves it as it is
    "noise": (0.0, 2.0),        # x + amount * N(0, 1), seeded
    "one_class": (0, 9),        # only the images of digit `amount` (needs calibration labels)
}


NO_SHIFT = {"brightness": 0.0, "contrast": 1.0, "noise": 0.0}


def _check_shift(shift: str, amount) -> None:
    check_choice("shift", shift, SHIFTS, what=f"one of {tuple(SHIFTS)}")
    lo, hi = SHIFTS[shift]
    if shift == "one_class":
        check_int("amount for 'one_class'", amount, lo, hi,
                  what=f"the digit to calibrate on, an integer in [{lo}, {hi}]")
        return
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount):
        raise TypeError(f"amount must be a finite number, got {amount!r}")
    if not lo <= amount <= hi:
        raise ValueError(f"amount for {shift!r} must be in [{lo}, {hi}] (the slider's range), got {amount}")


def shift_images(images: torch.Tensor, shift: str, amount, labels: torch.Tensor | None = None,
                 seed: int = 0) -> torch.Tensor:
    """The calibration images, shifted (see SHIFTS for each shift's amount and its range):

        brightness: x + a      contrast: m + a (x - m), m each image's mean      noise: x + a N(0, 1)
        one_class:  the images whose label is the digit a
    """
    _check_shift(shift, amount)
    images = _check_calib(images)
    if shift == "brightness":
        return images + amount
    if shift == "contrast":  # m + a (x - m), written so that a = 1 gives x exactly
        return images + (amount - 1) * (images - images.mean(dim=(1, 2, 3), keepdim=True))
    if shift == "noise":
        g = torch.Generator().manual_seed(seed)
        return images + amount * torch.randn(images.shape, generator=g)
    if labels is None:
        raise ValueError("shift 'one_class' needs the calibration labels: pass calib as "
                         "(images, labels), e.g. qlab.lab.kit.data.digits_tensors('train')")
    chosen = images[_check_labels(labels, images) == amount]
    if len(chosen) == 0:
        raise ValueError(f"the calibration set has no image of digit {amount}")
    return chosen


CALIB_FORMS = ("calib must be a tensor of images (N, C, H, W), or (images, labels) with labels a 1-D "
               "tensor of the same length")


def _check_labels(labels, images: torch.Tensor) -> torch.Tensor:
    """labels, if they are one label per calibration image."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        got = f"shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D tensor, one label per calibration image; got {got}")
    if len(labels) != len(images):
        raise ValueError(f"labels must hold one label per calibration image: {len(images)} images, "
                         f"{len(labels)} labels")
    return labels


def _describe_calib(calib: tuple | list) -> str:
    kind = type(calib).__name__
    if calib and all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in calib):
        return f"a {kind} of {len(calib)} image batches: join them with torch.cat(...) first"
    return f"a {kind} of {len(calib)} items ({', '.join(type(t).__name__ for t in calib[:3])})"


def _images_labels(calib) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images, labels or None) from calib: images, or (images, labels)."""
    if not isinstance(calib, (tuple, list)):
        return calib, None
    if len(calib) != 2 or not all(isinstance(t, torch.Tensor) for t in calib) or calib[1].dim() == 4:
        raise ValueError(f"{CALIB_FORMS}; got {_describe_calib(calib)}")
    images, labels = calib
    return images, _check_labels(labels, _check_calib(images))


def calibrated_accuracy(float_model: nn.Module, calib, x: torch.Tensor, y: torch.Tensor,
                        qconfig: QConfig = qlab.minmax_qconfig, max_images: int = 128) -> float:
    """Static PTQ end to end, then test accuracy: fuse, prepare, calibrate on the first
    max_images of calib (images, or (images, labels)), convert, evaluate on (x, y) with
    torch.ao's fbgemm kernels (= qlab's float-bias path). The unshifted baseline."""
    _check_xy(x, y)
    check_int("max_images", max_images, 1, what="a positive integer")
    images, _ = _images_labels(calib)
    model = quantize_except(float_model, _check_calib(images)[:max_images], (), qconfig)
    return top1(int8_logits(model, x), y)


def calibrate_shifted(float_model: nn.Module, calib, x: torch.Tensor, y: torch.Tensor, shift: str,
                      amount, qconfig: QConfig = qlab.minmax_qconfig, max_images: int = 128) -> float:
    """Calibrate on shifted images (shift_images), evaluate on the unshifted test set (x, y).

    calib: calibration images, or (images, labels) (labels are needed for 'one_class').
    shift and amount: see SHIFTS (ValueError outside the range). At most max_images are
    used, after the shift. Compare with calibrated_accuracy(...), the unshifted baseline.
    """
    _check_shift(shift, amount)
    _check_xy(x, y)
    images, labels = _images_labels(calib)
    shifted = shift_images(images, shift, amount, labels)
    return calibrated_accuracy(float_model, shifted, x, y, qconfig, max_images)
