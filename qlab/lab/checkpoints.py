"""Trained fp32 lesson checkpoints, checked against a sha256 manifest before they are read.

    load_model("resnet")     the eval-mode model with its trained weights (also "mobilenet_v2", "charlstm")
    load("resnet")           the raw checkpoint dict: {"name", "config", "state_dict"}
    recorded_metrics()       what training measured, from METRICS.json (test accuracy, bits per char)
    save(name, model, cfg)   write data/checkpoints/<name>.pt and record its sha256 in MANIFEST

MANIFEST has `sha256sum` format ("<hex>  <file>" a line), so `sha256sum -c MANIFEST` checks it too.
Files are read with torch.load(weights_only=True): tensors and plain containers only, no pickled code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

NAMES = ("resnet", "mobilenet_v2", "charlstm")
MANIFEST = "MANIFEST"


class ChecksumError(RuntimeError):
    """A file's sha256 is not the one we expect: it is corrupted, tampered with or another version."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> Path:
    """Raise ChecksumError (naming the file) unless the file exists and has this sha256."""
    path = Path(path)
    if not path.is_file():
        raise ChecksumError(f"{path} is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"sha256 mismatch for {path}: expected {expected}, got {actual}")
    return path


def default_dir() -> Path:
    """The repository's data/checkpoints, or $QLAB_CHECKPOINTS."""
    repo = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("QLAB_CHECKPOINTS", repo / "data" / "checkpoints"))


def read_manifest(directory: str | os.PathLike | None = None) -> dict[str, str]:
    """{file name: sha256} from directory/MANIFEST."""
    path = Path(directory or default_dir()) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint manifest at {path}; `make checkpoints` writes it")
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            entries[name.lstrip("*")] = digest
    return entries


def write_manifest(entries: dict[str, str], directory: str | os.PathLike | None = None) -> Path:
    """Write {file name: sha256} to directory/MANIFEST, sorted by name."""
    path = Path(directory or default_dir()) / MANIFEST
    path.write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items())))
    return path


def save(name: str, model: nn.Module, config: dict, directory: str | os.PathLike | None = None) -> Path:
    """Save model's fp32 state_dict and the config that rebuilds it; record the sha256 in MANIFEST."""
    directory = Path(directory or default_dir())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pt"
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"name": name, "config": dict(config), "state_dict": state}, path)
    try:
        entries = read_manifest(directory)
    except FileNotFoundError:
        entries = {}
    entries[path.name] = sha256_file(path)
    write_manifest(entries, directory)
    return path


def load(name: str, directory: str | os.PathLike | None = None) -> dict:
    """The checkpoint dict of `name`, after its sha256 matches MANIFEST (else ChecksumError)."""
    directory = Path(directory or default_dir())
    file = f"{name}.pt"
    expected = read_manifest(directory).get(file)
    if expected is None:
        raise ChecksumError(f"{file} is not listed in {directory / MANIFEST}; known: {NAMES}")
    path = verify_sha256(directory / file, expected)
    return torch.load(path, map_location="cpu", weights_only=True)


def build(name: str, config: dict) -> nn.Module:
    """An untrained model of the given name and config (the constructors of qlab.lab.models)."""
    from . import models

    builders = {"resnet": models.resnet, "mobilenet_v2": models.mobilenet_v2, "charlstm": models.CharLSTM}
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; known: {NAMES}")
    return builders[name](**config)


def load_model(name: str, directory: str | os.PathLike | None = None) -> nn.Module:
    """The trained model `name` ("resnet", "mobilenet_v2" or "charlstm") in eval mode, fp32."""
    ckpt = load(name, directory)
    model = build(ckpt["name"], ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def recorded_metrics(name: str | None = None, directory: str | os.PathLike | None = None) -> dict:
    """The metrics `make checkpoints` wrote to METRICS.json: all of them, or one model's."""
    table = json.loads((Path(directory or default_dir()) / "METRICS.json").read_text())
    return table if name is None else table[name]


def verify_all(directory: str | os.PathLike | None = None) -> list[str]:
    """Check every file in the manifest; one 'name: ok (size)' line each. Raises on the first bad one."""
    directory = Path(directory or default_dir())
    lines = []
    for name, digest in sorted(read_manifest(directory).items()):
        path = verify_sha256(directory / name, digest)
        lines.append(f"{name}: sha256 ok ({path.stat().st_size / 1e6:.2f} MB)")
    return lines
