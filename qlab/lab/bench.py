"""Latency of fp32, torch.ao int8 and qlab int8, measured in one run and reported as ratios.

    python -m qlab.lab.bench            the Linear table, the lesson CNNs table, the dynamic sweep
    python -m qlab.lab.bench --quick    the same, shorter (fewer sizes, 0.1 s of calls a case)

    time_dynamic(kind, hidden, batch, seq)   an LSTM or Linear stack: fp32, torch.ao and qlab dynamic
    time_cnn(model_name, batch, width)       a lesson CNN: best fp32, torch.ao and qlab static int8,
                                             and dynamic int8 (which only touches the fc)
    sweep_dynamic(kind, hiddens, batches)    time_dynamic over a grid: where int8 starts to pay
    time_dynamic_overhead(hidden, rows)      choosing qparams + quantizing x, against the int8 product
    pareto_front(points)                     the configurations nothing beats on speed and quality

Medians from torch.utils.benchmark's blocked_autorange, all at the same torch thread count, the
configurations timed in interleaved rounds (interleaved_ms). Every speedup is fp32's time / the
configuration's time from the same call (above 1: faster): a ratio measured in one run is what
carries over between machines.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import logging
import numbers
import os
import statistics
import time
import warnings

import torch
import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq
from torch import nn

import qlab
from qlab import QTensor
from qlab.nn import QuantLinear

from . import models

KINDS = ("lstm", "linear")
CNNS = ("resnet", "mobilenet_v2")
HIDDEN, BATCH, SEQ, WIDTH = (8, 4096), (1, 1024), (1, 1024), (0.0, 8.0)  # what the functions accept
ENGINE = "x86"  # torch.ao's int8 kernels on x86 CPUs (fbgemm, with onednn for some shapes)
IMAGE = (3, 32, 32)  # the lesson CNNs' input: digits resized to 32x32, three channels


def _timer_class():
    """torch.utils.benchmark.Timer, imported on first use. Importing it loads torch's C++-extension
    helper, which logs "No CUDA runtime is found" on a machine without CUDA; the lessons time on
    the CPU only, so that one line is silenced instead of landing in every lesson's output."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    return Timer


def median_ms(fn, min_run_time: float = 0.5) -> float:
    """Median time of one fn() call in milliseconds, at torch's current thread count.

    torch.utils.benchmark's blocked_autorange warms up, then times blocks of calls for at
    least min_run_time seconds; the median over the blocks resists a busy machine's outliers.
    """
    timer = _timer_class()(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    with torch.inference_mode():
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def interleaved_rounds(fns: dict, min_run_time: float = 0.5, rounds: int = 3) -> dict[str, list[float]]:
    """median_ms of every fn in each of `rounds` interleaved rounds (A, B, C, A, B, C, ...) of
    min_run_time / rounds seconds: a machine that slows down mid-run (another job starts) then
    slows every configuration alike, and the ratios hold."""
    budget = min_run_time / rounds
    times = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            if r and times[name][0] > budget * 1e3:  # a call longer than the round: warm, so time one
                times[name].append(_one_call_ms(fn))
            else:
                times[name].append(median_ms(fn, budget))
    return times


def _one_call_ms(fn) -> float:
    """One call's time in ms (for calls slower than a round, already warmed up by the first round)."""
    with torch.inference_mode():
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3


def interleaved_ms(fns: dict, min_run_time: float = 0.5, rounds: int = 3) -> dict[str, float]:
    """The median over interleaved_rounds of every fn, in ms."""
    return {name: statistics.median(t) for name, t in interleaved_rounds(fns, min_run_time, rounds).items()}


def _timed(fns: dict, min_run_time: float) -> tuple[dict[str, float], float]:
    """(median ms of each fn, spread): spread is the largest max/min between one fn's rounds, about
    1 on a quiet machine; well above 1 means other work ran and the ratios are suspect."""
    times = interleaved_rounds(fns, min_run_time)
    spread = max(max(t) / min(t) for t in times.values())
    return {name: statistics.median(t) for name, t in times.items()}, spread


UNSTABLE = 1.3  # a spread above this is flagged in the tables: the machine was busy


# ---------------------------------------------------------------------------------------
# Checks and settings shared by every measurement
# ---------------------------------------------------------------------------------------


def max_threads() -> int:
    """The most torch threads a measurement may ask for: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int in {lo}..{hi}, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is out of range; {name} must be in {lo}..{hi}")
    return int(value)


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")
    return value


def _check_common(threads, min_run_time) -> None:
    if threads is not None:
        _check_int("threads", threads, 1, max_threads())
    if isinstance(min_run_time, bool) or not isinstance(min_run_time, numbers.Real) or not min_run_time > 0:
        raise ValueError(f"min_run_time must be a number of seconds > 0, got {min_run_time!r}")


def _check_width(width) -> float:
    if isinstance(width, bool) or not isinstance(width, numbers.Real):
        raise TypeError(f"width must be a number > 0 (a channel multiplier), got {type(width).__name__}")
    if not WIDTH[0] < width <= WIDTH[1]:
        raise ValueError(f"width={width} is out of range; width must be > 0 and at most {WIDTH[1]:g} "
                         "(a multiplier of the lesson model's channel widths)")
    return float(width)


@contextlib.contextmanager
def settings(threads: int | None = None, engine: str = ENGINE):
    """Run the block at `threads` torch threads (None: as it is) on torch.ao's `engine`; restore both."""
    old_threads, old_engine = torch.get_num_threads(), torch.backends.quantized.engine
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao eager mode's deprecation notices
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.quantized.engine = old_engine


class FreshKernels:
    """A zero-argument call model(x) for timing a torch.ao int8 model: each torch thread count gets
    its own copy of the model (copy.deepcopy, which packs the weights anew), first called inside
    the timing's warm-up.

    Why: torch.ao's x86 int8 convolutions (oneDNN) prepare their kernel once, for the input shape,
    qparams and thread count of their first call, and keep it; a call with another shape or thread
    count prepares a new kernel every time. Measured here (ResNet, batch 1, 2 threads): 0.41 ms on
    a fresh model, 0.71 ms on one first called at batch 360, 0.67 ms at 1 thread on one first
    called at 2. A served model runs one shape, so the fresh copy is the fair measurement."""

    def __init__(self, model: nn.Module, x: torch.Tensor, make=None, first=None):
        """make: builds a copy (default copy.deepcopy(model); e.g. compile a fresh copy instead);
        first: a copy already made, for the current thread count."""
        self.model, self.x = model, x
        self.make = make or (lambda: copy.deepcopy(model))
        self.copies: dict[int, nn.Module] = {} if first is None else {torch.get_num_threads(): first}

    def __call__(self):
        n = torch.get_num_threads()
        if n not in self.copies:
            self.copies[n] = self.make()
        return self.copies[n](self.x)


def speedups(ms: dict[str, float], baseline: str) -> dict[str, float]:
    """time(baseline) / time(each): above 1 is faster than the baseline."""
    return {name: ms[baseline] / t for name, t in ms.items()}


# ---------------------------------------------------------------------------------------
# The Linear micro-benchmark (one layer, int8 in and out)
# ---------------------------------------------------------------------------------------


def bench_linear(m: int = 256, k: int = 1024, n: int = 1024, min_run_time: float = 0.5) -> dict:
    """Times fp32 nn.Linear, qlab QuantLinear (torch._int_mm path) and torch.ao's Linear."""
    torch.manual_seed(0)
    lin = nn.Linear(k, n).eval()
    x = torch.randn(m, k)
    w = lin.weight.detach()
    wqp = qlab.qparams_from_range(w.amin(1), w.amax(1), qlab.int8, symmetric=True)
    out_qp = qlab.qparams_from_range(-4.0, 4.0, qlab.uint8)
    ours = QuantLinear.from_float(lin, wqp, out_qp)
    xqp = qlab.qparams_from_range(float(x.min()), float(x.max()), qlab.uint8)
    xq = QTensor.quantize(x, xqp)
    with settings():
        theirs = qlab.to_torch(ours)
        x_torch = torch.quantize_per_tensor(x, float(xqp.scale), int(xqp.zero_point), torch.quint8)
        return {
            "fp32 nn.Linear": median_ms(lambda: lin(x), min_run_time),
            "qlab QuantLinear (_int_mm)": median_ms(lambda: ours(xq), min_run_time),
            "torch.ao Linear (x86/fbgemm)": median_ms(lambda: theirs(x_torch), min_run_time),
        }


# ---------------------------------------------------------------------------------------
# Dynamic quantization: an LSTM or a Linear stack (lesson 03)
# ---------------------------------------------------------------------------------------


class LSTMStack(nn.Module):
    """A 2-layer LSTM, hidden -> hidden, batch first; returns the output sequence only."""

    def __init__(self, hidden: int, num_layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(hidden, hidden, num_layers=num_layers, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


def dynamic_model(kind: str, hidden: int) -> nn.Module:
    """Random weights (seeded, the global RNG untouched): "lstm", a 2-layer LSTM of that hidden
    size, or "linear", a transformer-style feed-forward block hidden -> 4*hidden -> ReLU -> hidden."""
    _check_choice("kind", kind, KINDS)
    _check_int("hidden", hidden, *HIDDEN)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if kind == "lstm":
            return LSTMStack(hidden).eval()
        return nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.ReLU(), nn.Linear(4 * hidden, hidden)).eval()


@functools.lru_cache(maxsize=4)
def _dynamic_variants(kind: str, hidden: int) -> dict[str, nn.Module]:
    """fp32, torch.ao dynamic int8 and qlab dynamic int8 of the same random model (cached: a
    panel redraws the same size at other batch sizes)."""
    fp32 = dynamic_model(kind, hidden)
    with settings(threads=1):
        ao = tq.quantize_dynamic(fp32, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    return {"fp32": fp32, "torch.ao int8": ao, "qlab int8": qlab.quantize_dynamic(fp32)}


def time_dynamic(kind: str = "lstm", hidden: int = 256, batch: int = 32, seq: int = 32,
                 threads: int | None = None, min_run_time: float = 0.2) -> dict:
    """Latency of fp32, torch.ao dynamic int8 (quantize_dynamic, qint8, x86) and qlab dynamic int8
    on a random `kind` model ("lstm" or "linear") of size `hidden`, input [batch, seq, hidden].

    Returns {"kind", "hidden", "batch", "seq", "threads", "baseline": "fp32", "ms": {config: median
    ms}, "speedup": {config: fp32 ms / config ms}, "spread": see _timed}, all measured in this call
    at `threads` threads.
    """
    _check_choice("kind", kind, KINDS)
    hidden = _check_int("hidden", hidden, *HIDDEN)
    batch = _check_int("batch", batch, *BATCH)
    seq = _check_int("seq", seq, *SEQ)
    _check_common(threads, min_run_time)
    variants = _dynamic_variants(kind, hidden)
    x = torch.randn(batch, seq, hidden, generator=torch.Generator().manual_seed(1))
    with settings(threads):
        ms, spread = _timed({name: functools.partial(m, x) for name, m in variants.items()}, min_run_time)
        used = torch.get_num_threads()
    return {"kind": kind, "hidden": hidden, "batch": batch, "seq": seq, "threads": used,
            "baseline": "fp32", "ms": ms, "speedup": speedups(ms, "fp32"), "spread": spread}


def sweep_dynamic(kind: str = "lstm", hiddens=(128, 256, 512, 1024), batches=(1, 8, 32, 64), seq: int = 32,
                  threads: int | None = None, min_run_time: float = 0.2) -> dict:
    """time_dynamic over every (hidden, batch): {"hiddens", "batches", "seq", "threads",
    "speedup": {config: [[ratio for each batch] for each hidden]}, "ms" and "spread" the same way}."""
    table, spread = {"speedup": {}, "ms": {}}, []
    for h in hiddens:
        rows = [time_dynamic(kind, h, b, seq, threads, min_run_time) for b in batches]
        spread.append([r["spread"] for r in rows])
        for key in table:
            for name in rows[0][key]:
                table[key].setdefault(name, []).append([r[key][name] for r in rows])
    return {"kind": kind, "hiddens": list(hiddens), "batches": list(batches), "seq": seq,
            "threads": rows[0]["threads"], "spread": spread, **table}


def time_dynamic_overhead(hidden: int = 256, rows: int = 32, threads: int | None = None,
                          min_run_time: float = 0.2) -> dict:
    """Where a dynamic int8 Linear (hidden -> 4*hidden, `rows` input rows: the batch of one LSTM
    step, or batch*seq tokens of a Linear stack) spends its time, each part timed as its own
    torch op on the x86 engine, interleaved with the whole:

        "choose qparams":  min and max of x -> scale, zero point (torch._choose_qparams_per_tensor)
        "quantize x":      torch.quantize_per_tensor, x -> uint8 codes
        "int8 product":    the same product on pre-quantized x (torch.ao's static Linear)
        "dynamic Linear":  the whole call (torch.ao's dynamic Linear); "fp32 Linear" for reference

    "overhead_share" = (choose qparams + quantize x) / dynamic Linear: the run-time price of
    measuring the seasoning per order. Separate ops each pay a dispatch (a few us), so at tiny
    sizes the parts can add up to more than the whole.
    """
    hidden = _check_int("hidden", hidden, *HIDDEN)
    rows = _check_int("rows", rows, 1, BATCH[1] * SEQ[1])
    _check_common(threads, min_run_time)
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(hidden, 4 * hidden).eval()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) / hidden**0.5)
    x = torch.randn(rows, hidden, generator=gen)
    with settings(threads):
        dynamic = tq.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)[0]
        scale, zp = torch._choose_qparams_per_tensor(x, True)
        xq = torch.quantize_per_tensor(x, scale, zp, torch.quint8)
        static = nnq.Linear(hidden, 4 * hidden)
        static.set_weight_bias(dynamic.weight(), lin.bias.detach())
        static.scale, static.zero_point = 0.05, 64
        fns = {"fp32 Linear": functools.partial(lin, x),
               "dynamic Linear": functools.partial(dynamic, x),
               "choose qparams": functools.partial(torch._choose_qparams_per_tensor, x, True),
               "quantize x": functools.partial(torch.quantize_per_tensor, x, scale, zp, torch.quint8),
               "int8 product": functools.partial(static, xq)}
        ms, spread = _timed(fns, min_run_time)
        used = torch.get_num_threads()
    share = (ms["choose qparams"] + ms["quantize x"]) / ms["dynamic Linear"]
    return {"hidden": hidden, "rows": rows, "threads": used, "ms": ms, "overhead_share": share,
            "spread": spread}


# ---------------------------------------------------------------------------------------
# Static quantization: the lesson CNNs (lesson 04)
# ---------------------------------------------------------------------------------------


def cnn_model(model_name: str = "resnet", width: float = 1.0) -> nn.Module:
    """A lesson CNN with every channel width multiplied by `width` (random weights, seeded).

    resnet: qlab.lab.models.resnet(widths=(16, 32, 64) * width). mobilenet_v2: the lesson's
    QuantizableMobileNetV2 at width_mult 0.5 * width (models.mobilenet_v2 stops at the lesson's
    0.5, so wider ones are built here from the same table and blocks).
    """
    _check_choice("model_name", model_name, CNNS)
    width = _check_width(width)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if model_name == "resnet":
            return models.resnet(widths=tuple(max(1, round(c * width)) for c in (16, 32, 64)))
        if width <= 1.0:
            return models.mobilenet_v2(width_mult=0.5 * width)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.models.quantization.mobilenetv2 import (
                QuantizableInvertedResidual,
                QuantizableMobileNetV2,
            )
            from torchvision.models.quantization.utils import _replace_relu
        model = QuantizableMobileNetV2(num_classes=models.NUM_CLASSES, width_mult=0.5 * width,
                                       inverted_residual_setting=models.MOBILENET_32X32,
                                       block=QuantizableInvertedResidual)
        _replace_relu(model)
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
        "torch.ao int8": fuse, prepare with get_default_qconfig("x86"), calibrate, convert
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
    "speedup": {config: best fp32 ms / ms}, "spread": see _timed}.
    """
    batch = _check_int("batch", batch, *BATCH)
    _check_common(threads, min_run_time)
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
        ms, spread = _timed(fns, min_run_time)
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
    _check_choice("model_name", model_name, CNNS)
    width = _check_width(width)
    batch = _check_int("batch", batch, *BATCH)
    _check_common(threads, min_run_time)
    result = time_cnn_variants(_random_cnn_variants(model_name, width), batch, threads, min_run_time)
    return {"model": model_name, "width": width, **result}


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the configurations no other one beats on both speedup and quality (higher is
    better on both), in order of speed. points: name -> (speedup vs fp32, quality)."""
    for name, p in points.items():
        if len(p) != 2 or not all(isinstance(v, numbers.Real) and v == v for v in p):
            raise ValueError(f"point {name!r} must be (speedup, quality), two numbers, got {p!r}")
    front = [n for n, (s, q) in points.items()
             if not any(s2 >= s and q2 >= q and (s2, q2) != (s, q) for s2, q2 in points.values())]
    return sorted(front, key=lambda n: points[n][0])


# ---------------------------------------------------------------------------------------
# make bench: the tables, as markdown
# ---------------------------------------------------------------------------------------


def _trained_variants(name: str) -> dict[str, nn.Module]:
    """The trained lesson checkpoint, calibrated on 256 validation digits."""
    from .checkpoints import load_model
    from .data import digits_tensors

    x, _ = digits_tensors("val")
    return cnn_variants(load_model(name), list(x[:256].split(64)))


def _flag(spread: float) -> str:
    return f" UNSTABLE: rounds differ {spread:.1f}x" if spread > UNSTABLE else ""


def _footnote(spreads) -> str:
    worst = max(spreads)
    if worst > UNSTABLE:
        return (f"\n\nRows marked UNSTABLE: one configuration's timing rounds differed up to {worst:.1f}x, "
                "so other work was running; rerun on a quiet machine before quoting them.")
    return f"\n\n(timing rounds agree within {worst:.2f}x)"


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
                     f"| {ms['qlab int8'] / ms['torch.ao int8']:.1f}x |{_flag(r['spread'])}")
    return "\n".join(lines) + _footnote([r["spread"] for r in rows])


def cnn_table(batches=(1, 64), threads: int | None = None, min_run_time: float = 0.5) -> str:
    """Markdown: the trained lesson CNNs, best fp32 against torch.ao and qlab int8, as ratios."""
    variants = {name: _trained_variants(name) for name in CNNS}
    return cnn_markdown(time_models(variants, batches, threads, min_run_time))


def sweep_table(sweep: dict, config: str = "torch.ao int8") -> str:
    """Markdown: one row per hidden size, one column per batch, `config`'s speedup vs fp32."""
    head = "| hidden \\ batch | " + " | ".join(str(b) for b in sweep["batches"]) + " |"
    lines = [head, "|---" * (len(sweep["batches"]) + 1) + "|"]
    for h, row, spread in zip(sweep["hiddens"], sweep["speedup"][config], sweep["spread"], strict=True):
        lines.append(f"| {h} | " + " | ".join(f"{r:.2f}x" for r in row) + f" |{_flag(max(spread))}")
    return "\n".join(lines) + _footnote([s for row in sweep["spread"] for s in row])


def overhead_table(hiddens=(256, 1024), rows=(1, 32, 1024), threads: int | None = None,
                   min_run_time: float = 0.5) -> str:
    """Markdown: time_dynamic_overhead for each size, in microseconds, and the overhead share."""
    lines = ["| hidden | rows | fp32 us | dynamic us | choose qparams us | quantize x us | int8 product us "
             "| overhead share |", "|---|---|---|---|---|---|---|---|"]
    spreads = []
    for h in hiddens:
        for r in rows:
            o = time_dynamic_overhead(h, r, threads, min_run_time)
            parts = ("fp32 Linear", "dynamic Linear", "choose qparams", "quantize x", "int8 product")
            us = " | ".join(f"{o['ms'][k] * 1e3:.1f}" for k in parts)
            spreads.append(o["spread"])
            lines.append(f"| {h} | {r} | {us} | {o['overhead_share']:.0%} |{_flag(o['spread'])}")
    return "\n".join(lines) + _footnote(spreads)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=256)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds of timed calls per case (default 0.5, 0.1 with --quick)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="a short run: fewer sizes, shorter timings")
    p.add_argument("--only", choices=("linear", "cnn", "dynamic"), default=None, help="one table only")
    a = p.parse_args(argv)
    if a.threads is not None:
        _check_int("threads", a.threads, 1, max_threads())
        torch.set_num_threads(a.threads)
    run_time = a.min_run_time or (0.1 if a.quick else 0.5)
    threads = torch.get_num_threads()
    print(f"# qlab bench: torch threads = {threads}, median over at least {run_time:g} s of calls a case\n")
    print("Speedups are fp32 time / int8 time from the same run (above 1: int8 is faster).\n")

    if a.only in (None, "linear"):
        times = bench_linear(a.m, a.k, a.n, run_time)
        print(f"## One Linear, int8 in and out: M={a.m} K={a.k} N={a.n}\n")
        print("| configuration | ms | vs fp32 |\n|---|---|---|")
        for name, ms in times.items():
            print(f"| {name} | {ms:.3f} | {times['fp32 nn.Linear'] / ms:.2f}x |")
        ours = times["qlab QuantLinear (_int_mm)"]
        fbgemm = times["torch.ao Linear (x86/fbgemm)"]
        print(f"\nqlab / fbgemm time: {ours / fbgemm:.2f}x (goal: within 3x)\n")

    if a.only in (None, "cnn"):
        print("## The trained lesson CNNs, static int8 (x86 engine)\n")
        print(cnn_table((1, 64), None, run_time) + "\n")

    if a.only in (None, "dynamic"):
        hiddens = (128, 512, 1024) if a.quick else (128, 256, 512, 768, 1024)
        batches = (1, 32) if a.quick else (1, 8, 32, 64)
        for kind in KINDS:
            sweep = sweep_dynamic(kind, hiddens, batches, 32, None, run_time)
            for config in ("torch.ao int8", "qlab int8"):
                print(f"## Dynamic int8, {kind} (seq 32): {config} speedup vs fp32\n")
                print(sweep_table(sweep, config) + "\n")
        print("## Where a torch.ao dynamic Linear (hidden -> 4*hidden) spends its time\n")
        print(overhead_table(hiddens, (1, 32, 1024), None, run_time) + "\n")


if __name__ == "__main__":
    main()
