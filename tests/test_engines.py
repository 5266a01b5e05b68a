"""Every laptop's int8 engine: the classroom's one engine choice, qnnpack's defaults in qlab, how
far qlab's integer path is from qnnpack's kernels (measured, bounded), and qlab's int8 path
without oneDNN (PyTorch builds for ARM may lack it).

PyTorch on Apple-silicon and other ARM laptops has only the qnnpack engine; x86 builds have
qnnpack too, so its kernels are checked here. `make test-qnnpack` runs the lessons with PyTorch
restricted to qnnpack (tests/qnnpack/sitecustomize.py).
"""

import copy
import warnings

import pytest
import torch
import torch.ao.quantization as tq
from reference import engine
from torch import nn

import qlab
from qlab.lab.kit import checkpoints, data, torch_ao

X86_BUILD = ["qnnpack", "none", "onednn", "x86", "fbgemm"]
ARM_BUILD = ["none", "qnnpack"]

# ---- the one engine choice


@pytest.mark.parametrize("supported, best", [
    (X86_BUILD, "x86"), (["none", "fbgemm", "qnnpack"], "fbgemm"), (ARM_BUILD, "qnnpack")])
def test_the_best_engine_the_machine_has_is_chosen(supported, best):
    assert torch_ao.choose_engine(None, supported) == best


def test_qlab_engine_overrides_the_choice_and_a_wrong_name_lists_the_ones_there_are():
    assert torch_ao.choose_engine("qnnpack", X86_BUILD) == "qnnpack"
    with pytest.raises(ValueError, match=r"unknown QLAB_ENGINE 'x86'; allowed: 'qnnpack'"):
        torch_ao.choose_engine("x86", ARM_BUILD)
    with pytest.raises(ValueError, match=r"unknown QLAB_ENGINE 'X86'; allowed: 'x86', 'fbgemm', 'qnnpack'"):
        torch_ao.choose_engine("X86", X86_BUILD)
    with pytest.raises(RuntimeError, match=r"none of the int8 engines the lessons use"):
        torch_ao.choose_engine(None, ["none", "onednn"])


def test_this_machine_uses_x86_and_checks_parity_on_fbgemm():
    assert torch_ao.ENGINE == "x86" and torch_ao.PARITY_ENGINE == "fbgemm" and torch_ao.X86
    assert torch_ao.differences() == []


def test_use_engine_sets_torch_and_names_the_engine():
    before = torch.backends.quantized.engine
    try:
        assert torch_ao.use_engine().startswith("int8 engine: x86 (the best")
        assert torch.backends.quantized.engine == "x86"
        line = torch_ao.use_engine(torch_ao.PARITY_ENGINE)
        assert line.startswith("int8 engine: fbgemm (the engine qlab's integer path equals")
        assert torch.backends.quantized.engine == "fbgemm"
        with pytest.raises(ValueError, match="unknown engine 'tpu'"):
            torch_ao.use_engine("tpu")
    finally:
        torch.backends.quantized.engine = before


def test_on_an_arm_laptop_the_lessons_say_what_differs(monkeypatch):
    monkeypatch.setattr(torch_ao, "ENGINE", "qnnpack")
    monkeypatch.setattr(torch_ao, "PARITY_ENGINE", None)
    monkeypatch.setattr(torch_ao, "X86", False)
    lines = torch_ao.differences()
    assert any("no fbgemm" in line for line in lines)
    assert any("lesson 04 uses qnnpack's defaults" in line for line in lines)
    assert any("lesson 07" in line for line in lines)
    with engine("fbgemm"):
        assert "x86-only facts" in torch_ao.use_engine(None)
        assert torch.backends.quantized.engine == "qnnpack"


def test_no_lesson_or_lab_module_sets_an_engine_by_name():
    """The engine is set in one place, kit/torch_ao.py; lessons call torch_ao.use_engine()."""
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"quantized\.engine\s*=|_set_qengine|get_default_(qat_)?qconfig\(\s*[\"']")
    hits = []
    for path in sorted((root / "qlab" / "lab").rglob("*.py")):
        if path.name == "torch_ao.py":
            continue
        hits += [f"{path.name}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line) and not line.lstrip().startswith(("#", "get_default"))]
    for path in sorted((root / "notebooks").glob("[0-9]*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code" and pattern.search("".join(cell["source"])):
                hits.append(f"{path.name} cell {i}")
    assert hits == []


# ---- qnnpack's defaults in qlab's terms


def test_qnnpack_defaults_are_torch_aos():
    ours, theirs = qlab.get_default_qconfig("qnnpack"), tq.get_default_qconfig("qnnpack")
    a, ta = ours.activation(), theirs.activation()
    assert (a.reduce_range, ta.reduce_range) == (False, False)
    w, tw = ours.weight(), theirs.weight()
    assert w.axis is None and tw.qscheme == torch.per_tensor_symmetric and w.symmetric
    x = torch.randn(16, 8, 3, 3) * torch.rand(16, 1, 1, 1)
    w(x)
    tw(x)
    scale, zp = tw.calculate_qparams()
    assert torch.equal(w.qparams().scale.reshape(()), scale.reshape(()))
    assert int(w.qparams().zero_point) == int(zp) == 0
    qat, tqat = qlab.get_default_qat_qconfig("qnnpack"), tq.get_default_qat_qconfig("qnnpack")
    assert qat.activation().activation_post_process.reduce_range is False
    assert tqat.activation().activation_post_process.reduce_range is False
    assert qat.weight().activation_post_process.axis is None
    with pytest.raises(ValueError, match=r"backend must be one of \('x86', 'fbgemm', 'qnnpack'\)"):
        qlab.get_default_qconfig("arm")


# ---- how far qlab's integer path is from qnnpack's kernels


@pytest.fixture(scope="module", params=["resnet", "mobilenet_v2"])
def calibrated(request):
    """A lesson CNN fused, calibrated with qnnpack's defaults and converted under each bias rule."""
    model = checkpoints.load_model(request.param)
    model.fuse_model()
    calib, _ = data.digits_tensors("train")
    base = qlab.get_default_qconfig("qnnpack")
    out = {}
    for rule in ("float", "int32"):
        prepared = qlab.prepare(copy.deepcopy(model), qlab.QConfig(base.activation, base.weight, bias=rule))
        with torch.no_grad():
            for batch in calib[:256].split(64):
                prepared(batch)
        out[rule] = qlab.convert(prepared)
    return request.param, out


def _steps_off(model, x, engine_name):
    step = [m for m in model.modules() if isinstance(m, qlab.nn.QuantLinear)][-1].scale
    with torch.no_grad(), engine(engine_name):
        ours, theirs = model(x), qlab.to_torch(model)(x)
    steps = ((ours - theirs).abs() / step).round()
    return float((steps > 0).float().mean()), int(steps.max())


def test_qnnpack_adds_the_bias_as_an_int32_as_qlabs_int32_rule(calibrated):
    """qnnpack rounds the bias to the accumulator's grid (qlab's "int32" rule); fbgemm adds it as
    a float (the "float" rule). Measured on 360 test images, qnnpack's defaults: MobileNetV2's
    int32-rule logits are qnnpack's bit for bit; ResNet's differ by one output step on about 2 %
    (every conv and linear equals qnnpack's on the same int8 input: the gap is elsewhere); the
    float rule is 19-30 % off there, by up to 3 steps."""
    name, models = calibrated
    x, _ = data.digits_tensors("test")
    int32_off, int32_max = _steps_off(models["int32"], x, "qnnpack")
    float_off, float_max = _steps_off(models["float"], x, "qnnpack")
    assert int32_max <= 1 and int32_off <= 0.03
    if name == "mobilenet_v2":
        assert int32_off == 0.0
    assert float_off > 5 * max(int32_off, 0.01)


def test_dynamic_int8_on_qnnpack_is_qlab_without_reduce_range():
    """qnnpack's dynamic Linear/LSTM ignore reduce_range (torch warns so): qlab with
    reduce_range=False gives their outputs to float32 rounding (their sums run in another order)."""
    lstm = checkpoints.load_model("charlstm")
    tokens = data.CharVocab().encode("def f(x):\n    return [i * i for i in range(x)]\n").view(1, -1)
    ours = qlab.quantize_dynamic(lstm, {nn.LSTM, nn.Linear}, reduce_range=False)
    with engine("qnnpack"), torch.no_grad():
        theirs = tq.quantize_dynamic(copy.deepcopy(lstm), {nn.LSTM, nn.Linear}, dtype=torch.qint8)
        a, b = ours(tokens), theirs(tokens)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


# ---- qlab's int8 path without oneDNN


def test_qlab_int8_path_gives_the_same_integers_without_onednn():
    """torch._int_mm, qlab's integer product, runs on oneDNN where PyTorch has it and on a plain
    loop where it does not (PyTorch's _int_mm_out_cpu): the integers must not change."""
    lstm = checkpoints.load_model("charlstm")
    cnn = checkpoints.load_model("resnet")
    cnn.fuse_model()
    prepared = qlab.prepare(cnn, qlab.minmax_qconfig)
    x, _ = data.digits_tensors("test")
    with torch.no_grad():
        prepared(x[:64])
    int8_cnn = qlab.convert(prepared)
    int8_lstm = qlab.quantize_dynamic(lstm, {nn.LSTM, nn.Linear})
    tokens = data.CharVocab().encode("Return the number of items.").view(1, -1)
    a = torch.randint(-128, 128, (33, 70), dtype=torch.int8)
    b = torch.randint(-128, 128, (70, 40), dtype=torch.int8)
    with torch.no_grad():
        with_onednn = (int8_cnn(x[:32]), int8_lstm(tokens)[0], torch._int_mm(a, b))
        with warnings.catch_warnings():  # the flags' own notice about TF32 on Intel GPUs
            warnings.simplefilter("ignore", UserWarning)
            with torch.backends.mkldnn.flags(enabled=False):
                without = (int8_cnn(x[:32]), int8_lstm(tokens)[0], torch._int_mm(a, b))
    for one, other in zip(with_onednn, without, strict=True):
        assert torch.equal(one, other)
    assert torch.equal(with_onednn[2], a.int() @ b.int())


# ---- lesson 07 without a compiler, or off x86


def test_lesson_07_skips_compiled_paths_without_a_compiler_and_pt2e_compiled_off_x86(monkeypatch):
    from qlab.lab.kit import compiler
    from qlab.lab.lessons.l07_quantize_and_pt2e import numbers as l07

    assert l07.skipped_paths() == {}  # this machine: x86, g++
    monkeypatch.setattr(torch_ao, "X86", False)
    monkeypatch.setattr(torch_ao, "ENGINE", "qnnpack")
    off_x86 = l07.skipped_paths()
    assert set(off_x86) == {"PT2E int8 compiled", "PT2E int8 compiled, no freezing"}
    assert "x86's (oneDNN)" in off_x86["PT2E int8 compiled"]
    monkeypatch.setattr(compiler, "can_compile", lambda: False)
    none = l07.skipped_paths()
    assert set(none) == {p for p in (*l07.PATHS, *l07.MINILM_COMPILED) if "compiled" in p}
    assert all("No C++ compiler" in why for why in none.values())


def test_the_panel_names_why_a_skipped_path_is_missing():
    from qlab.lab.lessons.l07_quantize_and_pt2e import numbers as l07

    why = "No C++ compiler: ..."
    rows = {p: {"accuracy": 0.9} for p in ("fp32 eager", "torch.ao int8 eager", "PT2E int8 eager")}
    cnn = {"ResNet": {"batches": (1,), "fp32_layout": {1: "contiguous"}, "baseline": {1: "fp32 eager"},
                      "rows": rows, "runs": {1: {p: None for p in rows}},
                      "skipped": {p: why for p in l07.PATHS if "compiled" in p}}}
    choice = l07.panel_choices(cnn)["ResNet · batch 1"]
    assert ("fp32", "compiled") not in choice["paths"]
    assert choice["notes"][("fp32", "compiled")] == why
    assert choice["notes"][(l07.METHODS[2], "compiled")] == why


def test_lesson_03s_exercise_is_checked_against_fbgemms_rule_without_fbgemm(monkeypatch, capsys):
    """qnnpack's torch._choose_qparams_per_tensor ignores reduce_range: on a machine without fbgemm
    the checker compares with qlab's copy of fbgemm's rule (tested equal to torch's on fbgemm)."""
    from qlab.lab.lessons.l03_dynamic_quantization import checks
    from qlab.nn.dynamic import dynamic_qparams

    def solution(x, reduce_range):
        qp = dynamic_qparams(float(x.min()), float(x.max()), reduce_range)
        return float(qp.scale), int(qp.zero_point)

    for parity in ("fbgemm", None):
        monkeypatch.setattr(checks, "PARITY_ENGINE", parity)
        assert checks.check_dynamic_qparams(solution)
    with engine("qnnpack"):
        assert checks.check_dynamic_qparams(solution)  # the reference is computed on fbgemm
    assert capsys.readouterr().out.count("✅") == 3


def test_notes_print_only_off_x86_and_parity_notes_only_without_fbgemm(monkeypatch, capsys):
    a, b = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 2.0, 3.5, 4.0])
    torch_ao.note(torch_ao.SPEED)
    torch_ao.parity_note(a, b, step=0.5)
    assert capsys.readouterr().out == ""  # x86 with fbgemm: the lesson's text holds
    monkeypatch.setattr(torch_ao, "ENGINE", "qnnpack")
    monkeypatch.setattr(torch_ao, "PARITY_ENGINE", None)
    monkeypatch.setattr(torch_ao, "X86", False)
    torch_ao.note(torch_ao.SPEED)
    torch_ao.parity_note(a, b, step=0.5)
    torch_ao.parity_note(a, a.clone())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("on this machine (qnnpack): the text's speed figures come from x86's")
    assert lines[1].startswith("on this machine (qnnpack, no fbgemm): 25.00% of values differ from "
                               "torch.ao's qnnpack kernels, by at most 1 output step(s)")
    assert "no value differs from torch.ao's qnnpack kernels" in lines[2]
