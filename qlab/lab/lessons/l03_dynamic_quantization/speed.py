"""Lesson 03, its timings: medians of interleaved rounds, ratios from one run."""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from numbers import Real

import torch
import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq
from torch import nn

import qlab
from qlab.lab.kit.check import check_choice, check_int
from qlab.lab.kit.timing import max_threads, median_ms, settings, speedups, timed
from qlab.lab.kit.torch_ao import engine

KINDS = ("lstm", "linear")


HIDDEN, BATCH, SEQ = (8, 4096), (1, 1024), (1, 1024)  # what the functions accept


def check_common(threads, min_run_time) -> None:
    if threads is not None:
        check_int("threads", threads, 1, max_threads())
    if isinstance(min_run_time, bool) or not isinstance(min_run_time, Real) or not min_run_time > 0:
        raise ValueError(f"min_run_time must be a number of seconds > 0, got {min_run_time!r}")


# ---------------------------------------------------------------------------------------
# Dynamic quantization: an LSTM or a Linear stack
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
    check_choice("kind", kind, KINDS)
    check_int("hidden", hidden, *HIDDEN)
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
    ms}, "speedup": {config: fp32 ms / config ms}, "spread": see timed}, all measured in this call
    at `threads` threads.
    """
    check_choice("kind", kind, KINDS)
    hidden = check_int("hidden", hidden, *HIDDEN)
    batch = check_int("batch", batch, *BATCH)
    seq = check_int("seq", seq, *SEQ)
    check_common(threads, min_run_time)
    variants = _dynamic_variants(kind, hidden)
    x = torch.randn(batch, seq, hidden, generator=torch.Generator().manual_seed(1))
    with settings(threads):
        ms, spread = timed({name: functools.partial(m, x) for name, m in variants.items()}, min_run_time)
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
    hidden = check_int("hidden", hidden, *HIDDEN)
    rows = check_int("rows", rows, 1, BATCH[1] * SEQ[1])
    check_common(threads, min_run_time)
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
        ms, spread = timed(fns, min_run_time)
        used = torch.get_num_threads()
    share = (ms["choose qparams"] + ms["quantize x"]) / ms["dynamic Linear"]
    return {"hidden": hidden, "rows": rows, "threads": used, "ms": ms, "overhead_share": share,
            "spread": spread}


def _other_processes_cores():
    """A stopwatch of the CPU that other processes use (Linux /proc): returns read(), which gives
    the cores they kept busy on average since the start; None where /proc is missing."""
    def ticks():
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        return sum(cpu) - cpu[3] - cpu[4], int(own[11]) + int(own[12]), time.perf_counter()

    try:
        start = ticks()
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        busy, own, t = ticks()
        return ((busy - start[0]) - (own - start[1])) / hz / max(t - start[2], 1e-9)

    return read


def speed_vs_fp32(models: Mapping[str, nn.Module], fp32: nn.Module, batches: Sequence[dict],
                  threads: int = 2, min_run_time: float = 0.3, rounds: int = 3,
                  max_other_load: float | None = None, max_tries: int = 20) -> dict[str, dict]:  # fmt: skip
    """Latency of running every batch through each model, and its speed-up over fp32:

        speedup = t_fp32 / t_model       (both medians of torch.utils.benchmark's
                                          blocked_autorange, at `threads` torch threads)

    Each round times fp32 right before each model, and a model's speed-up is the median over
    rounds of t_fp32 / t_model from those adjacent pairs: on a shared machine whose load comes
    and goes, both sides of a pair see about the same load.
    On a machine shared with other jobs, max_other_load (e.g. 0.15 cores) retakes a pair, up to
    max_tries times, while other processes kept more than that busy (Linux; /proc/stat).
    Returns name -> {"ms": median ms, "speedup": median ratio, "speedup_range": (lowest, highest)
    per-round ratio, "busy_pairs": pairs kept although the machine stayed busy}, "fp32" first.
    """
    if not isinstance(models, Mapping) or not all(isinstance(m, nn.Module) for m in models.values()):
        raise TypeError("models must be a dict of name -> nn.Module")
    if not isinstance(fp32, nn.Module):
        raise TypeError(f"fp32 must be the float nn.Module, got {type(fp32).__name__}")
    if not batches:
        raise ValueError("batches is empty; pass minilm_batches(model, sentences)")
    for arg, value in (("threads", threads), ("rounds", rounds), ("max_tries", max_tries)):
        check_int(arg, value, 1, what="an int >= 1")
    if max_other_load is not None and not (isinstance(max_other_load, (int, float))
                                           and max_other_load >= 0):  # fmt: skip
        raise ValueError(f"max_other_load must be None or a number of cores >= 0, got {max_other_load!r}")

    def pair(m):
        """(t_fp32, t_m) in ms, and whether other processes stayed under max_other_load."""
        read = _other_processes_cores() if max_other_load is not None else None
        f = median_ms(lambda: [fp32(dict(b)) for b in batches], min_run_time)
        t = median_ms(lambda: [m(dict(b)) for b in batches], min_run_time)
        return f, t, read is None or read() <= max_other_load

    fp32_ms: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in models}
    ratios: dict[str, list[float]] = {name: [] for name in models}
    busy = dict.fromkeys(models, 0)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with engine():
            for _ in range(rounds):
                for name, m in models.items():
                    for _ in range(max_tries):
                        f, t, quiet = pair(m)
                        if quiet:
                            break
                    busy[name] += not quiet
                    fp32_ms.append(f)
                    times[name].append(t)
                    ratios[name].append(f / t)
    finally:
        torch.set_num_threads(old)
    out = {"fp32": {"ms": statistics.median(fp32_ms), "speedup": 1.0, "speedup_range": (1.0, 1.0),
                    "busy_pairs": 0}}
    for name in models:
        out[name] = {"ms": statistics.median(times[name]), "speedup": statistics.median(ratios[name]),
                     "speedup_range": (min(ratios[name]), max(ratios[name])), "busy_pairs": busy[name]}
    return out
