"""Bad input to the classroom, round two (issue 25): the lessons' helpers and the `qlab` command.
Each case: a clear error naming the argument and what is allowed, or the right result."""

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import qlab  # noqa: E402
from qlab.lab.kit import checkpoints, data  # noqa: E402
from qlab.lab.kit.check import check_float  # noqa: E402
from qlab.lab.lessons.l04_static_quantization import numbers as l04  # noqa: E402
from qlab.lab.lessons.l05_quantization_aware_training import numbers as l05  # noqa: E402
from qlab.lab.lessons.l06_choosing_a_method import numbers as l06  # noqa: E402
from qlab.lab.lessons.l06_choosing_a_method.panels import workflow_panel  # noqa: E402
from qlab.lab.tools import cli  # noqa: E402


def _tiny():
    return nn.Sequential(qlab.nn.QuantStub(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2),
                         qlab.nn.DeQuantStub())


# ---------------------------------------------------------------------- kit.check.check_float


@pytest.mark.parametrize(("value", "error", "words"), [
    ("0.5", TypeError, "x must be a finite number in \\[0, 1\\], got str"),
    (True, TypeError, "x must be a finite number in \\[0, 1\\], got bool"),
    (float("nan"), ValueError, "x=nan is not allowed; x must be a finite number in \\[0, 1\\]"),
    (1.5, ValueError, "x=1.5 is not allowed; x must be a finite number in \\[0, 1\\]"),
])
def test_check_float_names_the_argument_and_the_range(value, error, words):
    with pytest.raises(error, match=words):
        check_float("x", value, 0, 1)


def test_check_float_accepts_numpy_scalars_and_ints():
    import numpy as np

    assert check_float("x", np.float32(0.25), 0, 1) == 0.25 and check_float("x", 1, 0, 1) == 1.0
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got 0"):
        check_float("lr", 0, 0, above=True, what="a finite number > 0")


# ---------------------------------------------------------------------- lesson 05: run_qat, ptq_accuracy


@pytest.mark.parametrize("kind", ["float", "prepared (static)", "converted"])
def test_run_qat_refuses_a_model_without_fake_quantization(kind):
    model = _tiny().eval()
    if kind != "float":
        model = qlab.prepare(model, qlab.minmax_qconfig)
        model(torch.randn(8, 4))
    if kind == "converted":
        model = qlab.convert(model)
    with pytest.raises(ValueError, match=r"run_qat needs a model prepared for QAT \(with FakeQuantize "
                                         r"modules\): prepare_for_qat\(name, qconfig\) or "
                                         r"qlab\.prepare_qat\(model, qconfig\)"):
        l05.run_qat(model)


def test_run_fp32_is_the_recipe_for_a_float_model():
    """The fp32 baseline that lesson 05 times: run_qat refuses a float model, run_fp32 trains it."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(ValueError, match="run_qat needs a model prepared for QAT"):
        l05.run_qat(model)
    history = l05.run_fp32(model, epochs=1, lr=1e-3, eval_every=8)
    assert history["steps"] == [0, 8, 16, 17] and history["frozen"] == {"bn": None, "observers": None}
    assert history["accuracy"][-1] > 0.5


@pytest.mark.parametrize("kind", ["QAT", "converted"])
def test_run_fp32_refuses_a_quantized_model(kind):
    model = qlab.prepare_qat(_tiny(), qlab.default_qat_qconfig)
    words = "prepared for QAT: use run_qat"
    if kind == "converted":
        model(torch.randn(8, 4))
        model, words = qlab.convert(model.eval()), "has none \\(a converted int8 model\\?\\)"
    with pytest.raises(ValueError, match=words):
        l05.run_fp32(model)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        l05.run_fp32(nn.Linear(2, 2), lr=float("inf"))


def test_run_qat_refuses_what_is_not_a_model():
    with pytest.raises(TypeError, match="model must be a QAT-prepared nn.Module"):
        l05.run_qat("resnet")


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"eval_every": 0}, "eval_every must be a positive integer"),
    ({"eval_every": 2.0}, "eval_every must be a positive integer"),
    ({"lr": float("inf")},
     r"lr must be a finite number > 0 \(the SGD learning rate, e\.g\. 0\.01\), got inf"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"lr": "0.01"}, "lr must be a finite number > 0"),
    ({"lr": True}, "lr must be a finite number > 0"),
    ({"freeze_bn_at": "0.5"}, r"freeze_bn_at must be a fraction of the training steps in \[0, 1\], or None "
                              r"\(never\), got '0\.5'"),
    ({"freeze_observer_at": float("nan")}, "freeze_observer_at must be a fraction"),
    ({"freeze_observer_at": -0.1}, "freeze_observer_at must be a fraction"),
    ({"epochs": 1.5}, "epochs must be a positive integer"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"seed": "0"}, "seed must be an integer >= 0"),
    ({"threads": 0}, "threads must be a positive integer"),
    ({"freezers": (qlab.nn.freeze_bn_stats,)}, "freezers must be two functions for model.apply"),
    ({"freezers": ("bn", "observers")}, "freezers must be two functions for model.apply"),
])
def test_run_qat_checks_every_argument_up_front(kwargs, words):
    model = qlab.prepare_qat(_tiny(), qlab.default_qat_qconfig)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=words):
        l05.run_qat(model, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # nothing ran


@pytest.mark.parametrize("calib_images", [-5, 0, 1079, 2.0, True])
def test_ptq_accuracy_checks_calib_images(calib_images):
    with pytest.raises(ValueError, match=r"calib_images must be an integer from 1 to 1078 \(the training "
                                         rf"images\), got {calib_images!r}"):
        l05.ptq_accuracy("resnet", calib_images=calib_images)


# ---------------------------------------------------------------------- lesson 04: the stepper, the walk


@pytest.fixture(scope="module")
def resnet():
    return checkpoints.load_model("resnet")


@pytest.fixture(scope="module")
def image():
    return data.digits_tensors("test")[0][0]


def _prepared(model):
    m = checkpoints.load_model("resnet").eval()
    m.fuse_model()
    p = qlab.prepare(m, qlab.minmax_qconfig)
    p(data.digits_tensors("train")[0][:16])
    return p


FLOAT_MODEL = r"is a float model: .*convert it first: .*`qlab\.convert\(p\)`"


@pytest.mark.parametrize("call", ["int8_layers", "walk_image", "step_layer"])
def test_the_stepper_on_a_float_model_says_convert_it_without_the_torch_ao_hint(resnet, image, call):
    args = {"int8_layers": (), "walk_image": (image,), "step_layer": ("conv1", image)}[call]
    with pytest.raises(ValueError, match=FLOAT_MODEL) as e:
        getattr(l04, call)(resnet, *args)
    assert "torch.ao's quantized modules" not in str(e.value)


def test_the_stepper_on_a_prepared_model_says_convert_it(resnet, image):
    with pytest.raises(ValueError, match=r"is prepared \(it has observers\) but not converted: convert it "
                                         r"first: `qlab\.convert\(p\)`") as e:
        l04.walk_image(_prepared(resnet), image)
    assert "torch.ao's quantized modules" not in str(e.value)


def test_the_stepper_panel_on_a_float_model_says_convert_it(resnet):
    from qlab.lab.lessons.l04_static_quantization.panels import stepper_panel

    with pytest.raises(ValueError, match="convert it first") as e:
        stepper_panel(resnet, data.digits_tensors("test")[0][:4])
    assert "torch.ao's quantized modules" not in str(e.value)


def test_the_torch_ao_hint_stays_for_a_torch_ao_model(resnet, image):
    torch_model = qlab.to_torch(qlab.convert(_prepared(resnet)))
    with pytest.raises(ValueError, match="It holds torch.ao's quantized modules: pass qlab's converted"):
        l04.walk_image(torch_model, image)


# ---------------------------------------------------------------------- lesson 04: calibrate_shifted


@pytest.fixture(scope="module")
def test_set():
    x, y = data.digits_tensors("test")
    return x[:32], y[:32]


def test_calibrate_shifted_refuses_a_list_of_image_batches(resnet, test_set):
    images = data.digits_tensors("train")[0]
    with pytest.raises(ValueError, match=r"calib must be a tensor of images \(N, C, H, W\), or \(images, "
                                         r"labels\) with labels a 1-D tensor of the same length; got a list "
                                         r"of 2 image batches: join them with torch\.cat"):
        l04.calibrate_shifted(resnet, [images[:64], images[64:128]], *test_set, "brightness", 0.5)


def test_calibrate_shifted_names_labels_of_the_wrong_length(resnet, test_set):
    images, labels = data.digits_tensors("train")
    with pytest.raises(ValueError, match=r"labels must hold one label per calibration image: 100 images, "
                                         r"99 labels"):
        l04.calibrate_shifted(resnet, (images[:100], labels[:99]), *test_set, "one_class", 3)
    with pytest.raises(ValueError, match=r"labels must hold one label per calibration image: 100 images, "
                                         r"99 labels"):
        l04.shift_images(images[:100], "one_class", 3, labels[:99])


@pytest.mark.parametrize("calib", [[], [1, 2, 3], ("images", "labels")])
def test_calibrate_shifted_says_what_was_passed(resnet, test_set, calib):
    with pytest.raises(ValueError, match=r"calib must be a tensor of images \(N, C, H, W\), or \(images, "
                                         r"labels\).*; got "):
        l04.calibrate_shifted(resnet, calib, *test_set, "brightness", 0.5)


# ---------------------------------------------------------------------- lesson 06: decide, workflow_panel


def _row(method, loss=0.0, speedup=1.0, size=1_000_000):
    return {"model": "m", "method": method, "quality": 0.99 - loss, "metric": "accuracy", "loss": loss,
            "size_bytes": size, "speedup": speedup, "baseline": "fp32 contiguous", "data": "", "seconds": 0.0,
            "note": ""}


def _without(row, key):
    return {k: v for k, v in row.items() if k != key}


@pytest.mark.parametrize(("rows", "error", "words"), [
    ([_row("fp32"), _without(_row("static", 0.0, 2.0), "speedup")], ValueError,
     r"rows\[1\] \(method 'static'\) has no key 'speedup'; each row needs "),
    ([_without(_row("fp32"), "method"), _row("static")], ValueError, r"rows\[0\] has no key 'method'"),
    ([_without(_row("fp32"), "quality"), _row("static")], ValueError,
     r"rows\[0\] \(method 'fp32'\) has no key 'quality'"),
    (["fp32", "static"], TypeError, r"rows\[0\] must be a dict \(a row of numbers\.method_rows\), got str"),
    ({"resnet": [_row("fp32")]}, TypeError, r"rows must be a list of one model's row dicts "
                                           r"\(numbers\.method_rows\(name\)\), got dict"),
    ("fp32", TypeError, r"rows must be a list of one model's row dicts"),
    ([_row("fp32"), _row("int4", 0.0, 3.0)], ValueError,
     r"rows\[1\]\['method'\] must be one of 'fp32', 'dynamic', 'dynamic \+ SmoothQuant', 'static', "
     r"'QAT 8-bit', 'QAT 4-bit', got 'int4'"),
    ([_row("fp32"), _row("static"), _row("static")], ValueError, r"rows\[2\] repeats method 'static'"),
    ([_row("fp32"), {**_row("static"), "loss": "0.01"}], TypeError,
     r"rows\[1\] \(method 'static'\): 'loss' must be a number, got str"),
    ([_row("static")], ValueError, "rows must include the fp32 row"),
])
def test_decide_names_the_row_and_the_key(rows, error, words):
    with pytest.raises(error, match=words):
        l06.decide(rows, 0.01)


@pytest.mark.parametrize(("rows_by_model", "error", "words"), [
    ({"a": [_row("static")]}, ValueError, r"rows_by_model\['a'\]: rows must include the fp32 row"),
    ({"a": "resnet"}, TypeError, r"rows_by_model\['a'\]: rows must be a list of one model's row dicts"),
    ({"a": [_row("fp32"), _without(_row("static"), "loss")]}, ValueError,
     r"rows_by_model\['a'\]: rows\[1\] \(method 'static'\) has no key 'loss'"),
    ({"a": [_row("fp32"), _row("int4")]}, ValueError,
     r"rows_by_model\['a'\]: rows\[1\]\['method'\] must be one of"),
])
def test_workflow_panel_names_the_model_the_row_and_the_key(rows_by_model, error, words):
    with pytest.raises(error, match=words):
        workflow_panel(rows_by_model)


# ---------------------------------------------------------------------- the qlab command


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_report_threads_must_be_positive(capsys, monkeypatch, threads):
    monkeypatch.setattr(cli.l06_numbers, "report_rows", lambda *a, **k: pytest.fail("report ran"))
    with pytest.raises(SystemExit) as e:
        cli.main(["report", "--threads", threads])
    assert e.value.code == 2
    assert f"--threads must be a positive integer (torch threads), got {threads}" in capsys.readouterr().err


def test_doctor_fails_on_an_empty_manifest(tmp_path, capsys, monkeypatch):
    (tmp_path / "MANIFEST").write_text("")
    monkeypatch.setenv("QLAB_CHECKPOINTS", str(tmp_path))
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'MANIFEST'} lists no checkpoints" in out and "all good" not in out


def test_doctor_names_a_manifest_without_a_lesson_checkpoint(tmp_path, capsys, monkeypatch):
    from qlab.lab.kit.integrity import read_manifest, write_manifest

    committed = checkpoints.default_dir()
    entries = read_manifest(committed)
    del entries["resnet.pt"]
    write_manifest(entries, tmp_path)
    for name in entries:
        (tmp_path / name).write_bytes((committed / name).read_bytes())
    monkeypatch.setenv("QLAB_CHECKPOINTS", str(tmp_path))
    assert cli.main(["doctor"]) == 1
    assert "does not list resnet.pt" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_qlab_checkpoints_is_named(capsys, monkeypatch, value):
    monkeypatch.setenv("QLAB_CHECKPOINTS", value)
    with pytest.raises(ValueError, match="QLAB_CHECKPOINTS is set but empty"):
        checkpoints.default_dir()
    assert cli.main(["doctor"]) == 1
    assert "QLAB_CHECKPOINTS is set but empty" in capsys.readouterr().out


def test_doctor_output_ends_with_its_verdict():
    """Run as a student does: no torch notice after the verdict, on stdout or stderr."""
    done = subprocess.run([sys.executable, "-m", "qlab.lab.tools.cli", "doctor"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("all good")
    assert done.stderr.strip() == "", done.stderr
