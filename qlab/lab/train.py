"""Seeded training and evaluation loops, and the recipe that makes every lesson checkpoint.

    fit(model, loader, epochs, lr)           SGD + momentum, one-cycle learning rate, cross-entropy
    evaluate(model, data)                    top-1 accuracy on a DataLoader or an (x, y) pair
    fit_lm(model, ids, epochs, ...)          truncated-backprop training of a character LM
    bits_per_char(model, ids)                mean -log2 p(next char): the LM's quality, lower is better

    python -m qlab.lab.train --all           (= `make checkpoints`) trains all three from scratch, then --qat
    python -m qlab.lab.train resnet          just one; writes data/checkpoints/ and METRICS.json
    python -m qlab.lab.train --qat           lesson 05's QAT runs (qat.SWEEP) into data/checkpoints/qat

Same seed, same thread count, same versions: the same weights, bit for bit. One thread by default:
on a busy 2-core laptop two OpenMP threads wait on each other and train several times slower.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import checkpoints, data

warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.ao")


def seed_everything(seed: int = 0) -> None:
    """Seed torch, numpy and random, so initial weights, shuffles and augmentations repeat."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def one_cycle(opt, lr: float, steps: int, warmup: float = 0.3):
    """torch's OneCycleLR over exactly `steps` steps: the learning rate rises from lr/25 to lr over
    the first `warmup` of them, then anneals (cosine) to lr/25e4; the momentum (Adam's beta1)
    moves the other way, between 0.95 and 0.85.

    OneCycleLR divides by the warm-up length minus one step, so a warm-up of exactly one step
    (warmup * steps == 1) cannot be scheduled: pick another number of steps.
    """
    if warmup * steps == 1:
        raise ValueError(
            f"steps={steps} with warmup={warmup} is a one-step warm-up, which OneCycleLR cannot "
            "schedule (it divides by zero); use more or fewer steps, or another warmup"
        )
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=warmup)


def fit(model: nn.Module, loader, epochs: int = 10, lr: float = 0.1, weight_decay: float = 5e-4,
        progress: bool = True) -> list[float]:  # fmt: skip
    """Train a classifier with SGD (momentum 0.9) and a one-cycle learning rate; return epoch losses."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    sched = one_cycle(opt, lr, epochs * len(loader))
    losses = []
    for _ in (bar := tqdm(range(epochs), desc="fit", disable=not progress)):
        model.train()
        total, n = 0.0, 0
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(y), n + len(y)
        losses.append(total / n)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, data_, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] on a DataLoader or on an (x, y) pair of tensors (model in eval mode)."""
    model.eval()
    if isinstance(data_, tuple):
        data_ = zip(data_[0].split(batch_size), data_[1].split(batch_size), strict=True)
    correct = total = 0
    for x, y in data_:
        correct += int((model(x).argmax(dim=1) == y).sum())
        total += len(y)
    return correct / total


def fit_lm(model: nn.Module, ids: torch.Tensor, epochs: int = 10, batch_size: int = 32, seq_len: int = 128,
           lr: float = 3e-3, clip: float = 1.0, progress: bool = True) -> list[float]:  # fmt: skip
    """Train a character LM on ids with Adam, carrying the LSTM state across chunks (truncated BPTT)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(((len(ids) - 1) // batch_size) / seq_len)
    sched = one_cycle(opt, lr, steps, warmup=0.25)
    losses = []
    for _ in (bar := tqdm(range(epochs), desc="fit_lm", disable=not progress)):
        model.train()
        state, total, n = None, 0.0, 0
        for x, y in data.lm_batches(ids, batch_size, seq_len):
            logits, state = model(x, state)
            state = tuple(s.detach() for s in state)  # keep the memory, cut the gradient
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            total, n = total + loss.item() * y.numel(), n + y.numel()
        losses.append(total / n)
        bar.set_postfix(bpc=f"{losses[-1] / math.log(2):.3f}")
    return losses


@torch.no_grad()
def bits_per_char(model: nn.Module, ids: torch.Tensor, batch_size: int = 16, seq_len: int = 256) -> float:
    """Mean cross-entropy in bits of each next character given all before it: sum(-log2 p) / N."""
    model.eval()
    state, total, n = None, 0.0, 0
    for x, y in data.lm_batches(ids, batch_size, seq_len):
        logits, state = model(x, state)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        n += y.numel()
    return total / n / math.log(2)


# ---------------------------------------------------------------------- the lesson checkpoints

RECIPES = {
    "resnet": {"config": {"num_classes": 10, "widths": (16, 32, 64), "blocks": (2, 2, 2)},
               "epochs": 20, "lr": 0.1, "batch_size": 64},
    "mobilenet_v2": {"config": {"num_classes": 10, "width_mult": 0.5},
                     "epochs": 20, "lr": 0.1, "batch_size": 64},
    "charlstm": {"config": {"vocab_size": 97, "embed_dim": 64, "hidden": 192, "num_layers": 2},
                 "epochs": 8, "lr": 4e-3, "batch_size": 32, "seq_len": 128},
}  # fmt: skip


def train_cnn(name: str, seed: int = 0, progress: bool = True):
    """Train the CNN `name` on the augmented digits train split; return (model, metrics)."""
    r = RECIPES[name]
    seed_everything(seed)
    model = checkpoints.build(name, r["config"])
    train = data.loader(data.digits("train"), r["batch_size"], shuffle=True, augment=True, seed=seed)
    fit(model, train, r["epochs"], r["lr"], progress=progress)
    metrics = {
        "val_accuracy": evaluate(model, data.digits_tensors("val")),
        "test_accuracy": evaluate(model, data.digits_tensors("test")),
    }
    return model, metrics


def train_charlstm(seed: int = 0, progress: bool = True):
    """Train the CharLSTM on the corpus's train split; return (model, metrics in bits per char)."""
    r = RECIPES["charlstm"]
    seed_everything(seed)
    model = checkpoints.build("charlstm", r["config"])
    splits = data.text_splits()
    fit_lm(model, splits["train"], r["epochs"], r["batch_size"], r["seq_len"], r["lr"], progress=progress)
    metrics = {name: bits_per_char(model, splits[name[:-4]]) for name in ("val_bpc", "test_bpc")}
    return model.eval(), metrics


def train_and_save(name: str, directory=None, seed: int = 0, progress: bool = True) -> dict:
    """Train `name` from scratch, save the checkpoint and its sha256, record its metrics."""
    start = time.perf_counter()
    model, metrics = train_charlstm(seed, progress) if name == "charlstm" else train_cnn(name, seed, progress)
    seconds = time.perf_counter() - start
    path = checkpoints.save(name, model, RECIPES[name]["config"], directory)
    metrics = {k: round(v, 4) for k, v in metrics.items()} | {
        "parameters": sum(p.numel() for p in model.parameters()),
        "file_bytes": path.stat().st_size,
        "train_seconds": round(seconds, 1),
        "seed": seed,
        "threads": torch.get_num_threads(),
    }
    _record_metrics(name, metrics, path.parent)
    return metrics


def _record_metrics(name: str, metrics: dict, directory: Path) -> None:
    """Merge one model's metrics into directory/METRICS.json, with the versions that produced them."""
    path = directory / "METRICS.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    table[name] = metrics
    table["_environment"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "split": "digits: stratified 60/20/20, seed 0, test = 360 images; text: contiguous 90/5/5",
        # pydoc_data.topics differs between Python releases, and so would the LSTM's numbers
        "text_corpus_sha256": hashlib.sha256(data.text_corpus().encode()).hexdigest(),
    }
    path.write_text(json.dumps(dict(sorted(table.items())), indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train the lesson checkpoints from scratch (seeded).")
    parser.add_argument("names", nargs="*", help=f"models to train, of {', '.join(checkpoints.NAMES)}")
    parser.add_argument("--all", action="store_true", help="train every lesson model, then the QAT runs")
    parser.add_argument("--qat", action="store_true",
                        help="record lesson 05's QAT runs (data/checkpoints/qat), from the trained CNNs")
    parser.add_argument("--out", default=None, help="checkpoint folder (default data/checkpoints)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (results depend on it)")
    args = parser.parse_args(argv)
    names = list(checkpoints.NAMES) if args.all else args.names
    if (not names and not args.qat) or set(names) - set(checkpoints.NAMES):
        parser.error(f"name models from {checkpoints.NAMES}, or pass --all or --qat")
    torch.set_num_threads(args.threads)
    for name in names:
        print(f"== {name}", flush=True)
        print(json.dumps(train_and_save(name, args.out, args.seed)), flush=True)
    if args.all or args.qat:
        from . import qat  # QAT fine-tunes the checkpoints just written

        qat.record_sweep(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
