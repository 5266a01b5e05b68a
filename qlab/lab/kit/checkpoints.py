"""Trained fp32 lesson checkpoints, checked against a sha256 manifest before they are read.

    load_model("resnet")     the eval-mode model with its trained weights (also "mobilenet_v2", "charlstm")
    load("resnet")           the raw checkpoint dict: {"name", "config", "state_dict"}
    recorded_metrics()       what training measured, from METRICS.json (test accuracy, bits per char)
    save(name, model, cfg)   write data/checkpoints/<name>.pt and record its sha256 in MANIFEST

MANIFEST has `sha256sum` format ("<hex>  <file>" a line), so `sha256sum -c MANIFEST` checks it too.
Files are read with torch.load(weights_only=True): tensors and plain containers only, no pickled code.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
from torch import nn

from . import models
from .integrity import MANIFEST, ChecksumError, read_manifest, sha256_file, verify_sha256, write_manifest

NAMES = ("resnet", "mobilenet_v2", "charlstm")


BUILDERS = {"resnet": models.resnet, "mobilenet_v2": models.mobilenet_v2, "charlstm": models.CharLSTM}


KEYS = ("name", "config", "state_dict")


def default_dir() -> Path:
    """The repository's data/checkpoints, or $QLAB_CHECKPOINTS (ValueError if it is set but empty)."""
    folder = os.environ.get("QLAB_CHECKPOINTS")
    if folder is not None and not folder.strip():
        raise ValueError("QLAB_CHECKPOINTS is set but empty: unset it to use the repository's "
                         "data/checkpoints, or set it to the folder that holds the checkpoints and MANIFEST")
    repo = Path(__file__).resolve().parents[3]
    return Path(folder) if folder is not None else repo / "data" / "checkpoints"


def save(name: str, model: nn.Module, config: dict, directory: str | os.PathLike | None = None) -> Path:
    """Save model's fp32 state_dict and the config that rebuilds it; record the sha256 in MANIFEST."""
    directory = Path(directory or default_dir())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pt"
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"name": name, "config": dict(config), "state_dict": state}, path)
    entries = read_manifest(directory) if (directory / MANIFEST).is_file() else {}
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
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or set(ckpt) != set(KEYS):
        held = f"a dict with keys {sorted(ckpt)}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise ValueError(f"{path} holds {held}; a lesson checkpoint is a dict with keys {KEYS}, "
                         "as save() writes")
    return ckpt


def build(name: str, config: dict) -> nn.Module:
    """An untrained model of the given name and config (the constructors of qlab.lab.kit.models)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {NAMES}")
    if not isinstance(config, dict):
        raise TypeError(f"config of {name!r} must be a dict of keywords, not {type(config).__name__}")
    builder = BUILDERS[name]
    allowed = list(inspect.signature(builder).parameters)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"config of {name!r} has unknown keys {unknown}; allowed: {allowed}")
    return builder(**config)


def load_model(name: str, directory: str | os.PathLike | None = None) -> nn.Module:
    """The trained model `name` ("resnet", "mobilenet_v2" or "charlstm") in eval mode, fp32."""
    ckpt = load(name, directory)
    model = build(ckpt["name"], ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def recorded_metrics(name: str | None = None, directory: str | os.PathLike | None = None) -> dict:
    """The metrics `make checkpoints` wrote to METRICS.json: all of them, or one model's."""
    path = Path(directory or default_dir()) / "METRICS.json"
    table = json.loads(path.read_text())
    if name is None:
        return table
    if name not in table:
        recorded = [k for k in table if not k.startswith("_")]
        raise ValueError(f"{path} has no metrics for {name!r}; recorded: {recorded}")
    return table[name]


def verify_all(directory: str | os.PathLike | None = None) -> list[str]:
    """Check every file in the manifest; one 'name: ok (size)' line each. Raises on the first bad one,
    and if the manifest does not list every lesson checkpoint (NAMES)."""
    directory = Path(directory or default_dir())
    entries = read_manifest(directory)
    missing = [f"{n}.pt" for n in NAMES if f"{n}.pt" not in entries]
    if missing:
        listed = f"does not list {', '.join(missing)}" if entries else "lists no checkpoints"
        raise ValueError(f"{directory / MANIFEST} {listed}; the lessons need "
                         f"{', '.join(f'{n}.pt' for n in NAMES)}: run `make checkpoints`")
    lines = []
    for name, digest in sorted(entries.items()):
        path = verify_sha256(directory / name, digest)
        lines.append(f"{name}: sha256 ok ({path.stat().st_size / 1e6:.2f} MB)")
    return lines
