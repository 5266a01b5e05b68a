"""Checkpoints: sha256 manifest, tamper detection, weights_only loading, the committed models;
and the training loops that made them."""

import hashlib
import pickle
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qlab.lab.kit import checkpoints, data
from qlab.lab.kit import train as kit_train
from qlab.lab.kit.integrity import ChecksumError, sha256_file, write_manifest
from qlab.lab.tools import train as tools_train

COMMITTED = checkpoints.default_dir()


def recorded(name: str) -> dict:
    """What `make checkpoints` measured for this model (data/checkpoints/METRICS.json)."""
    return checkpoints.recorded_metrics(name)


@pytest.fixture
def saved(tmp_path):
    """A tiny CharLSTM saved into an empty folder, as `make checkpoints` would."""
    model = checkpoints.build("charlstm", {"vocab_size": 97, "embed_dim": 8, "hidden": 8})
    checkpoints.save("charlstm", model, {"vocab_size": 97, "embed_dim": 8, "hidden": 8}, tmp_path)
    return tmp_path, model


def test_save_then_load_model_roundtrip(saved):
    folder, model = saved
    assert (folder / "MANIFEST").read_text().endswith("  charlstm.pt\n")
    loaded = checkpoints.load_model("charlstm", folder)
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_manifest_is_sha256sum_format(saved):
    folder, _ = saved
    digest, name = (folder / "MANIFEST").read_text().split()
    assert name == "charlstm.pt" and digest == hashlib.sha256((folder / name).read_bytes()).hexdigest()


def test_one_flipped_byte_is_detected(saved):
    folder, _ = saved
    blob = bytearray((folder / "charlstm.pt").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (folder / "charlstm.pt").write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match="sha256 mismatch for .*charlstm.pt"):
        checkpoints.load("charlstm", folder)


def test_missing_file_and_unlisted_name_are_clear(saved):
    folder, _ = saved
    with pytest.raises(ChecksumError, match="not listed"):
        checkpoints.load("resnet", folder)
    (folder / "charlstm.pt").unlink()
    with pytest.raises(ChecksumError, match="missing"):
        checkpoints.load("charlstm", folder)
    with pytest.raises(FileNotFoundError, match="make checkpoints"):
        checkpoints.load("charlstm", folder / "nowhere")


class Payload:
    """Anything that is not a tensor or a plain container: weights_only must refuse to build it."""


def test_loading_is_weights_only(tmp_path):
    evil = {"name": "charlstm", "config": {}, "state_dict": {}, "extra": Payload()}
    torch.save(evil, tmp_path / "charlstm.pt")
    write_manifest({"charlstm.pt": sha256_file(tmp_path / "charlstm.pt")}, tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        checkpoints.load("charlstm", tmp_path)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="resnet"):
        checkpoints.build("vgg", {})


# ---------------------------------------------------------------------- the committed checkpoints


def test_committed_manifest_lists_small_verified_files():
    entries = checkpoints.read_manifest(COMMITTED)
    assert sorted(entries) == sorted(f"{n}.pt" for n in checkpoints.NAMES)
    for file, digest in entries.items():
        assert (COMMITTED / file).stat().st_size <= 3_000_000
        assert sha256_file(COMMITTED / file) == digest


def test_a_tampered_copy_of_a_committed_checkpoint_fails(tmp_path):
    shutil.copy(COMMITTED / "MANIFEST", tmp_path)
    shutil.copy(COMMITTED / "resnet.pt", tmp_path)
    checkpoints.load("resnet", tmp_path)  # the untouched copy loads
    blob = bytearray((tmp_path / "resnet.pt").read_bytes())
    blob[-100] ^= 0xFF
    (tmp_path / "resnet.pt").write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match="resnet.pt"):
        checkpoints.load("resnet", tmp_path)


@pytest.mark.parametrize("name", ["resnet", "mobilenet_v2"])
def test_committed_cnns_reach_their_recorded_accuracy(name):
    """The loaded weights are the trained ones: the test accuracy is METRICS.json's, to its 4 decimals."""
    acc = kit_train.evaluate(checkpoints.load_model(name), data.digits_tensors("test"))
    assert acc >= {"resnet": 0.98, "mobilenet_v2": 0.96}[name]
    assert acc == pytest.approx(recorded(name)["test_accuracy"], abs=5e-5)


def test_committed_charlstm_bits_per_char():
    bpc = kit_train.bits_per_char(checkpoints.load_model("charlstm"), data.text_splits()["val"])
    assert bpc == pytest.approx(recorded("charlstm")["val_bpc"], abs=5e-5)
    assert bpc < 3.0  # far below log2(97) = 6.6 bits for a model that knows nothing


class Constant(nn.Module):
    """Predicts class 0 for every input."""

    def forward(self, x):
        return torch.zeros(len(x), 10).index_fill_(1, torch.tensor([0]), 1.0)


def test_evaluate_counts_correct_predictions():
    x, y = data.digits_tensors("val")
    expected = (y == 0).float().mean().item()
    assert 0 < expected < 1
    assert kit_train.evaluate(Constant(), (x, y), batch_size=7) == pytest.approx(expected)


def test_fit_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = checkpoints.build("resnet", {"widths": (4, 4, 4), "blocks": (1, 1, 1)})
    x, y = data.digits_tensors("val")
    x, y = x[:64], y[:64]

    def loss():
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    before = loss()
    dl = data.loader(torch.utils.data.TensorDataset(x, y), 32, shuffle=True)
    losses = kit_train.fit(model, dl, epochs=20, lr=0.1, progress=False)
    assert len(losses) == 20
    assert loss() < 0.8 * before


def test_fit_lm_lowers_bits_per_char():
    torch.manual_seed(0)
    model = checkpoints.build("charlstm", {"vocab_size": 97, "embed_dim": 8, "hidden": 16})
    ids = data.text_splits()["val"][: 4 * 16 * 5 + 1]  # 5 chunks of 4 x 16 characters a epoch
    before = kit_train.bits_per_char(model, ids, batch_size=4, seq_len=16)
    losses = kit_train.fit_lm(model, ids, epochs=4, batch_size=4, seq_len=16, lr=1e-2, progress=False)
    assert len(losses) == 4
    assert kit_train.bits_per_char(model, ids, batch_size=4, seq_len=16) < before - 1


def test_one_cycle_spans_exactly_the_steps_asked_for():
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    sched = kit_train.one_cycle(opt, 0.1, steps=8, warmup=0.25)  # warm-up: steps 0..1, annealing: 2..7
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(7):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[1] == pytest.approx(0.1) == max(lrs)
    assert lrs[-1] == pytest.approx(0.1 / 25e4)  # the 8th step ends the cycle, even in a short run


def test_one_cycle_refuses_a_one_step_warm_up():
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"steps=4 with warmup=0.25 is a one-step warm-up"):
        kit_train.one_cycle(opt, 0.1, steps=4, warmup=0.25)


def test_train_cli_needs_a_model_name():
    with pytest.raises(SystemExit):
        tools_train.main([])
    with pytest.raises(SystemExit):
        tools_train.main(["vgg"])
