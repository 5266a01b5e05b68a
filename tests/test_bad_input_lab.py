"""Bad input to the classroom wing (issue 16): a clear error naming the argument and what is allowed,
or the correct result. The MiniLM cases are in test_lab_models.py, the checkers' in test_exercises.py."""

import functools

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from qlab import observers as O  # noqa: E402
from qlab.lab.kit import checkpoints
from qlab.lab.kit.integrity import read_manifest, sha256_file, write_manifest
from qlab.lab.lessons.l01_quantization_math.panels import quantization_panel
from qlab.lab.lessons.l02_observers_and_calibration.numbers import score_observers
from qlab.lab.lessons.l02_observers_and_calibration.panels import outlier_panel


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(256) * 0.1


# ---------------------------------------------------------------------- quantization_panel


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"bits": 9}, r"bits=9 is outside the panel's range; bits must be in 2\.\.8"),
        ({"bits": 1}, r"bits=1 is outside the panel's range; bits must be in 2\.\.8"),
        ({"clip": 0}, r"clip=0 is outside the panel's range; clip must be in 0\.05\.\.1\.0"),
        ({"clip": 1.5}, r"clip=1\.5 is outside the panel's range; clip must be in 0\.05\.\.1\.0"),
        ({"scheme": "asym"}, r"scheme must be one of \('symmetric', 'affine'\), got 'asym'"),
    ],
)
def test_quantization_panel_refuses_settings_its_sliders_would_clamp(x, setting, message):
    with pytest.raises(ValueError, match=message):
        quantization_panel(x, **setting)


def test_quantization_panel_bits_must_be_an_int(x):
    with pytest.raises(TypeError, match=r"bits must be an int in 2\.\.8, got float"):
        quantization_panel(x, bits=4.0)


def test_quantization_panel_refuses_an_empty_tensor():
    with pytest.raises(ValueError, match=r"x is empty \(shape \(0,\)\); the panel needs at least one value"):
        quantization_panel(torch.empty(0))


def test_quantization_panel_refuses_nan(x):
    x[3] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf; the panel needs finite values"):
        quantization_panel(x)


@pytest.mark.parametrize("convert", [lambda t: t.numpy(), lambda t: t.tolist(), lambda t: t.double()])
def test_quantization_panel_accepts_numpy_lists_and_float64(x, convert):
    expected = quantization_panel(x).readout.value
    assert quantization_panel(convert(x)).readout.value == expected


def test_quantization_panel_refuses_what_is_not_numbers():
    with pytest.raises(TypeError, match="x must be a tensor, numpy array or list of numbers, got str"):
        quantization_panel("weights")
    with pytest.raises(TypeError, match="got ndarray"):
        quantization_panel(np.array(["a", "b"]))


# ---------------------------------------------------------------------- outlier_panel


def test_outlier_panel_wants_observer_factories_not_instances(x):
    with pytest.raises(TypeError, match=r"observers\['mm'\] is a MinMaxObserver object; pass the class "
                                        r"or functools\.partial"):  # fmt: skip
        outlier_panel(x, {"mm": O.MinMaxObserver()})
    with pytest.raises(TypeError, match=r"observers\['mm'\] is a MinMaxObserver object"):
        score_observers(x, {"mm": O.MinMaxObserver()})
    with pytest.raises(TypeError, match="observers must be a dict of name -> observer class, got list"):
        outlier_panel(x, [O.MinMaxObserver])
    outlier_panel(x, {"mm": O.MinMaxObserver, "p": functools.partial(O.PercentileObserver)})  # fine


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"outliers": 21}, r"outliers=21 is outside the panel's range; outliers must be in 0\.\.20"),
        ({"outliers": -1}, r"outliers=-1 is outside the panel's range; outliers must be in 0\.\.20"),
        ({"size": 0.5}, r"size=0\.5 is outside the panel's range; size must be in 1\.0\.\.50\.0"),
    ],
)
def test_outlier_panel_refuses_settings_its_sliders_would_clamp(x, setting, message):
    with pytest.raises(ValueError, match=message):
        outlier_panel(x, {"MinMax": O.MinMaxObserver}, **setting)


def test_score_observers_needs_a_batch():
    with pytest.raises(ValueError, match="x is an empty list of batches"):
        score_observers([], {"MinMax": O.MinMaxObserver})


# ---------------------------------------------------------------------- checkpoints


@pytest.fixture
def saved(tmp_path):
    """A tiny CharLSTM checkpoint in an empty folder."""
    config = {"vocab_size": 97, "embed_dim": 8, "hidden": 8}
    checkpoints.save("charlstm", checkpoints.build("charlstm", config), config, tmp_path)
    return tmp_path


def test_a_malformed_manifest_line_is_named(saved):
    manifest = saved / "MANIFEST"
    manifest.write_text(manifest.read_text() + "resnet.pt\n")
    message = (r"MANIFEST, line 2: 'resnet.pt' is not a manifest line; each line must be "
               r"'<sha256: 64 lowercase hex digits>  <file name>'")
    with pytest.raises(ValueError, match=message):
        checkpoints.load("charlstm", saved)


def test_a_manifest_written_by_sha256sum_reads(saved):
    """sha256sum's binary-mode marker ('*') and comments are part of the format."""
    digest = sha256_file(saved / "charlstm.pt")
    (saved / "MANIFEST").write_text(f"# made by sha256sum -b\n{digest} *charlstm.pt\n")
    assert read_manifest(saved) == {"charlstm.pt": digest}


def _write_checkpoint(folder, obj):
    torch.save(obj, folder / "resnet.pt")
    write_manifest({"resnet.pt": sha256_file(folder / "resnet.pt")}, folder)


def test_a_checkpoint_that_holds_a_list_is_refused(tmp_path):
    _write_checkpoint(tmp_path, [1, 2, 3])
    with pytest.raises(ValueError, match=r"resnet\.pt holds a list; a lesson checkpoint is a dict with keys "
                                         r"\('name', 'config', 'state_dict'\)"):  # fmt: skip
        checkpoints.load_model("resnet", tmp_path)


def test_a_checkpoint_without_its_keys_is_refused(tmp_path):
    _write_checkpoint(tmp_path, {"state_dict": {}})
    with pytest.raises(ValueError, match=r"holds a dict with keys \['state_dict'\]"):
        checkpoints.load("resnet", tmp_path)


def test_a_resnet_config_with_mismatched_stages_is_named(tmp_path):
    config = {"widths": (16, 32, 64), "blocks": (2, 2)}
    _write_checkpoint(tmp_path, {"name": "resnet", "config": config, "state_dict": {}})
    with pytest.raises(ValueError, match=r"widths \(16, 32, 64\) and blocks \(2, 2\) must have the same "
                                         r"length: one width and one block count per stage"):  # fmt: skip
        checkpoints.load_model("resnet", tmp_path)


def test_a_config_with_unknown_keys_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"config of 'resnet' has unknown keys \['depth'\]; "
                                         r"allowed: \['num_classes', 'widths', 'blocks'\]"):  # fmt: skip
        checkpoints.build("resnet", {"depth": 18})
    with pytest.raises(TypeError, match="config of 'resnet' must be a dict of keywords, not list"):
        checkpoints.build("resnet", [16, 32, 64])


def test_recorded_metrics_of_an_unknown_model_names_the_recorded_ones():
    with pytest.raises(ValueError, match=r"METRICS\.json has no metrics for 'vgg'; recorded: "
                                         r"\['charlstm', 'mobilenet_v2', 'resnet'\]"):  # fmt: skip
        checkpoints.recorded_metrics("vgg")
