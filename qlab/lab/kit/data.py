"""Offline lesson data: real images and real text that ship with the installed packages.

    digits(split)               scikit-learn's 1,797 handwritten digits as 3x32x32 tensors (CNNs)
    digits_tensors(split)       the same split as two whole tensors (x, y), for quick evaluation
    loader(ds, augment=True)    seeded batches, with light shift/rotation augmentation for training
    text_corpus()               the prose of Python's own docs (pydoc_data.topics), ~465k chars
    CharVocab, text_splits()    character ids and a contiguous 90/5/5 train/val/test split (LSTM)
    lm_batches(ids, b, t)       (input, next-char target) chunks for truncated backprop
    sentences(n)                real English sentences from the same docs (BERT lesson)
    mnist(), cifar10()          optional, through torchvision; downloaded only on request, online

Every split is fixed by a seed and numpy's legacy RandomState, whose stream numpy keeps stable,
so the same images land in the same split on every machine and every run.
"""

from __future__ import annotations

import os
import re
import socket
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, default_collate

from .check import check_choice

SEED = 0


SPLITS = ("train", "val", "test")


DIGITS_FRACTIONS = (0.6, 0.2, 0.2)


IMAGE_SIZE = 32


def _check_split(split: str, allowed=SPLITS) -> str:
    return check_choice("split", split, allowed, what=f"one of {allowed}")


# ---------------------------------------------------------------------- digits


def digits_split_indices(seed: int = SEED, fractions=DIGITS_FRACTIONS) -> dict[str, np.ndarray]:
    """Indices into sklearn's digits for train/val/test: stratified, 60/20/20 of each class, seeded."""
    from sklearn.datasets import load_digits

    target = load_digits().target
    rng = np.random.RandomState(seed)
    parts = {s: [] for s in SPLITS}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(target == c))
        n_train = round(fractions[0] * len(idx))
        n_val = round(fractions[1] * len(idx))
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train : n_train + n_val])
        parts["test"].append(idx[n_train + n_val :])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


@lru_cache(maxsize=1)
def _digits_all() -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray], float, float]:
    """All 1,797 digits upsampled 8x8 -> 32x32 (bilinear), pixels in [0, 1]; train mean and std."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values are 0..16
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.long)
    idx = digits_split_indices()
    train = x[idx["train"]]
    return x, y, idx, float(train.mean()), float(train.std())


def digits_tensors(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(x [N, 3, 32, 32], y [N]) for one split, normalized as (x - mean) / std with train statistics.

    Three identical channels, because the CNNs take RGB input like their ImageNet siblings.
    """
    x, y, idx, mean, std = _digits_all()
    i = torch.from_numpy(idx[_check_split(split)])
    xs = ((x[i] - mean) / std).repeat(1, 3, 1, 1)
    return xs, y[i].clone()


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None, max_shift: int = 2,
                  max_degrees: float = 10.0) -> torch.Tensor:  # fmt: skip
    """Light augmentation of a batch [N, C, H, W]: each image shifted by up to 2 pixels and rotated
    by up to 10 degrees, borders repeated. One affine_grid for the whole batch, so it is cheap."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * max_degrees * torch.pi / 180
    shift = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).float()
    shift = shift * 2 / torch.tensor([w, h])  # pixels -> affine_grid's [-1, 1] coordinates
    cos, sin = torch.cos(angle), torch.sin(angle)
    rows = [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)]
    theta = torch.stack(rows, 1)  # [N, 2, 3]: rotation and translation
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


class Digits(Dataset):
    """One split of the digits as (image [3, 32, 32], label) pairs."""

    def __init__(self, split: str = "train"):
        self.split = split
        self.x, self.y = digits_tensors(split)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def digits(split: str = "train") -> Digits:
    """The offline image data set: sklearn's real handwritten digits (1,078/359/360 train/val/test)."""
    return Digits(split)


def loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = False, augment: bool = False,
           seed: int = SEED) -> DataLoader:  # fmt: skip
    """A single-process DataLoader whose shuffle order and augmentations are fixed by `seed`."""
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)

    def collate(items):
        x, y = default_collate(items)
        return (augment_batch(x, aug_gen) if augment else x), y

    return DataLoader(dataset, batch_size, shuffle=shuffle, generator=gen, num_workers=0, collate_fn=collate)


# ---------------------------------------------------------------------- text

# Typographic characters folded to ASCII, so the vocabulary is printable ASCII plus newline.
_ASCII_FOLD = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "..."})


@lru_cache(maxsize=1)
def text_corpus() -> str:
    """The English prose of Python's docs, shipped with CPython as pydoc_data.topics.

    Topics in sorted order, separated by a blank line; curly quotes and dashes folded to ASCII.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k].strip() for k in sorted(topics)).translate(_ASCII_FOLD)


class CharVocab:
    """Characters <-> ids. Fixed: id 0 is "unknown", then newline and printable ASCII (97 in all).

    Fixed rather than read from the corpus, so a checkpoint's embedding fits on every Python.
    """

    UNK = "\x00"
    chars = UNK + "\n" + "".join(chr(i) for i in range(32, 127))

    def __init__(self):
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Token ids [len(text)] (long); characters outside the vocabulary become 0."""
        return torch.tensor([self.stoi.get(ch, 0) for ch in text], dtype=torch.long)

    def decode(self, ids) -> str:
        """Text from ids; unknown characters print as '?'."""
        return "".join("?" if i == 0 else self.chars[i] for i in torch.as_tensor(ids).tolist())


@lru_cache(maxsize=1)
def _corpus_ids() -> torch.Tensor:
    return CharVocab().encode(text_corpus())


def text_splits(fractions=(0.9, 0.05, 0.05)) -> dict[str, torch.Tensor]:
    """Token ids of the corpus cut into contiguous train/val/test pieces (90/5/5 by default).

    Contiguous, not shuffled: a language model must be judged on text it has not seen.
    """
    ids = _corpus_ids()
    n_train = int(fractions[0] * len(ids))
    n_val = int(fractions[1] * len(ids))
    return {"train": ids[:n_train], "val": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}


def lm_batches(ids: torch.Tensor, batch_size: int = 32, seq_len: int = 128):
    """Yield (x, y) of shape [batch_size, <=seq_len], where y is x shifted one character ahead.

    The text is cut into batch_size parallel streams; chunk k+1 of a row continues chunk k,
    so an LSTM can carry its state from one chunk to the next (truncated backpropagation).
    """
    n = (len(ids) - 1) // batch_size
    if n < 1:
        raise ValueError(f"{len(ids)} tokens are too few for batch_size={batch_size}")
    x_all = ids[: n * batch_size].view(batch_size, n)
    y_all = ids[1 : n * batch_size + 1].view(batch_size, n)
    for i in range(0, n, seq_len):
        yield x_all[:, i : i + seq_len], y_all[:, i : i + seq_len]


_CODE_MARKS = (">>>", "::", "`", "*", "|", "=", "[", "{", "_", "\\", "#", "<", "...")


@lru_cache(maxsize=1)
def _all_sentences() -> tuple[str, ...]:
    """Every prose sentence in the corpus: 40-200 characters, capitalized, ending with a period,
    taken from unindented paragraphs, with no code markers; duplicates dropped, corpus order kept."""
    seen, out = set(), []
    for para in text_corpus().split("\n\n"):
        if para.startswith((" ", "\t")) or not para[:1].isalpha():
            continue  # code samples and grammar rules are indented or start with a symbol
        text = " ".join(para.split())
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
            ok = 40 <= len(s) <= 200 and s[0].isupper() and s.endswith(".")
            if ok and not any(m in s for m in _CODE_MARKS) and s not in seen:
                seen.add(s)
                out.append(s)
    return tuple(out)


def sentences(n: int | None = 256) -> list[str]:
    """n real sentences from Python's docs, spread evenly over the corpus (all of them if n is None)."""
    every = _all_sentences()
    if n is None:
        return list(every)
    if not 0 < n <= len(every):
        raise ValueError(f"n must be in 1..{len(every)}, got {n}")
    step = len(every) / n
    return [every[int(k * step)] for k in range(n)]


# ---------------------------------------------------------------------- optional torchvision sets


class DatasetUnavailableError(RuntimeError):
    """An online-only data set is not on disk and cannot be downloaded now."""


OFFLINE_DEFAULT = "qlab.lab.kit.data.digits()"


_HOSTS = {"MNIST": "ossci-datasets.s3.amazonaws.com", "CIFAR10": "www.cs.toronto.edu"}


_NORMALIZE = {  # (mean, std) per channel over the training set
    "MNIST": ((0.1307,), (0.3081,)),
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def default_root() -> Path:
    """Where optional data sets live: $QLAB_DATA, else ~/.cache/qlab/datasets."""
    return Path(os.environ.get("QLAB_DATA", Path.home() / ".cache" / "qlab" / "datasets"))


def is_online(host: str, timeout: float = 3.0) -> bool:
    """True if a TCP connection to host:443 opens (each data set asks its own host, _HOSTS);
    QLAB_OFFLINE=1 forces False."""
    if os.environ.get("QLAB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _image_transform(name: str):
    """To a normalized [3, 32, 32] tensor: MNIST's 28x28 is padded by 2 and made three-channel."""
    from torchvision import transforms

    mean, std = _NORMALIZE[name]
    steps = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if name == "MNIST":
        steps += [transforms.Pad(2, fill=-mean[0] / std[0]), transforms.Lambda(lambda t: t.expand(3, -1, -1))]
    return transforms.Compose(steps)


def _torchvision_dataset(name: str, split: str, root, download: bool):
    """Load torchvision's `name` from root if it is there; download it only if asked and online."""
    import torchvision.datasets as tvd

    cls, train = getattr(tvd, name), _check_split(split, ("train", "test")) == "train"
    root = Path(root) if root is not None else default_root()
    try:
        return cls(str(root), train=train, download=False, transform=_image_transform(name))
    except RuntimeError:
        pass  # not on disk (or corrupted)
    fn = f"qlab.lab.kit.data.{name.lower()}"
    if not download:
        raise DatasetUnavailableError(
            f"{name} is not in {root}. The lessons use the offline default, {OFFLINE_DEFAULT}; "
            f"to fetch {name} on a machine that is online, call {fn}(download=True)."
        )
    if not is_online(_HOSTS[name]):
        raise DatasetUnavailableError(
            f"{name} must be downloaded, and this machine is offline. "
            f"Use the offline default, {OFFLINE_DEFAULT}, or copy {name} into {root}."
        )
    return cls(str(root), train=train, download=True, transform=_image_transform(name))


def mnist(split: str = "train", root=None, download: bool = False):
    """Optional MNIST (train/test) as normalized [3, 32, 32] images; offline default: digits()."""
    return _torchvision_dataset("MNIST", split, root, download)


def cifar10(split: str = "train", root=None, download: bool = False):
    """Optional CIFAR-10 (train/test) as normalized [3, 32, 32] images; offline default: digits()."""
    return _torchvision_dataset("CIFAR10", split, root, download)


__all__ = [
    "CharVocab",
    "DatasetUnavailableError",
    "Digits",
    "augment_batch",
    "cifar10",
    "digits",
    "digits_split_indices",
    "digits_tensors",
    "is_online",
    "lm_batches",
    "loader",
    "mnist",
    "sentences",
    "text_corpus",
    "text_splits",
]
