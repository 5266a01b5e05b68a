"""Lesson 04, its timings: medians of interleaved rounds, ratios from one run."""

from __future__ import annotations

import copy
import functools
from numbers import Real

import torch
import torch.ao.quantization as tq
from torch import nn

import qlab
from qlab.lab.kit import models
from qlab.lab.kit.check import check_choice, check_int
from qlab.lab.kit.models import CNNS, IMAGE
from qlab.lab.kit.timing import FreshKernels, flag, footnote, settings, speedups, timed
from qlab.lab.kit.torch_ao import ENGINE
from qlab.lab.lessons.l03_dynamic_quantization.speed import BATCH, check_common

# ---------------------------------------------------------------------------------------
# Static quantization: the lesson CNNs
# ---------------------------------------------------------------------------------------


WIDTH = (0.0, 8.0)  # the channel-width multipliers the functions accept


def check_width(width) -> float:
    if isinstance(width, bool) or not isinstance(width, Real):
        raise TypeError(f"width must be a number > 0 (a channel multiplier), got {type(width).__name__}")
    if not WIDTH[0] < width <= WIDTH[1]:
        raise ValueError(f"width={width} is out of range; width must be > 0 and at most {WIDTH[1]:g} "
                         "(a multiplier of the lesson model's channel widths)")
    return float(width)


def cnn_model(model_name: str = "resnet", width: float = 1.0) -> nn.Module:
    """A lesson CNN with every channel width multiplied by `width` (random weights, seeded).

    resnet: qlab.lab.kit.models.resnet(widths=(16, 32, 64) * width). mobilenet_v2: the lesson's
    QuantizableMobileNetV2 at width_mult 0.5 * width (models.mobilenet_v2 stops at the lesson's
    0.5, so wider ones are built here from the same table and blocks).
    """
    check_choice("model_name", model_name, CNNS)
    width = check_width(width)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if model_name == "resnet":
            return models.resnet(widths=tuple(max(1, round(c * width)) for c in (16, 32, 64)))
        if width <= 1.0:
            return models.mobilenet_v2(width_mult=0.5 * width)
        model = models.QuantizableMobileNetV2(num_classes=models.NUM_CLASSES, width_mult=0.5 * width,
                                              inverted_residual_setting=models.MOBILENET_32X32,
                                              block=models.QuantizableInvertedResidual)
        models.replace_relu(model)
        return model


def _set_batch_norm(model: nn.Module, batches) -> None:
    """Give random-weight batch norms the statistics of these batches (train-mode passes, cumulative)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the passes
    model.train()
    with settings(threads=1), torch.no_grad():
        for x in batches:
            model(x)
    model.eval()


def calibration_batches(n: int = 2, batch: int = 8, seed: int = 0) -> list[torch.Tensor]:
    """n random [batch, 3, 32, 32] images: enough for the observers' ranges when only speed matters."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *IMAGE, generator=gen) for _ in range(n)]


def torch_ao_static(fused: nn.Module, calibration) -> nn.Module:
    """torch.ao's classic static int8 of a fused model: a copy prepared with
    get_default_qconfig(ENGINE), run on each calibration batch, converted."""
    ao = copy.deepcopy(fused).eval()
    ao.qconfig = tq.get_default_qconfig(ENGINE)
    tq.prepare(ao, inplace=True)
    with torch.no_grad():
        for x in calibration:
            ao(x)
    return tq.convert(ao, inplace=True).eval()


def cnn_variants(model: nn.Module, calibration) -> dict[str, nn.Module]:
    """The int8 models one fp32 lesson CNN (eval mode, batch norm not yet folded) becomes.

        "fp32":          batch norm folded into the convs (model.fuse_model()), still float
        "torch.ao int8": fuse, prepare with get_default_qconfig(ENGINE), calibrate, convert
        "qlab int8":     qlab.prepare / qlab.convert of the same fused model and batches
        "dynamic int8":  torch.ao quantize_dynamic of the fp32 model: only the fc becomes int8
    """
    fused = copy.deepcopy(model).eval()
    fused.fuse_model()
    with settings(threads=1), torch.no_grad():  # building is not timed; one thread is robust on a busy CPU
        ao = torch_ao_static(fused, calibration)
        ours = qlab.prepare(fused, qlab.get_default_qconfig(ENGINE))
        for x in calibration:
            ours(x)
        ours = qlab.convert(ours)
        dynamic = tq.quantize_dynamic(fused, {nn.Linear}, dtype=torch.qint8)
    return {"fp32": fused, "torch.ao int8": ao, "qlab int8": ours, "dynamic int8": dynamic}


@functools.lru_cache(maxsize=4)
def _random_cnn_variants(model_name: str, width: float) -> dict[str, nn.Module]:
    model = cnn_model(model_name, width)
    calibration = calibration_batches()
    _set_batch_norm(model, calibration)
    return cnn_variants(model, calibration)


def time_cnn_variants(variants: dict[str, nn.Module], batch: int = 64, threads: int | None = None,
                      min_run_time: float = 0.2) -> dict:
    """Time what cnn_variants returned on one random batch of [batch, 3, 32, 32] images.

    fp32 runs both contiguous and channels_last (model and input); the faster one is the
    baseline. Dynamic int8 (fp32 convs, int8 fc) also runs in both and keeps its faster one.
    Returns {"batch", "threads", "fp32_layout" and "dynamic_layout": "contiguous" or
    "channels_last", "baseline": "fp32 <layout>", "ms": {config: median ms},
    "speedup": {config: best fp32 ms / ms}, "spread": see timed}.
    """
    batch = check_int("batch", batch, *BATCH)
    check_common(threads, min_run_time)
    x = torch.randn(batch, *IMAGE, generator=torch.Generator().manual_seed(1))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fp32, dynamic = variants["fp32"], variants["dynamic int8"]
    fp32_cl, dynamic_cl = (copy.deepcopy(m).to(memory_format=torch.channels_last) for m in (fp32, dynamic))
    fns = {"fp32 contiguous": functools.partial(fp32, x),
           "fp32 channels_last": functools.partial(fp32_cl, x_cl),
           "torch.ao int8": FreshKernels(variants["torch.ao int8"], x),  # its kernels, for this shape
           "qlab int8": functools.partial(variants["qlab int8"], x),
           "dynamic contiguous": functools.partial(dynamic, x),
           "dynamic channels_last": functools.partial(dynamic_cl, x_cl)}
    with settings(threads):
        ms, spread = timed(fns, min_run_time)
        used = torch.get_num_threads()
    best = {}
    for config in ("fp32", "dynamic"):
        layouts = {k: ms.pop(f"{config} {k}") for k in ("contiguous", "channels_last")}
        best[config] = min(layouts, key=layouts.get)
        if config == "fp32":
            ms = {**{f"fp32 {k}": t for k, t in layouts.items()}, **ms}
        else:
            ms["dynamic int8"] = layouts[best[config]]
    baseline = f"fp32 {best['fp32']}"
    return {"batch": batch, "threads": used, "fp32_layout": best["fp32"], "dynamic_layout": best["dynamic"],
            "baseline": baseline, "ms": ms, "speedup": speedups(ms, baseline), "spread": spread}


def time_cnn(model_name: str = "resnet", batch: int = 64, threads: int | None = None, width: float = 1.0,
             min_run_time: float = 0.2) -> dict:
    """Latency of a lesson CNN at `width` x its channel widths (random weights, batch norm set
    on random images): the best fp32 (contiguous or channels_last, named), torch.ao static int8,
    qlab static int8 and torch.ao dynamic int8 (only the fc is int8), at `threads` threads.

    Returns time_cnn_variants' dict plus "model" and "width"; "speedup" is best fp32 ms / ms.
    Random weights time like trained ones: the kernels do not look at the values.
    """
    check_choice("model_name", model_name, CNNS)
    width = check_width(width)
    batch = check_int("batch", batch, *BATCH)
    check_common(threads, min_run_time)
    result = time_cnn_variants(_random_cnn_variants(model_name, width), batch, threads, min_run_time)
    return {"model": model_name, "width": width, **result}


# ---------------------------------------------------------------------------------------
# The trained CNNs' table (notebook 04 and `make bench`)
# ---------------------------------------------------------------------------------------


def time_models(variants: dict[str, dict[str, nn.Module]], batches=(1, 64), threads: int | None = None,
                min_run_time: float = 0.5) -> list[dict]:
    """time_cnn_variants for each model (name -> what cnn_variants returned) at each batch:
    one row a (model, batch), with "model" added."""
    return [{"model": name, **time_cnn_variants(v, b, threads, min_run_time)}
            for name, v in variants.items() for b in batches]


def cnn_markdown(rows: list[dict]) -> str:
    """Markdown: time_models' rows, best fp32 against torch.ao and qlab int8, as ratios."""
    lines = ["| model | batch | best fp32 | fp32 ms | torch.ao int8 | qlab int8 | dynamic int8 (fc) "
             "| qlab time / torch.ao time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, ms = r["speedup"], r["ms"]
        lines.append(f"| {r['model']} | {r['batch']} | {r['fp32_layout']} | {ms[r['baseline']]:.2f} "
                     f"| {s['torch.ao int8']:.2f}x | {s['qlab int8']:.2f}x | {s['dynamic int8']:.2f}x "
                     f"| {ms['qlab int8'] / ms['torch.ao int8']:.1f}x{flag(r['spread'])} |")
    return "\n".join(lines) + footnote([r["spread"] for r in rows])
