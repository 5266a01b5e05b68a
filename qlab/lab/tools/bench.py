"""`make bench`: the speed tables of lessons 03 and 04 from the command line.

    python -m qlab.lab.tools.bench            the Linear table, the lesson CNNs table, the dynamic sweep
    python -m qlab.lab.tools.bench --quick    the same, shorter (fewer sizes, 0.1 s of calls a case)

The tables: the Linear micro-benchmark (bench_linear, here), lesson 03's speed module
(`sweep_dynamic`, `time_dynamic_overhead`) and lesson 04's (`time_models`, `cnn_markdown`):
medians of interleaved rounds, every speed-up a ratio from one run."""

from __future__ import annotations

import argparse

import torch
from torch import nn

import qlab
from qlab import QTensor
from qlab.lab.kit.check import check_int
from qlab.lab.kit.checkpoints import load_model
from qlab.lab.kit.data import digits_tensors
from qlab.lab.kit.models import CNNS
from qlab.lab.kit.timing import flag, footnote, max_threads, median_ms, settings
from qlab.lab.lessons.l03_dynamic_quantization.speed import (
    KINDS,
    sweep_dynamic,
    time_dynamic_overhead,
)
from qlab.lab.lessons.l04_static_quantization.speed import (
    cnn_markdown,
    cnn_variants,
    time_models,
)
from qlab.nn import QuantLinear

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


def trained_variants(name: str) -> dict[str, nn.Module]:
    """The trained lesson checkpoint, calibrated on 256 validation digits."""
    x, _ = digits_tensors("val")
    return cnn_variants(load_model(name), list(x[:256].split(64)))


def cnn_table(batches=(1, 64), threads: int | None = None, min_run_time: float = 0.5) -> str:
    """Markdown: the trained lesson CNNs, best fp32 against torch.ao and qlab int8, as ratios."""
    variants = {name: trained_variants(name) for name in CNNS}
    return cnn_markdown(time_models(variants, batches, threads, min_run_time))


def sweep_table(sweep: dict, config: str = "torch.ao int8") -> str:
    """Markdown: one row per hidden size, one column per batch, `config`'s speedup vs fp32."""
    head = "| hidden \\ batch | " + " | ".join(str(b) for b in sweep["batches"]) + " |"
    lines = [head, "|---" * (len(sweep["batches"]) + 1) + "|"]
    for h, row, spread in zip(sweep["hiddens"], sweep["speedup"][config], sweep["spread"], strict=True):
        lines.append(f"| {h} | " + " | ".join(f"{r:.2f}x" for r in row) + f" |{flag(max(spread))}")
    return "\n".join(lines) + footnote([s for row in sweep["spread"] for s in row])


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
            lines.append(f"| {h} | {r} | {us} | {o['overhead_share']:.0%} |{flag(o['spread'])}")
    return "\n".join(lines) + footnote(spreads)


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
        check_int("threads", a.threads, 1, max_threads())
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
