"""Lesson models: shapes, fusion that keeps the numbers, and the sha256-verified MiniLM."""

import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from qlab.lab import models
from qlab.lab.checkpoints import ChecksumError


@pytest.mark.parametrize("build", [models.resnet, models.mobilenet_v2])
def test_cnn_shapes_and_fusion_keeps_outputs(build):
    model = build().eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.fuse_model()
        after = model(x)
    assert before.shape == (4, 10)
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # every BN was folded
    assert not any(isinstance(m, nn.ReLU6) for m in model.modules())


def test_cnns_are_small_and_quantizable():
    resnet, mobilenet = models.resnet(), models.mobilenet_v2()
    for m in (resnet, mobilenet):
        assert hasattr(m, "quant") and hasattr(m, "dequant")
        assert sum(p.numel() for p in m.parameters()) * 4 <= 3_000_000
    assert any(type(m).__name__ == "QuantizableBasicBlock" for m in resnet.modules())
    assert type(mobilenet).__name__ == "QuantizableMobileNetV2"
    with pytest.raises(ValueError, match="width_mult"):
        models.mobilenet_v2(width_mult=1.0)


def test_charlstm_shapes_state_and_seeded_generation():
    model = models.CharLSTM(vocab_size=97).eval()
    assert isinstance(model.lstm, nn.LSTM) and model.lstm.num_layers == 2
    logits, (h, c) = model(torch.randint(0, 97, (3, 17)))
    assert logits.shape == (3, 17, 97) and h.shape == (2, 3, 192) and c.shape == h.shape
    prompt = torch.tensor([5, 6, 7])
    a, b = model.generate(prompt, 20, seed=1), model.generate(prompt, 20, seed=1)
    assert a.shape == (20,) and torch.equal(a, b)


# ---------------------------------------------------------------------- MiniLM


def test_minilm_files_match_the_official_sha256():
    folder = models.verify_minilm()
    assert (folder / "model.safetensors").stat().st_size > 80_000_000


def test_minilm_weights_are_real_and_need_no_transformers():
    code = (
        "import sys; from qlab.lab.models import minilm_weights; w = minilm_weights(); "
        "q = w['encoder.layer.0.attention.self.query.weight']; "
        "assert q.shape == (384, 384) and q.dtype.is_floating_point; "
        "assert len([k for k in w if k.startswith('encoder.layer.')]) == 6 * 16; "
        "assert 'transformers' not in sys.modules and 'sentence_transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", sorted(models.MINILM_SHA256))
def test_minilm_tampered_file_is_named(tmp_path, name):
    src = models.minilm_dir()
    for other in models.MINILM_SHA256:
        (tmp_path / other).symlink_to(src / other)
    (tmp_path / name).unlink()
    if name == "model.safetensors":
        (tmp_path / name).write_bytes(b"not the weights")  # 90 MB is too big to copy in a test
    else:
        blob = bytearray((src / name).read_bytes())
        blob[len(blob) // 2] ^= 1  # flip one bit
        (tmp_path / name).write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match=name):
        models.verify_minilm(tmp_path)
    if name == "model.safetensors":
        with pytest.raises(ChecksumError, match=name):
            models.minilm_weights(tmp_path)


def test_minilm_missing_file_is_named(tmp_path):
    shutil.copy(models.minilm_dir() / "config.json", tmp_path / "config.json")
    with pytest.raises(ChecksumError, match="missing"):
        models.verify_minilm(tmp_path)


def test_load_minilm_encodes_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = models.load_minilm()
    emb = model.encode(["Quantization maps floats to integers.", "The cook measures the seasoning."],
                       convert_to_tensor=True)  # fmt: skip
    assert emb.shape == (2, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-4)  # the model ends with Normalize
