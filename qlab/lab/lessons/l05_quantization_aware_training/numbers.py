"""Lesson 05: quantization-aware training, measured on the lesson CNNs.

    ste_curves(bits, lo, hi)                      fake_quantize's staircase and its STE gradient (autograd)
    ptq_accuracy(name, w_bits, a_bits)            static PTQ at low bits, qlab's integer path
    prepare_for_qat(name, qconfig)                the fp32 checkpoint, fused for QAT and prepared
    run_qat(model, epochs, lr, ...)               fine-tune with fake quantization; a history to plot
    run_fp32(model, epochs, lr, ...)              the same recipe on the float model: the fp32 baseline
    finish(model)                                 freeze; fake-quant vs converted-integer test accuracy
    qat_accuracy(name, w_bits, a_bits, ...)       the three above in one call: one row of the sweep
    torch_ao_qat(name, w_bits, a_bits, ...)       the same schedule with torch.ao, for parity
    record_sweep() / recorded_runs() / load_int8  the runs `make checkpoints` records (data/checkpoints/qat)

QAT here is a short fine-tune of the trained fp32 checkpoint (2 epochs of 17 steps by default):
SGD with momentum and a constant learning rate, the training split with the same augmentation as
the checkpoint's training, torch.ao's schedule of freezing batch-norm statistics first and the
observers later. One thread: small CNNs train faster on one than on two.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
from torch import nn

import qlab
from qlab.fake_quant import FakeQuantize, disable_observer
from qlab.lab.kit import checkpoints, data
from qlab.lab.kit.check import check_choice, check_float, check_int
from qlab.lab.kit.integrity import MANIFEST, read_manifest, sha256_file, verify_sha256, write_manifest
from qlab.lab.kit.models import CNNS
from qlab.lab.kit.timing import settings
from qlab.lab.kit.torch_ao import quiet
from qlab.lab.kit.train import accuracy
from qlab.nn import QATConvBn2d, freeze_bn_stats
from qlab.qconfig import QConfig, low_bit_qconfig


def _check_name(name: str) -> str:
    check_choice("model", name, CNNS, what=f"one of {CNNS}")
    return name


# ---------------------------------------------------------------------------------------
# The straight-through estimator, made visible
# ---------------------------------------------------------------------------------------


def ste_curves(bits: int = 3, lo: float = -1.0, hi: float = 1.0, n: int = 801, pad: float = 0.5) -> dict:
    """fake_quantize(x) on an affine grid of `bits` bits over [lo, hi], for x from lo - pad to
    hi + pad, and its gradient computed by autograd (the clipped STE: 1 where the code is inside
    the grid, 0 where it is clamped), beside the true derivative of the staircase (0 everywhere
    but at the jumps, where it does not exist).

    Returns {"x", "y" (the staircase), "ste" (autograd's gradient), "true" (zeros), "qparams",
    "levels" (2**bits), "step" (the scale), "inside" ((lowest, highest) grid value)}.
    """
    check_int("bits", bits, 2, 8, what="an integer from 2 to 8")
    if not lo < 0 < hi:
        raise ValueError(f"the range must contain 0 (lo < 0 < hi), got lo={lo}, hi={hi}")
    qp = qlab.qparams_from_range(lo, hi, qlab.qdtype(bits, False))
    x = torch.linspace(lo - pad, hi + pad, n, requires_grad=True)
    y = qlab.fake_quantize(x, qp)
    (grad,) = torch.autograd.grad(y.sum(), x)
    scale, zp = float(qp.scale), int(qp.zero_point)
    return {"x": x.detach(), "y": y.detach(), "ste": grad, "true": torch.zeros_like(grad), "qparams": qp,
            "levels": 2**bits, "step": scale, "inside": ((qp.qmin - zp) * scale, (qp.qmax - zp) * scale)}


# ---------------------------------------------------------------------------------------
# PTQ at low bits (the baseline QAT has to beat)
# ---------------------------------------------------------------------------------------


def ptq_accuracy(name: str, w_bits: int = 8, a_bits: int = 8, calib_images: int = 128) -> float:
    """Static PTQ of the checkpoint with w_bits weights and a_bits activations (low_bit_qconfig):
    fuse, prepare, calibrate on the first calib_images training images, convert; test accuracy
    of qlab's own integer path (it clamps to the low-bit grids, as the deployed model would)."""
    x_train, _ = data.digits_tensors("train")
    check_int("calib_images", calib_images, 1, len(x_train),
              what=f"an integer from 1 to {len(x_train)} (the training images)")
    model = checkpoints.load_model(_check_name(name)).eval()
    model.fuse_model()
    prepared = qlab.prepare(model, low_bit_qconfig(w_bits, a_bits))
    with torch.no_grad():
        for batch in x_train[:calib_images].split(64):
            prepared(batch)
    x, y = data.digits_tensors("test")
    return accuracy(qlab.convert(prepared), x, y)


# ---------------------------------------------------------------------------------------
# QAT: prepare, fine-tune on a schedule, freeze, convert
# ---------------------------------------------------------------------------------------


def prepare_for_qat(name: str, qconfig: QConfig) -> nn.Module:
    """The fp32 checkpoint `name`, conv+bn(+relu) fused for QAT (batch norm still trains) and
    prepared with qlab.prepare_qat(qconfig); in train mode."""
    model = checkpoints.load_model(_check_name(name)).train()
    model.fuse_model(is_qat=True)
    return qlab.prepare_qat(model, qconfig)


@torch.no_grad()
def fake_quant_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy of a QAT model (qlab's or torch.ao's) in eval mode with its observers paused
    (an evaluation must not move the grids it measures), restored afterwards."""
    quantizers = [m for m in model.modules() if isinstance(m, (FakeQuantize, tq.FakeQuantizeBase))]
    states = [int(m.observer_enabled[0] if m.observer_enabled.dim() else m.observer_enabled)
              for m in quantizers]
    for m in quantizers:
        m.observer_enabled.fill_(0)
    try:
        return accuracy(model, x, y)
    finally:
        for m, on in zip(quantizers, states, strict=True):
            m.observer_enabled.fill_(on)


def _check_qat_model(model) -> nn.Module:
    """A model with fake quantization (qlab's FakeQuantize or torch.ao's): what run_qat trains."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a QAT-prepared nn.Module, got {type(model).__name__}")
    if not any(isinstance(m, (FakeQuantize, tq.FakeQuantizeBase)) for m in model.modules()):
        raise ValueError(f"run_qat needs a model prepared for QAT (with FakeQuantize modules): "
                         f"prepare_for_qat(name, qconfig) or qlab.prepare_qat(model, qconfig); this "
                         f"{type(model).__name__} has none (a float, prepared-for-PTQ or converted model)")
    return model


def _check_schedule(epochs, lr, freeze_bn_at, freeze_observer_at, eval_every=1, seed=0, threads=1,
                    freezers=(freeze_bn_stats, disable_observer)) -> None:
    check_int("epochs", epochs, 1, what="a positive integer")
    check_float("lr", lr, 0, above=True, what="a finite number > 0 (the SGD learning rate, e.g. 0.01)")
    for label, v in (("freeze_bn_at", freeze_bn_at), ("freeze_observer_at", freeze_observer_at)):
        if v is not None:
            check_float(label, v, 0, 1, what="a fraction of the training steps in [0, 1], or None (never)")
    check_int("eval_every", eval_every, 1, what="a positive integer (training steps between evaluations)")
    check_int("seed", seed, 0, what="an integer >= 0")
    check_int("threads", threads, 1, what="a positive integer")
    if not (isinstance(freezers, (tuple, list)) and len(freezers) == 2 and all(map(callable, freezers))):
        raise ValueError("freezers must be two functions for model.apply: (freeze batch norm, disable "
                         f"observers), e.g. (qlab.nn.freeze_bn_stats, qlab.fake_quant.disable_observer); "
                         f"got {freezers!r}")


def run_qat(model: nn.Module, epochs: int = 2, lr: float = 0.01, freeze_bn_at: float | None = 0.5,
            freeze_observer_at: float | None = 0.75, eval_every: int = 4, seed: int = 0,
            threads: int = 1, freezers: tuple[Callable, Callable] = (freeze_bn_stats, disable_observer),
            ) -> dict:
    """Fine-tune a prepared QAT model in place. First one batch of 64 training images in eval mode
    gives the observers their first ranges (and LSQ's learned scales their start); then SGD
    (momentum 0.9), constant lr, batch 64, the
    augmented training split; batch-norm statistics frozen after freeze_bn_at of the steps and
    observers after freeze_observer_at (torch.ao's schedule; None: never), by model.apply of the two
    `freezers` (torch.ao's model: torch.ao's freeze_bn_stats and disable_observer).

    Returns {"steps", "loss" (training loss, mean over each eval_every steps), "accuracy" (fake-quant
    test accuracy after those steps), "frozen" ({"bn": step, "observers": step}), "seconds" (training
    time without the evaluations), "step_ms" (per step)}.
    """
    _check_qat_model(model)
    _check_schedule(epochs, lr, freeze_bn_at, freeze_observer_at, eval_every, seed, threads, freezers)
    return _fine_tune(model, epochs, lr, freeze_bn_at, freeze_observer_at, eval_every, seed, threads,
                      freezers)


def run_fp32(model: nn.Module, epochs: int = 2, lr: float = 0.01, eval_every: int = 4, seed: int = 0,
             threads: int = 1) -> dict:
    """run_qat's recipe on a float model (the same data order, batch, SGD; nothing to freeze): the
    fp32 baseline of a training step's time and of the accuracy curve. Returns run_qat's dict."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a float nn.Module, got {type(model).__name__}")
    if any(isinstance(m, (FakeQuantize, tq.FakeQuantizeBase)) for m in model.modules()):
        raise ValueError("run_fp32 trains a float model; this one is prepared for QAT: use run_qat")
    if not any(p.requires_grad and p.is_floating_point() for p in model.parameters()):
        raise ValueError(f"run_fp32 needs a float model with trainable parameters; this "
                         f"{type(model).__name__} has none (a converted int8 model?)")
    _check_schedule(epochs, lr, None, None, eval_every, seed, threads)
    return _fine_tune(model, epochs, lr, None, None, eval_every, seed, threads, (None, None))


def _fine_tune(model, epochs, lr, freeze_bn_at, freeze_observer_at, eval_every, seed, threads,
               freezers) -> dict:
    """run_qat's loop, its arguments checked."""
    x_test, y_test = data.digits_tensors("test")
    loader = data.loader(data.digits("train"), 64, shuffle=True, augment=True, seed=seed)
    total = epochs * len(loader)
    at = {k: None if f is None else round(f * total) for k, f in (("bn", freeze_bn_at),
                                                                  ("observers", freeze_observer_at))}
    torch.manual_seed(seed)
    with torch.no_grad():  # one batch in eval mode: the observers' first ranges (and LSQ's scales)
        model.eval()
        model(data.digits_tensors("train")[0][:64])
        model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    history = {"steps": [0], "loss": [float("nan")], "accuracy": [fake_quant_accuracy(model, x_test, y_test)],
               "frozen": at, "seconds": 0.0}
    step, running = 0, []
    with settings(threads):
        model.train()
        for _ in range(epochs):
            for x, y in loader:
                if step == at["bn"]:
                    model.apply(freezers[0])
                if step == at["observers"]:
                    model.apply(freezers[1])
                start = time.perf_counter()
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                history["seconds"] += time.perf_counter() - start
                running.append(loss.item())
                step += 1
                if step % eval_every == 0 or step == total:
                    history["steps"].append(step)
                    history["loss"].append(sum(running) / len(running))
                    history["accuracy"].append(fake_quant_accuracy(model, x_test, y_test))
                    running = []
    history["step_ms"] = 1000 * history["seconds"] / total
    return history


@torch.no_grad()
def finish(model: nn.Module) -> dict:
    """Freeze everything (observers, batch norm), then test accuracy of the fake-quant model and of
    qlab.convert's integer model; and whether the int8 weights are the fake-quantized weights QAT
    trained with. Returns {"fake", "int", "int8_model", "weights_match"}."""
    model.apply(disable_observer)
    model.apply(freeze_bn_stats)
    x, y = data.digits_tensors("test")
    fake = fake_quant_accuracy(model, x, y)
    int8 = qlab.convert(model.eval())
    return {"fake": fake, "int": accuracy(int8, x, y), "int8_model": int8,
            "weights_match": trained_weights_match(model, int8)}


def trained_weights_match(qat_model: nn.Module, int8_model: nn.Module) -> bool:
    """Is every int8 weight code the code of the weight QAT trained, on the grid QAT used?"""
    int8_layers = dict(int8_model.named_modules())
    for name, m in qat_model.named_modules():
        fq = getattr(m, "weight_fake_quant", None)
        if fq is None:
            continue
        w = m.folded_weight_bias()[0] if isinstance(m, QATConvBn2d) else m.weight
        qp = fq.qparams()
        codes = qlab.quantize(w.detach(), qp, axis=qp.axis if qp.per_channel else None)
        if not torch.equal(codes.to(torch.int8), int8_layers[name].weight):
            return False
    return True


def qat_accuracy(name: str, w_bits: int = 8, a_bits: int = 8, epochs: int = 2, lr: float = 0.01,
                 learned_scale: bool = False, **schedule) -> dict:
    """One row of the lesson's sweep: QAT of `name` with low_bit_qconfig(w_bits, a_bits, qat=True,
    learned_scale), run_qat(...), finish(). Returns finish()'s dict plus "history"."""
    model = prepare_for_qat(name, low_bit_qconfig(w_bits, a_bits, qat=True, learned_scale=learned_scale))
    history = run_qat(model, epochs, lr, **schedule)
    return {**finish(model), "history": history}


# ---------------------------------------------------------------------------------------
# torch.ao, the same recipe: the reference for parity and for speed
# ---------------------------------------------------------------------------------------


def torch_qat_qconfig(w_bits: int = 8, a_bits: int = 8) -> tq.QConfig:
    """torch.ao's x86 QAT default with its ranges restricted to w_bits / a_bits (quant_min /
    quant_max on qint8 / quint8): low_bit_qconfig(w_bits, a_bits, qat=True) in torch.ao's terms."""
    w_lo, w_hi = -(2 ** (w_bits - 1)), 2 ** (w_bits - 1) - 1
    a_hi = 2**a_bits - 1
    fq = tq.FakeQuantize.with_args
    return tq.QConfig(
        activation=fq(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=a_hi,
                      dtype=torch.quint8, reduce_range=a_bits == 8),
        weight=fq(observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=w_lo, quant_max=w_hi,
                  dtype=torch.qint8, qscheme=torch.per_channel_symmetric))


def torch_ao_qat(name: str, w_bits: int = 8, a_bits: int = 8, epochs: int = 2, lr: float = 0.01,
                 **schedule) -> dict:
    """run_qat's recipe with torch.ao's prepare_qat (same checkpoint, data order, seed, schedule);
    the fake-quant test accuracy after freezing, and run_qat's history."""
    model = checkpoints.load_model(_check_name(name)).train()
    model.fuse_model(is_qat=True)
    model.qconfig = torch_qat_qconfig(w_bits, a_bits)
    with quiet():  # torch.ao prefers quant_max to reduce_range; its x86 default uses both
        tq.prepare_qat(model, inplace=True)
    freezers = (torch.ao.nn.intrinsic.qat.freeze_bn_stats, tq.disable_observer)
    history = run_qat(model, epochs, lr, freezers=freezers, **schedule)
    for f in freezers:
        model.apply(f)
    x, y = data.digits_tensors("test")
    return {"fake": accuracy(model, x, y), "history": history, "model": model}


# ---------------------------------------------------------------------------------------
# The sweep `make checkpoints` records: int8 models and their training histories
# ---------------------------------------------------------------------------------------

#: (model, weight bits, activation bits, method): the runs the lesson loads instead of training
SWEEP = (
    *[(m, w, 8, "observers") for m in ("mobilenet_v2", "resnet") for w in (8, 6, 4, 3, 2)],
    *[("mobilenet_v2", 8, a, "observers") for a in (6, 4, 3)],
    *[("mobilenet_v2", w, 8, "lsq") for w in (3, 2)],
)


RECIPE = {"epochs": 2, "lr": 3e-3, "freeze_bn_at": 0.5, "freeze_observer_at": 0.75, "seed": 0, "threads": 1}


METHODS = ("observers", "lsq")


def run_name(model: str, w_bits: int, a_bits: int, method: str = "observers") -> str:
    """The file stem of a recorded run, e.g. 'mobilenet_v2_w4a8_observers'."""
    check_choice("method", method, METHODS, what=f"one of {METHODS}")
    return f"{_check_name(model)}_w{w_bits}a{a_bits}_{method}"


def qat_dir(directory=None) -> Path:
    return Path(directory or checkpoints.default_dir()) / "qat"


def _skeleton(model: str, w_bits: int, a_bits: int, method: str) -> nn.Module:
    """A converted int8 model of the right shape (its numbers are overwritten by load_state_dict)."""
    qconfig = low_bit_qconfig(w_bits, a_bits, qat=True, learned_scale=method == "lsq")
    prepared = prepare_for_qat(model, qconfig)
    with torch.no_grad():
        prepared.eval()
        prepared(data.digits_tensors("train")[0][:8])
    return qlab.convert(prepared)


def record_sweep(directory=None, runs=SWEEP, progress: bool = True) -> dict:
    """Run every QAT configuration of `runs` with RECIPE; save each converted int8 model to
    data/checkpoints/qat/<run_name>.pt (sha256 in its MANIFEST) and its numbers to METRICS.json:
    fake-quant and integer test accuracy, the training history, seconds."""
    folder = qat_dir(directory)
    folder.mkdir(parents=True, exist_ok=True)
    recipe = {k: v for k, v in RECIPE.items() if k not in ("epochs", "lr")}
    table = json.loads((folder / "METRICS.json").read_text()) if (folder / "METRICS.json").is_file() else {}
    for model, w, a, method in runs:
        name = run_name(model, w, a, method)
        if progress:
            print(f"== QAT {name}", flush=True)
        r = qat_accuracy(model, w, a, RECIPE["epochs"], RECIPE["lr"], learned_scale=method == "lsq", **recipe)
        path = folder / f"{name}.pt"
        config = {"model": model, "w_bits": w, "a_bits": a, "method": method, **RECIPE}
        torch.save({"name": name, "config": config, "state_dict": r["int8_model"].state_dict()}, path)
        entries = read_manifest(folder) if (folder / MANIFEST).is_file() else {}
        entries[path.name] = sha256_file(path)
        write_manifest(entries, folder)
        h = r["history"]
        table[name] = {"fake_accuracy": round(r["fake"], 4), "int_accuracy": round(r["int"], 4),
                       "weights_match": r["weights_match"], "steps": h["steps"],
                       "loss": [round(v, 4) for v in h["loss"][1:]],
                       "accuracy": [round(v, 4) for v in h["accuracy"]],
                       "frozen": h["frozen"], "train_seconds": round(h["seconds"], 1), "config": config}
        (folder / "METRICS.json").write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    return table


def recorded_runs(directory=None) -> dict:
    """What record_sweep measured: run name -> {"fake_accuracy", "int_accuracy", "steps", "loss",
    "accuracy" (the training curve), "frozen", "train_seconds", "config"}."""
    path = qat_dir(directory) / "METRICS.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make checkpoints` "
                                "(python -m qlab.lab.tools.train --qat)")
    return json.loads(path.read_text())


def load_int8(model: str, w_bits: int, a_bits: int = 8, method: str = "observers",
              directory=None) -> nn.Module:
    """The recorded QAT run's int8 model (sha256-checked, torch.load(weights_only=True))."""
    name = run_name(model, w_bits, a_bits, method)
    folder = qat_dir(directory)
    expected = read_manifest(folder).get(f"{name}.pt")
    if expected is None:
        known = sorted(k.removesuffix(".pt") for k in read_manifest(folder))
        raise ValueError(f"no recorded QAT run {name!r}; recorded: {', '.join(known)}")
    ckpt = torch.load(verify_sha256(folder / f"{name}.pt", expected), map_location="cpu", weights_only=True)
    int8 = _skeleton(model, w_bits, a_bits, method)
    int8.load_state_dict(ckpt["state_dict"])
    return int8.eval()
