"""Checkpoints: sha256 manifest, tamper detection, weights_only loading, the committed models."""

import pickle
import shutil
import time

import pytest
import torch

from qlab.lab import checkpoints, data, train
from qlab.lab.checkpoints import ChecksumError

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
    assert name == "charlstm.pt" and digest == checkpoints.sha256_file(folder / name)


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
    checkpoints.write_manifest({"charlstm.pt": checkpoints.sha256_file(tmp_path / "charlstm.pt")}, tmp_path)
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
        assert checkpoints.sha256_file(COMMITTED / file) == digest


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
def test_committed_cnns_load_fast_and_reach_their_accuracy(name):
    start = time.perf_counter()
    model = checkpoints.load_model(name)
    assert time.perf_counter() - start < 2.0
    acc = train.evaluate(model, data.digits_tensors("test"))
    assert acc >= {"resnet": 0.98, "mobilenet_v2": 0.96}[name]
    assert abs(acc - recorded(name)["test_accuracy"]) <= 1 / 360 + 1e-9  # at most one image apart


def test_committed_charlstm_bits_per_char():
    start = time.perf_counter()
    model = checkpoints.load_model("charlstm")
    assert time.perf_counter() - start < 2.0
    bpc = train.bits_per_char(model, data.text_splits()["val"])
    assert bpc == pytest.approx(recorded("charlstm")["val_bpc"], abs=0.01)
    assert bpc < 3.0  # far below log2(97) = 6.6 bits for a model that knows nothing


def test_fit_and_evaluate_smoke():
    torch.manual_seed(0)
    model = checkpoints.build("resnet", {"widths": (4, 4, 4), "blocks": (1, 1, 1)})
    x, y = data.digits_tensors("val")
    dl = data.loader(torch.utils.data.TensorDataset(x[:64], y[:64]), 32, shuffle=True, augment=True)
    losses = train.fit(model, dl, epochs=1, lr=0.05, progress=False)
    assert len(losses) == 1 and losses[0] > 0
    assert 0.0 <= train.evaluate(model, (x[:64], y[:64])) <= 1.0


def test_fit_lm_smoke():
    model = checkpoints.build("charlstm", {"vocab_size": 97, "embed_dim": 8, "hidden": 8})
    ids = data.text_splits()["val"][:4 * 16 * 4 + 1]
    losses = train.fit_lm(model, ids, epochs=1, batch_size=4, seq_len=16, progress=False)
    assert len(losses) == 1 and train.bits_per_char(model, ids, batch_size=4, seq_len=16) > 0


def test_train_cli_needs_a_model_name():
    with pytest.raises(SystemExit):
        train.main([])
    with pytest.raises(SystemExit):
        train.main(["vgg"])
