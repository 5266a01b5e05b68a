"""Lesson models: shapes, fusion that keeps the numbers, and the sha256-verified MiniLM."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from qlab.lab.kit import models
from qlab.lab.kit.integrity import MINILM_SHA256, ChecksumError


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
        "import sys; from qlab.lab.kit.models import minilm_weights; w = minilm_weights(); "
        "q = w['encoder.layer.0.attention.self.query.weight']; "
        "assert q.shape == (384, 384) and q.dtype.is_floating_point; "
        "assert len([k for k in w if k.startswith('encoder.layer.')]) == 6 * 16; "
        "assert 'transformers' not in sys.modules and 'sentence_transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def minilm_copy(tmp_path):
    """A copy of the MiniLM folder's registered files (the 90 MB weights as a link)."""
    src = models.minilm_dir()
    for name in MINILM_SHA256:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if name == "model.safetensors":
            (tmp_path / name).symlink_to(src / name)
        else:
            shutil.copy(src / name, tmp_path / name)
    models.verify_minilm(tmp_path)  # the untouched copy passes
    return tmp_path


@pytest.mark.parametrize("name", sorted(MINILM_SHA256))
def test_minilm_tampered_file_is_named(minilm_copy, name):
    path = minilm_copy / name
    if name == "model.safetensors":
        path.unlink()
        path.write_bytes(b"not the weights")  # 90 MB is too big to copy in a test
    else:
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 1  # flip one bit
        path.write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match=f"sha256 mismatch for .*{name}"):
        models.verify_minilm(minilm_copy)
    if name == "model.safetensors":
        with pytest.raises(ChecksumError, match=name):
            models.minilm_weights(minilm_copy)


def test_minilm_without_modules_json_is_refused(minilm_copy):
    """Without modules.json the encoder would lose its Normalize step (issue 16)."""
    (minilm_copy / "modules.json").unlink()
    with pytest.raises(ChecksumError, match=r"modules\.json is missing"):
        models.load_minilm(minilm_copy)


def test_minilm_with_cls_pooling_is_refused(minilm_copy):
    """A pooling config switched to the CLS token gives other embeddings (issue 16)."""
    path = minilm_copy / "1_Pooling" / "config.json"
    config = json.loads(path.read_text())
    config["pooling_mode_cls_token"], config["pooling_mode_mean_tokens"] = True, False
    path.write_text(json.dumps(config, indent=2))
    with pytest.raises(ChecksumError, match=r"sha256 mismatch for .*1_Pooling/config\.json"):
        models.load_minilm(minilm_copy)


def test_minilm_registry_keeps_the_official_hashes():
    """The three hashes published for revision 1110a243 (DESIGN.md) are the registry's."""
    assert {k: MINILM_SHA256[k] for k in ("model.safetensors", "tokenizer.json", "config.json")} == {
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    }


LOAD_AND_TRACE = """
import json, sys
from pathlib import Path
from qlab.lab.kit import models
folder = str(models.minilm_dir())
opened = set()
sys.addaudithook(lambda event, args: event == "open" and isinstance(args[0], str)
                 and args[0].startswith(folder) and opened.add(args[0]))
model = models.load_minilm()
emb = model.encode(["Quantization maps floats to integers.", "The cook measures the seasoning."],
                   convert_to_tensor=True)
files = sorted(str(Path(f).relative_to(folder)) for f in opened if Path(f).is_file())
print(json.dumps({"shape": list(emb.shape), "norms": emb.norm(dim=1).tolist(), "files": files}))
"""


def test_load_minilm_encodes_offline_and_every_file_it_reads_is_verified():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", LOAD_AND_TRACE], check=True, capture_output=True,
                         text=True, env=env).stdout  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    assert result["shape"] == [2, 384]
    assert result["norms"] == pytest.approx([1.0, 1.0], abs=1e-4)  # the model ends with Normalize
    assert "model.safetensors" in result["files"] and "modules.json" in result["files"]
    assert set(result["files"]) <= set(MINILM_SHA256), "a file the encoder reads has no registered sha256"
