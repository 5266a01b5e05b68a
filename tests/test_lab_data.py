"""Offline lesson data: fixed splits, real text, and a clear error for online-only data sets."""

import hashlib
import pickle

import numpy as np
import pytest
import torch

from qlab.lab.kit import data

# sha256 of the train, val and test indices (int64 little-endian, in that order). If this changes,
# every recorded accuracy in data/checkpoints/METRICS.json stops meaning what it says.
DIGITS_SPLIT_SHA256 = "68fbefe27b703b4fe20b6fe7dd048668f2e05a89f1c17093798b296b5564cedc"


def _split_digest(idx):
    return hashlib.sha256(b"".join(idx[s].astype("<i8").tobytes() for s in data.SPLITS)).hexdigest()


def test_digits_split_is_fixed_disjoint_and_stratified():
    idx = data.digits_split_indices()
    assert _split_digest(idx) == DIGITS_SPLIT_SHA256
    assert _split_digest(data.digits_split_indices()) == DIGITS_SPLIT_SHA256  # same on a second call
    assert {s: len(i) for s, i in idx.items()} == {"train": 1078, "val": 359, "test": 360}
    every = np.concatenate(list(idx.values()))
    assert len(np.unique(every)) == 1797
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target[idx["test"]], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of each class


def test_a_different_seed_gives_a_different_split():
    assert _split_digest(data.digits_split_indices(seed=1)) != DIGITS_SPLIT_SHA256


def test_digits_tensors_are_normalized_three_channel_32x32():
    x, y = data.digits_tensors("train")
    assert x.shape == (1078, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.long and set(y.tolist()) == set(range(10))
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    assert torch.equal(x[:, 0], x[:, 2])
    xt, yt = data.digits_tensors("test")
    assert xt.shape == (360, 3, 32, 32) and len(yt) == 360
    ds = data.digits("val")
    assert len(ds) == 359 and ds[0][0].shape == (3, 32, 32)


def test_bad_split_names_the_allowed_ones():
    with pytest.raises(ValueError, match="train"):
        data.digits_tensors("dev")


def _batches(seed, augment):
    return list(data.loader(data.digits("train"), 128, shuffle=True, augment=augment, seed=seed))


def test_loader_order_and_augmentation_repeat_with_the_seed():
    a, b, c = _batches(0, True), _batches(0, True), _batches(1, True)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    assert not torch.equal(a[0][1], c[0][1])
    assert sum(len(y) for _, y in a) == 1078


def test_augmentation_is_light():
    x, _ = data.digits_tensors("val")
    x = x[:64]
    aug = data.augment_batch(x, torch.Generator().manual_seed(0))
    assert aug.shape == x.shape and not torch.equal(aug, x)
    # a shift of <= 2 pixels and <= 10 degrees keeps each image closer to itself than to others
    d_self = (aug - x).flatten(1).norm(dim=1)
    d_other = (aug - x.roll(1, 0)).flatten(1).norm(dim=1)
    assert (d_self < d_other).float().mean() > 0.9


def test_text_corpus_vocab_and_splits():
    text = data.text_corpus()
    assert len(text) > 400_000 and "assert" in text
    vocab = data.CharVocab()
    assert len(vocab) == 97
    sample = "Hello, world!\n\tx = [1, 2]"
    assert vocab.decode(vocab.encode(sample.replace("\t", " "))) == sample.replace("\t", " ")
    assert vocab.decode(vocab.encode("caf\u00e9")) == "caf?"
    splits = data.text_splits()
    assert torch.equal(torch.cat([splits[s] for s in data.SPLITS]), vocab.encode(text))
    assert len(splits["train"]) > 0.89 * len(text) and len(splits["val"]) > 20_000
    again = data.text_splits()
    assert all(torch.equal(splits[s], again[s]) for s in data.SPLITS)
    assert int(vocab.encode(text).eq(0).sum()) < 10  # nearly everything is in the vocabulary


def test_lm_batches_targets_are_the_next_character():
    ids = torch.arange(1000)
    chunks = list(data.lm_batches(ids, batch_size=4, seq_len=64))
    x, y = chunks[0]
    assert x.shape == (4, 64) and torch.equal(y, x + 1)
    assert torch.equal(chunks[1][0][:, 0], x[:, -1] + 1)  # row k continues where it stopped
    assert sum(c[0].shape[1] for c in chunks) == 999 // 4
    with pytest.raises(ValueError):
        next(data.lm_batches(torch.arange(3), batch_size=4))


def test_sentences_are_real_prose_and_repeat():
    s = data.sentences(256)
    assert len(s) == 256 and len(set(s)) == 256 and s == data.sentences(256)
    assert all(40 <= len(t) <= 200 and t[0].isupper() and t.endswith(".") for t in s)
    assert len(data.sentences(None)) >= 256
    with pytest.raises(ValueError):
        data.sentences(10**6)


# ---------------------------------------------------------------------- MNIST / CIFAR-10 offline


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(data, "is_online", lambda *a, **k: False)


@pytest.mark.parametrize("loader_fn", [data.mnist, data.cifar10])
def test_online_only_sets_name_the_offline_default(tmp_path, offline, loader_fn):
    with pytest.raises(data.DatasetUnavailableError, match=r"offline.*digits\(\)"):
        loader_fn("train", root=tmp_path, download=True)
    with pytest.raises(data.DatasetUnavailableError, match=r"digits\(\)"):
        loader_fn("test", root=tmp_path)
    assert not any(tmp_path.rglob("*.gz")) and not any(tmp_path.rglob("*.tar.gz"))


def test_qlab_offline_env_forces_offline(monkeypatch):
    monkeypatch.setenv("QLAB_OFFLINE", "1")
    assert data.is_online("localhost") is False


def _idx(path, arr):
    """Write arr in MNIST's IDX format: magic (0, 0, 0x08 = ubyte, ndim), big-endian sizes, bytes."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_mnist_loads_a_tiny_file_set_in_the_real_format(tmp_path, offline):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.randint(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    train, test = data.mnist("train", root=tmp_path), data.mnist("test", root=tmp_path)
    assert len(train) == 5 and len(test) == 3
    img, label = train[3]
    assert img.shape == (3, 32, 32) and label == 3
    assert torch.allclose(img[:, :2], torch.full_like(img[:, :2], -0.1307 / 0.3081))  # padded border
    with pytest.raises(ValueError):
        data.mnist("val", root=tmp_path)


def test_cifar10_loads_a_tiny_file_set_in_the_real_format(tmp_path, offline, monkeypatch):
    import torchvision.datasets as tvd

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.RandomState(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        batch = {"data": rng.randint(0, 256, (2, 3072)).astype(np.uint8), "labels": [k, (k + 1) % 10]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer",
                            "dog", "frog", "horse", "ship", "truck"]}  # fmt: skip
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    # torchvision checks the real files' md5; point it at the tiny files' md5 instead
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[n, md5(n)] for n in names[:5]])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5("batches.meta")})
    train, test = data.cifar10("train", root=tmp_path), data.cifar10("test", root=tmp_path)
    assert len(train) == 10 and len(test) == 2
    img, label = test[1]
    assert img.shape == (3, 32, 32) and label == 6
    assert train.classes[0] == "airplane"

