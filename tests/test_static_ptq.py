"""Lesson 04's numbers (qlab.lab.lessons.l04_static_quantization): the integer stepper, the walk, the bias-
rule cost, the per-layer sensitivity scan and calibration on shifted data, on the real lesson
checkpoints. The stepper's numbers are checked against computations it does not use: the accumulator
against a float64 convolution of the integers, torch.ao's codes against a hook on the whole
qlab.to_torch model, the fixed-point multiplier against the float one."""

import math

import pytest
import torch
import torch.nn.functional as F
from reference import engine
from torch import nn

import qlab
from qlab.lab.kit import checkpoints, data
from qlab.lab.kit.train import top1
from qlab.lab.lessons.l04_static_quantization import numbers

CALIB, CALIB_Y = data.digits_tensors("train")
X, Y = data.digits_tensors("test")


def _prepare(name):
    model = checkpoints.load_model(name)
    model.fuse_model()
    prepared = qlab.prepare(model, qlab.minmax_qconfig)
    with torch.no_grad():
        for batch in CALIB[:256].split(64):
            prepared(batch)
    return prepared


@pytest.fixture(scope="module")
def resnet():
    """(float model, prepared, converted with the float rule, converted with the int32 rule)."""
    prepared = _prepare("resnet")
    return (checkpoints.load_model("resnet"), prepared, qlab.convert(prepared),
            qlab.convert(prepared, bias_rule="int32"))


@pytest.fixture(scope="module")
def mobilenet():
    prepared = _prepare("mobilenet_v2")
    return (checkpoints.load_model("mobilenet_v2"), prepared, qlab.convert(prepared),
            qlab.convert(prepared, bias_rule="int32"))


def _torch_codes_whole_model(model, name, image):
    """torch.ao's codes for layer `name`: a hook on the whole qlab.to_torch model, run on fbgemm."""
    seen = {}

    def record(module, inputs, output):
        seen["out"] = output.int_repr()  # returns None: the output goes on unchanged

    with engine("fbgemm"):
        exported = qlab.to_torch(model)
        handle = exported.get_submodule(name).register_forward_hook(record)
        with torch.no_grad():
            exported(image.unsqueeze(0))
        handle.remove()
    return seen["out"][0].to(torch.int64)


# ---------------------------------------------------------------------- int8_layers


def test_int8_layers_are_the_converted_layers_in_order(resnet, mobilenet):
    for float_model, _, converted, _ in (resnet, mobilenet):
        layers = numbers.int8_layers(converted)
        assert list(layers) == numbers.quantizable_layers(float_model)
        assert all(isinstance(m, (qlab.nn.QuantConv2d, qlab.nn.QuantLinear)) for m in layers.values())
    assert len(numbers.int8_layers(resnet[2])) == 17 and list(numbers.int8_layers(resnet[2]))[-1] == "fc"
    assert len(numbers.int8_layers(mobilenet[2])) == 32


def test_int8_layers_of_a_model_not_converted_says_what_to_do(resnet):
    float_model, prepared, converted, _ = resnet
    for model in (float_model, prepared):
        with pytest.raises(ValueError, match=r"no int8 layers.*qlab\.convert"):
            numbers.int8_layers(model)
    with engine("fbgemm"), pytest.raises(ValueError, match=r"not qlab\.to_torch"):
        numbers.int8_layers(qlab.to_torch(converted))
    with pytest.raises(TypeError, match="nn.Module"):
        numbers.int8_layers("resnet")


# ---------------------------------------------------------------------- the stepper

# a fused conv+ReLU, a conv with a zero point (no ReLU), a 1x1 downsample, the fc
RESNET_LAYERS = ["conv1", "layers.0.0.conv2", "layers.1.0.downsample.0", "fc"]


@pytest.mark.parametrize("layer", RESNET_LAYERS)
def test_stepper_float_rule_is_torch_ao_and_the_model(resnet, layer):
    _, _, converted, _ = resnet
    s = numbers.step_layer(converted, layer, X[0])
    assert torch.equal(s["out_float"], s["out_model"])
    assert torch.equal(s["out_torch"], _torch_codes_whole_model(converted, layer, X[0]))
    assert torch.equal(s["out_float"], s["out_torch"])
    assert s["steps"]["float"]["max"] == 0 and s["steps"]["float"]["differ"] == 0.0
    assert s["bias_rule"] == "float"


def test_stepper_on_a_depthwise_conv(mobilenet):
    _, _, converted, _ = mobilenet
    s = numbers.step_layer(converted, "features.2.conv.1.0", X[3])
    assert s["kind"] == "depthwise 3x3 + ReLU"
    assert torch.equal(s["out_float"], s["out_torch"]) and torch.equal(s["out_model"], s["out_torch"])


def test_stepper_accumulator_is_the_integer_convolution(resnet):
    """acc = conv2d(q_x - z_x, q_w), recomputed in float64 (exact for these integers)."""
    _, _, converted, _ = resnet
    layer = numbers.int8_layers(converted)["layers.0.0.conv2"]
    s = numbers.step_layer(converted, "layers.0.0.conv2", X[1])
    x = s["input_codes"].double() - s["input_zero_point"]
    expected = F.conv2d(x.unsqueeze(0), layer.weight.double(), stride=layer.stride, padding=layer.padding)[0]
    assert torch.equal(s["accumulator"].double(), expected)
    assert (s["acc_min"], s["acc_max"]) == (int(expected.min()), int(expected.max()))
    # and it stands for the float layer's output: s_x s_w acc + b ≈ what the output codes say
    w_scale = s["weight_scale"].reshape(-1, 1, 1)
    y = s["input_scale"] * w_scale * s["accumulator"] + s["bias"].reshape(-1, 1, 1)
    y_hat = (s["out_torch"] - s["output_zero_point"]) * s["output_scale"]
    inside = (s["out_torch"] > 0) & (s["out_torch"] < 255)
    assert (y - y_hat)[inside].abs().max() <= 0.5 * s["output_scale"] * (1 + 1e-4)


def test_stepper_multiplier_and_bias_rules(resnet):
    _, _, converted, _ = resnet
    s = numbers.step_layer(converted, "layers.0.0.conv2", X[2])
    m = s["multiplier"]
    s_x = torch.tensor(s["input_scale"], dtype=torch.float32)
    expected = s_x * s["weight_scale"].float() / s["output_scale"]
    assert torch.allclose(m, expected, rtol=1e-6)
    for mi, m0, shift in zip(m.tolist(), s["m0"], s["shift"], strict=True):
        assert 2**30 <= m0 < 2**31
        assert math.isclose(math.ldexp(m0, -31 - shift), mi, rel_tol=2**-30)
    assert torch.equal(s["bias_int32"], torch.round(s["bias_float"]).to(torch.int32))
    assert (s["bias_int32"] - s["bias_float"]).abs().max() <= 0.5
    # the int32 rule moves the bias by at most half an accumulator unit: at most one output step
    assert s["steps"]["int32"]["max"] <= 1 and s["steps"]["fixed_point"]["max"] <= 1
    assert (s["out_fixed_point"] - s["out_int32"]).abs().max() <= 1


def test_stepper_of_an_int32_model_shows_its_own_rule(resnet):
    _, _, _, int32_model = resnet
    s = numbers.step_layer(int32_model, "layers.0.0.conv1", X[0])
    assert s["bias_rule"] == "int32" and torch.equal(s["out_model"], s["out_int32"])
    assert s["steps"]["int32"]["max"] == 1  # measured: one code of 4,096 is one step off


def test_stepper_bad_input(resnet):
    float_model, prepared, converted, _ = resnet
    with pytest.raises(ValueError, match=r"'layers\.9' is not an int8 layer.*conv1, layers\.0\.0\.conv1.*fc"):
        numbers.step_layer(converted, "layers.9", X[0])
    with pytest.raises(ValueError, match="is not an int8 layer"):
        numbers.step_layer(converted, "layers", X[0])  # a container, not a layer
    for model in (float_model, prepared):
        with pytest.raises(ValueError, match=r"qlab\.convert"):
            numbers.step_layer(model, "conv1", X[0])
    with pytest.raises(ValueError, match=r"one image.*\(2, 3, 32, 32\)"):
        numbers.step_layer(converted, "conv1", X[:2])
    with pytest.raises(TypeError, match="float tensor"):
        numbers.step_layer(converted, "conv1", X[0].to(torch.uint8))
    old = torch.backends.quantized.engine
    numbers.step_layer(converted, "fc", X[0])
    assert torch.backends.quantized.engine == old  # the engine is restored


# ---------------------------------------------------------------------- the walk


def test_walk_rows(resnet):
    _, _, converted, int32_model = resnet
    rows = numbers.walk_image(converted, X[5])
    layers = numbers.int8_layers(converted)
    assert [r["layer"] for r in rows] == list(layers)
    for r in rows:
        layer = layers[r["layer"]]
        assert (r["output_scale"], r["output_zero_point"]) == (layer.scale, layer.zero_point)
        assert r["acc_min"] <= r["acc_max"] and r["rule"] == "float"
        assert r["differ"] == 0.0 and r["max_steps"] == 0  # fbgemm: bit for bit
    by_name = {r["layer"]: r for r in rows}
    # a layer's input is the previous layer's output: the same grid
    assert by_name["layers.0.0.conv2"]["input_scale"] == by_name["layers.0.0.conv1"]["output_scale"]
    assert by_name["conv1"]["kind"] == "conv 3x3 + ReLU" and by_name["fc"]["kind"] == "linear"
    int32_rows = numbers.walk_image(int32_model, X[5])
    assert all(r["rule"] == "int32" and r["max_steps"] <= 1 for r in int32_rows)
    assert any(r["max_steps"] == 1 for r in int32_rows)


# ---------------------------------------------------------------------- the bias-rule cost


def test_bias_rule_cost_is_measured(mobilenet):
    _, prepared, converted, int32_model = mobilenet
    x, y = X[:96], Y[:96]
    cost = numbers.bias_rule_cost(prepared, x, y)
    with torch.no_grad():
        ours_float, ours_int32 = converted(x), int32_model(x)
    step = numbers.int8_layers(converted)["classifier.1"].scale
    expected = ((ours_int32 - ours_float).abs() / step).round().to(torch.int64).flatten()
    assert torch.equal(cost["steps"], expected) and cost["step"] == step
    assert sum(cost["histogram"].values()) == expected.numel()
    assert 0 < cost["max_steps"] <= 6 and 0 < cost["differ"] < 0.6
    assert cost["accuracy_float"] == top1(ours_float, y)
    assert abs(cost["accuracy_int32"] - cost["accuracy_float"]) <= 0.02
    with pytest.raises(ValueError, match="no observers"):
        numbers.bias_rule_cost(converted, x, y)
    with pytest.raises(ValueError, match="one label per image"):
        numbers.bias_rule_cost(prepared, x, y[:3])


# ---------------------------------------------------------------------- sensitivity


def test_quantize_only_and_quantize_except(resnet):
    float_model = resnet[0]
    calib = CALIB[:64]
    only = numbers.quantize_only(float_model, "layers.1.0.conv1", calib)
    # the layer now sits between a Quantize and a DeQuantize, at "<name>.1"
    assert list(numbers.int8_layers(only)) == ["layers.1.0.conv1.1"]
    assert [type(m).__name__ for m in only.layers[1][0].conv1] == ["Quantize", "QuantConv2d", "DeQuantize"]
    kept = numbers.quantize_except(float_model, calib, ["conv1", "fc"])
    assert list(numbers.int8_layers(kept)) == numbers.quantizable_layers(float_model)[1:-1]
    # the kept fc feeds the output: no Quantize after it, so the logits stay float
    assert [type(m).__name__ for m in kept.fc] == ["DeQuantize", "Linear"]
    assert [type(m).__name__ for m in kept.conv1] == ["DeQuantize", "ConvReLU2d", "Quantize"]
    with pytest.raises(ValueError, match="not a quantizable layer.*conv1"):
        numbers.quantize_only(float_model, "relu", calib)
    with pytest.raises(ValueError, match="keep must be a list"):
        numbers.quantize_except(float_model, calib, "fc")
    with pytest.raises(ValueError, match="calibration set is empty"):
        numbers.quantize_only(float_model, "fc", CALIB[:0])


def test_layer_sensitivity(resnet):
    float_model = resnet[0]
    sens = numbers.layer_sensitivity_sqnr(float_model, CALIB[:64], X[:64], layers=["fc", "conv1"])
    assert list(sens) == ["conv1", "fc"]  # in the model's order
    assert all(20 < v < 80 for v in sens.values())
    # one layer quantized costs less than all of them
    whole = numbers.int8_logits(numbers.quantize_except(float_model, CALIB[:64]), X[:64])
    with torch.no_grad():
        reference = numbers._fused_copy(float_model)(X[:64])
    assert min(sens.values()) > qlab.metrics.sqnr(reference, whole)
    at_layer = numbers.layer_sensitivity_sqnr(float_model, CALIB[:64], X[:64], at="layer", layers=["conv1"])
    assert 20 < at_layer["conv1"] < 80
    with pytest.raises(ValueError, match="at must be"):
        numbers.layer_sensitivity_sqnr(float_model, CALIB[:64], X[:64], at="weights")
    with pytest.raises(ValueError, match="layers must be a list.*layers.0.0.conv1"):
        numbers.layer_sensitivity_sqnr(float_model, CALIB[:64], X[:64], layers=["nope"])


def test_propose_fp32_layers():
    sens = {"a": 40.0, "b": 25.0, "c": 31.0, "d": 50.0}
    assert numbers.propose_fp32_layers(sens, 2) == ["b", "c"]
    assert numbers.propose_fp32_layers(sens, 3, below_db=30.0) == ["b"]
    assert numbers.propose_fp32_layers(sens, 0) == []
    with pytest.raises(ValueError, match=r"count must be an integer in \[0, 4\]"):
        numbers.propose_fp32_layers(sens, 5)
    with pytest.raises(ValueError, match="non-empty dict"):
        numbers.propose_fp32_layers({}, 1)


def test_keep_fp32_scan(mobilenet):
    float_model = mobilenet[0]
    calib, x, y = CALIB[:64], X[:128], Y[:128]
    sens = {"classifier.1": 30.0, "features.0.0": 40.0}
    rows = numbers.keep_fp32_scan(float_model, calib, x, y, sens, counts=(0, 1))
    assert [r["kept"] for r in rows] == [[], ["classifier.1"]]
    assert rows[0]["accuracy"] == numbers.calibrated_accuracy(float_model, calib, x, y, max_images=64)
    assert rows[1]["sqnr"] > rows[0]["sqnr"]  # float logits: the output grid's noise is gone


# ---------------------------------------------------------------------- shifted calibration


def test_shift_images_formulas():
    x = CALIB[:8]
    assert torch.equal(numbers.shift_images(x, "brightness", 0.5), x + 0.5)
    c = numbers.shift_images(x, "contrast", 2.0)
    assert torch.allclose(c.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5)
    assert torch.allclose(c.std((1, 2, 3)), 2 * x.std((1, 2, 3)), rtol=1e-5)
    n = numbers.shift_images(x, "noise", 0.5)
    assert torch.equal(n, numbers.shift_images(x, "noise", 0.5))  # seeded
    assert 0.45 < float((n - x).std()) < 0.55
    one = numbers.shift_images(CALIB[:100], "one_class", 3, labels=CALIB_Y[:100])
    assert len(one) == int((CALIB_Y[:100] == 3).sum()) > 0
    assert torch.equal(numbers.shift_images(x, "contrast", 1.0), x)


@pytest.mark.parametrize("shift, amount, error, words", [
    ("blur", 1.0, ValueError, r"shift must be one of \('brightness', 'contrast', 'noise', 'one_class'\)"),
    ("brightness", 3.5, ValueError, r"'brightness' must be in \[-3.0, 3.0\]"),
    ("contrast", 0.1, ValueError, r"'contrast' must be in \[0.25, 4.0\]"),
    ("noise", -0.1, ValueError, r"'noise' must be in \[0.0, 2.0\]"),
    ("one_class", 10, ValueError, r"digit to calibrate on, an integer in \[0, 9\]"),
    ("one_class", 2.5, ValueError, r"an integer in \[0, 9\]"),
    ("brightness", float("nan"), TypeError, "finite number"),
    ("noise", "0.5", TypeError, "finite number"),
])
def test_shift_out_of_range(resnet, shift, amount, error, words):
    with pytest.raises(error, match=words):
        numbers.calibrate_shifted(resnet[0], (CALIB, CALIB_Y), X, Y, shift, amount)


def test_calibrate_shifted(resnet):
    float_model = resnet[0]
    calib, x, y = CALIB[:128], X[:180], Y[:180]
    baseline = numbers.calibrated_accuracy(float_model, calib, x, y)
    assert baseline >= 0.97
    assert numbers.calibrate_shifted(float_model, calib, x, y, "brightness", 0.0) == baseline
    # calibrated on brighter images, the input grid starts above the test images' background
    assert numbers.calibrate_shifted(float_model, calib, x, y, "brightness", 1.0) < baseline - 0.3
    with pytest.raises(ValueError, match="needs the calibration labels"):
        numbers.calibrate_shifted(float_model, calib, x, y, "one_class", 3)
    with pytest.raises(ValueError, match="calibration set is empty"):
        numbers.calibrate_shifted(float_model, CALIB[:0], x, y, "noise", 0.5)
    with pytest.raises(ValueError, match="calibration set is empty"):
        numbers.calibrated_accuracy(float_model, CALIB[:0], x, y)
    with pytest.raises(ValueError, match="max_images must be a positive integer"):
        numbers.calibrated_accuracy(float_model, calib, x, y, max_images=0)


def test_stepper_per_tensor_weights_and_no_bias():
    """One (M0, shift) for a per-tensor weight; without a bias both rules are the same."""
    import functools

    from qlab.observers import MinMaxObserver

    torch.manual_seed(0)
    model = nn.Sequential(qlab.nn.QuantStub(), nn.Conv2d(3, 4, 3, bias=False), nn.Flatten(),
                          nn.Linear(4 * 30 * 30, 5), qlab.nn.DeQuantStub())
    per_tensor = qlab.QConfig(
        activation=functools.partial(MinMaxObserver, qdtype=qlab.uint8, reduce_range=True),
        weight=functools.partial(MinMaxObserver, qdtype=qlab.int8, symmetric=True))
    prepared = qlab.prepare(model, per_tensor)
    prepared(torch.randn(8, 3, 32, 32))
    converted = qlab.convert(prepared)
    s = numbers.step_layer(converted, "1", torch.randn(3, 32, 32))
    assert len(s["m0"]) == len(s["shift"]) == 1 and s["bias_int32"] is None
    assert torch.equal(s["out_float"], s["out_int32"]) and torch.equal(s["out_float"], s["out_torch"])
    s = numbers.step_layer(converted, "3", torch.randn(1, 3, 32, 32))
    assert s["kind"] == "linear" and torch.equal(s["out_float"], s["out_torch"])
    assert [r["layer"] for r in numbers.walk_image(converted, torch.randn(3, 32, 32))] == ["1", "3"]
