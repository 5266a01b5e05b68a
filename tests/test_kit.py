"""The kit's one-of-each helpers: the engine switch and warning filter, the argument checks, the
top-1 accuracy, torchvision's ReLU replacement done in the open; and the core's float32 rounding
and per-channel reshape."""

import math
import struct
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from qlab.lab.kit import models, torch_ao
from qlab.lab.kit.check import check_choice, check_int
from qlab.lab.kit.train import accuracy, evaluate, top1
from qlab.qtypes import along_axis, round_to_float32

# ---- torch_ao: the one engine switch and warning filter


def test_engine_sets_and_restores_the_engine():
    before = torch.backends.quantized.engine
    other = next(e for e in torch.backends.quantized.supported_engines if e not in (before, "none"))
    with torch_ao.engine(other):
        assert torch.backends.quantized.engine == other
    assert torch.backends.quantized.engine == before


def test_engine_restores_after_an_error_and_names_what_the_machine_has():
    before = torch.backends.quantized.engine
    with pytest.raises(KeyError), torch_ao.engine(torch_ao.PARITY_ENGINE):
        raise KeyError("inside the block")
    assert torch.backends.quantized.engine == before
    with pytest.raises(RuntimeError, match=r"no 'tpu' quantized engine here \(it has \["):
        with torch_ao.engine("tpu"):
            pass


def test_quiet_silences_torch_ao_notices_and_nothing_else():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with torch_ao.quiet():
            warnings.warn("torch.ao.quantization is deprecated and will be removed", DeprecationWarning,
                          stacklevel=1)
            warnings.warn("Please use quant_min and quant_max to specify the range", UserWarning,
                          stacklevel=1)
            warnings.warn("a student's own warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a student's own warning"]


# ---- check: the one argument check


@pytest.mark.parametrize("value, error, message", [
    (True, TypeError, r"n must be an int in 1\.\.4, got bool"),
    (2.0, TypeError, r"n must be an int in 1\.\.4, got float"),
    (5, ValueError, r"n=5 is out of range; n must be in 1\.\.4"),
])
def test_check_int_without_words(value, error, message):
    with pytest.raises(error, match=message):
        check_int("n", value, 1, 4)


@pytest.mark.parametrize("value", [True, 0, 1.5, "2", None])
def test_check_int_with_words_says_them(value):
    with pytest.raises(ValueError, match=rf"count must be an int >= 1, got {value!r}"):
        check_int("count", value, 1, what="an int >= 1")


def test_check_int_accepts_ints_of_any_kind_and_open_bounds():
    assert check_int("n", np.int64(3), 1, 4) == 3 and type(check_int("n", np.int64(3), 1, 4)) is int
    assert check_int("n", 10**9, 1) == 10**9 and check_int("n", -7, hi=0) == -7


def test_check_choice_both_wordings():
    assert check_choice("kind", "lstm", ("lstm", "linear")) == "lstm"
    with pytest.raises(ValueError, match=r"unknown kind 'gru'; allowed: 'lstm', 'linear'"):
        check_choice("kind", "gru", ("lstm", "linear"))
    with pytest.raises(ValueError, match=r"split must be one of \('a', 'b'\), got 'c'"):
        check_choice("split", "c", ("a", "b"), what="one of ('a', 'b')")


# ---- train: the one top-1 accuracy


def test_top1_accuracy_and_evaluate_agree_and_restore_the_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    with torch.no_grad():
        expected = top1(model.eval()(x), y)
    model.train()
    assert expected == pytest.approx(float((model.eval()(x).argmax(1) == y).float().mean()))
    model.train()
    assert accuracy(model, x, y) == expected and model.training  # eval inside, train restored
    assert accuracy(model, x, y, batch_size=7) == pytest.approx(expected, abs=1e-6)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    assert evaluate(model, loader) == pytest.approx(expected, abs=1e-6)
    assert evaluate(model, (x, y), batch_size=9) == pytest.approx(expected, abs=1e-6)


# ---- models: torchvision's private ReLU replacement, done in the open


def test_replace_relu_does_what_torchvision_does():
    from torchvision.models.quantization.utils import _replace_relu  # private: compared, never used

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(inplace=True),
                             nn.Sequential(nn.ReLU(inplace=True), nn.Hardtanh()), nn.LeakyReLU())

    ours, theirs = net(), net()
    models.replace_relu(ours)
    _replace_relu(theirs)
    assert [repr(m) for m in ours.modules()] == [repr(m) for m in theirs.modules()]
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(ours(x), theirs(x))


def test_lesson_cnns_have_no_relu6_and_fuse():
    m = models.mobilenet_v2()
    assert not any(type(c) is nn.ReLU6 for c in m.modules())
    r = models.resnet().eval()
    r.fuse_model()
    assert not any(isinstance(c, nn.BatchNorm2d) for c in r.modules())


# ---- the core: one float32 rounding, one per-channel reshape


@given(st.floats(allow_nan=False, allow_infinity=True, width=64))
def test_round_to_float32_is_numpy_and_torch(v):
    with np.errstate(over="ignore"):
        expected = float(np.float32(v))
    assert round_to_float32(v) == expected
    assert round_to_float32(v) == float(torch.tensor(v, dtype=torch.float32))


def test_round_to_float32_edges():
    big = struct.unpack("f", struct.pack("f", 3.4028234663852886e38))[0]
    assert round_to_float32(big) == big
    assert round_to_float32(1e39) == math.inf and round_to_float32(-1e39) == -math.inf
    assert round_to_float32(0.1) == float(np.float32(0.1)) != 0.1


@pytest.mark.parametrize("shape, axis", [((4, 5), 0), ((4, 5), 1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1)])
def test_along_axis_broadcasts_one_value_per_channel(shape, axis):
    x = torch.randn(shape)
    v = torch.arange(1.0, shape[axis] + 1)
    expected = torch.movedim(torch.movedim(x, axis, -1) * v, -1, axis)
    assert torch.equal(x * along_axis(v, x.dim(), axis), expected)


def test_along_axis_leaves_scalars_and_no_axis_alone():
    s = torch.tensor(2.0)
    assert along_axis(s, 4, 1) is s
    v = torch.ones(3)
    assert along_axis(v, 2, None) is v
