"""Seeded training and evaluation loops, and the recipe that makes every lesson checkpoint.

    fit(model, loader, epochs, lr)           SGD + momentum, one-cycle learning rate, cross-entropy
    top1(logits, y), accuracy(model, x, y)   the one top-1 accuracy every lesson reports
    evaluate(model, data)                    top-1 accuracy on a DataLoader or an (x, y) pair
    fit_lm(model, ids, epochs, ...)          truncated-backprop training of a character LM
    bits_per_char(model, ids)                mean -log2 p(next char): the LM's quality, lower is better
    train_and_save(name, directory, seed)    the recipe of one lesson checkpoint (`make checkpoints`)

Same seed, same thread count, same versions: the same weights, bit for bit. One thread by default:
on a busy 2-core laptop two OpenMP threads wait on each other and train several times slower.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import checkpoints, data


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


def top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]: the share of rows whose largest logit is at the label y. The one
    accuracy every lesson reports (through accuracy() and evaluate() when it has a model)."""
    return float((logits.argmax(1) == y).float().mean())


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> float:
    """top1 of model on (x, y), in eval mode (the mode it had is restored), in batches of batch_size
    (None: one batch). model: an nn.Module, or any callable x -> logits."""
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        logits = model(x) if batch_size is None else torch.cat([model(b) for b in x.split(batch_size)])
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
    return top1(logits, y)


@torch.no_grad()
def evaluate(model: nn.Module, data_, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] (top1) on a DataLoader or on an (x, y) pair of tensors, in eval mode."""
    if isinstance(data_, tuple):
        return accuracy(model, data_[0], data_[1], batch_size)
    model.eval()
    logits, labels = zip(*((model(x), y) for x, y in data_), strict=True)
    return top1(torch.cat(logits), torch.cat(labels))


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
