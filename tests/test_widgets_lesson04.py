"""Lesson 04's panels: the integer stepper panel and the shifted-calibration panel, on the
real lesson checkpoints; each readout is checked against the numbers function it shows."""

import re

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import qlab  # noqa: E402
from qlab.lab.kit import checkpoints, data
from qlab.lab.lessons.l04_static_quantization import numbers as l04_numbers
from qlab.lab.lessons.l04_static_quantization.panels import shift_panel, stepper_panel
from qlab.lab.lessons.l05_quantization_aware_training import numbers as l05_numbers

CALIB, CALIB_Y = data.digits_tensors("train")
X, Y = data.digits_tensors("test")


@pytest.fixture(scope="module")
def resnet_int8():
    model = checkpoints.load_model("resnet")
    model.fuse_model()
    prepared = qlab.prepare(model, qlab.minmax_qconfig)
    with torch.no_grad():
        prepared(CALIB[:128])
    return qlab.convert(prepared)


def _accumulator_range(panel) -> tuple[int, int]:
    m = re.search(r"accumulator in \[(-?\d+), (-?\d+)\]", panel.readout.value)
    assert m, panel.readout.value
    return int(m.group(1)), int(m.group(2))


def test_stepper_panel_reads_out_step_layer(resnet_int8):
    panel = stepper_panel(resnet_int8, X[:8], layer="layers.1.0.conv1", image=3)
    want = l04_numbers.step_layer(resnet_int8, "layers.1.0.conv1", X[3])
    assert _accumulator_range(panel) == (want["acc_min"], want["acc_max"])
    assert f"{want['m0'][0]:,}" in panel.readout.value
    assert "equal to torch.ao's: 100.00 %" in panel.readout.value  # float rule = torch.ao (fbgemm)
    assert set(panel.layer.options) == set(l04_numbers.int8_layers(resnet_int8))
    panel.image.value = 5  # the readout follows the slider
    want = l04_numbers.step_layer(resnet_int8, "layers.1.0.conv1", X[5])
    assert _accumulator_range(panel) == (want["acc_min"], want["acc_max"])
    panel.layer.value = "fc"
    assert panel.readout.value.startswith("fc (linear)")
    assert "image/png" in panel._repr_mimebundle_()


def test_stepper_panel_bad_input(resnet_int8):
    with pytest.raises(ValueError, match="not an int8 layer.*they are: conv1"):
        stepper_panel(resnet_int8, X[:4], layer="layer9")
    with pytest.raises(ValueError, match=r"image=4 is outside.*0\.\.3"):
        stepper_panel(resnet_int8, X[:4], image=4)
    with pytest.raises(ValueError, match="convert it first"):
        stepper_panel(checkpoints.load_model("resnet"), X[:4])
    with pytest.raises(ValueError, match="non-empty"):
        stepper_panel(resnet_int8, X[:0])


def test_shift_panel_measures_calibrate_shifted_once_per_amount(monkeypatch):
    resnet = checkpoints.load_model("resnet")
    calls = []
    real = l04_numbers.calibrate_shifted

    def counting(model, calib, x, y, shift, amount, *args, **kw):
        calls.append((shift, amount))
        return real(model, calib, x, y, shift, amount, *args, **kw)

    monkeypatch.setattr(l04_numbers, "calibrate_shifted", counting)
    x, y = X[:64], Y[:64]
    panel = shift_panel({"ResNet": resnet}, (CALIB, CALIB_Y), x, y, amount=1.0)
    got = float(re.search(r"int8 accuracy ResNet (\d+\.\d) %", panel.readout.value).group(1))
    assert got == pytest.approx(100 * real(resnet, (CALIB, CALIB_Y), x, y, "brightness", 1.0), abs=0.05)
    assert got < 50  # calibrating on brighter images breaks the int8 model (measured: 23 %)
    n = len(calls)
    panel.figure()
    assert len(calls) == n  # every amount is measured once
    panel.shift.value = "noise"  # the slider takes the new shift's range and its "no shift" value
    assert (panel.amount.min, panel.amount.max, panel.amount.value) == (0.0, 2.0, 0.0)
    assert panel.readout.value.startswith("noise a = 0.00")
    panel.shift.value = "contrast"
    assert (panel.amount.min, panel.amount.max, panel.amount.value) == (0.25, 4.0, 1.0)


def test_shift_panel_bad_input():
    resnet = checkpoints.load_model("resnet")
    with pytest.raises(ValueError, match=r"amount for 'brightness' must be in \[-3.0, 3.0\]"):
        shift_panel({"ResNet": resnet}, CALIB, X[:8], Y[:8], amount=5.0)
    with pytest.raises(ValueError, match="shift must be one of"):
        shift_panel({"ResNet": resnet}, CALIB, X[:8], Y[:8], shift="one_class", amount=1)
    with pytest.raises(ValueError, match="calibration set is empty"):
        shift_panel({"ResNet": resnet}, CALIB[:0], X[:8], Y[:8])
    with pytest.raises(ValueError, match="non-empty dict"):
        shift_panel({}, CALIB, X[:8], Y[:8])


def test_lesson05_ste_panel_follows_its_sliders():
    from qlab.lab.lessons.l05_quantization_aware_training.panels import ste_panel

    panel = ste_panel(bits=3, range_max=1.0)
    step3 = float(re.search(r"step ([0-9.]+)", panel.readout.value).group(1))
    panel.bits.value = 5
    step5 = float(re.search(r"step ([0-9.]+)", panel.readout.value).group(1))
    assert step5 == pytest.approx(step3 * 7 / 31, rel=1e-3)  # 2 / (2**bits - 1) of the range
    with pytest.raises(ValueError, match=r"bits=9 is outside"):
        ste_panel(bits=9)


def test_lesson05_qat_curve_panel_measures_the_recorded_int8_model():
    from qlab.lab.lessons.l05_quantization_aware_training.panels import qat_curve_panel

    panel = qat_curve_panel("resnet", 2)
    with torch.no_grad():
        acc = float((l05_numbers.load_int8("resnet", 2)(X).argmax(1) == Y).float().mean())
    assert f"QAT {100 * acc:.1f} %" in panel.readout.value
    assert f"PTQ {100 * l05_numbers.ptq_accuracy('resnet', 2, 8):.1f} %" in panel.readout.value
    with pytest.raises(ValueError, match="recorded widths"):
        qat_curve_panel("resnet", 5)
