"""Latency of qlab's int8 Linear against torch.ao's fbgemm Linear and fp32, in one run.

    python -m qlab.lab.bench [--m 256 --k 1024 --n 1024 --min-run-time 0.5 --threads 1]

Medians from torch.utils.benchmark's blocked_autorange, all at the same torch thread count;
the report gives ratios, measured in this run (a ratio is what carries over between machines).
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch import nn
from torch.utils import benchmark

import qlab
from qlab import QTensor
from qlab.nn import QuantLinear


def median_ms(fn, min_run_time: float = 0.5) -> float:
    """Median time of one fn() call in milliseconds, at torch's current thread count.

    torch.utils.benchmark's blocked_autorange warms up, then times blocks of calls for at
    least min_run_time seconds; the median over the blocks resists a busy machine's outliers.
    """
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    with torch.inference_mode():
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = torch.backends.quantized.engine
        torch.backends.quantized.engine = "x86"
        theirs = qlab.to_torch(ours)
        x_torch = torch.quantize_per_tensor(x, float(xqp.scale), int(xqp.zero_point), torch.quint8)
        try:
            times = {
                "fp32 nn.Linear": median_ms(lambda: lin(x), min_run_time),
                "qlab QuantLinear (_int_mm)": median_ms(lambda: ours(xq), min_run_time),
                "torch.ao Linear (x86/fbgemm)": median_ms(lambda: theirs(x_torch), min_run_time),
            }
        finally:
            torch.backends.quantized.engine = old
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=256)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--min-run-time", type=float, default=0.5, help="seconds of timed calls per case")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    times = bench_linear(a.m, a.k, a.n, a.min_run_time)
    print(f"Linear M={a.m} K={a.k} N={a.n}, {torch.get_num_threads()} threads, "
          f"median over at least {a.min_run_time:g} s of calls each")
    for name, ms in times.items():
        print(f"  {name:30s} {ms:8.3f} ms")
    ours = times["qlab QuantLinear (_int_mm)"]
    print(f"  qlab / fbgemm time: {ours / times['torch.ao Linear (x86/fbgemm)']:.2f}x   "
          f"(goal: within 3x)")
    print(f"  qlab / fp32 time:   {ours / times['fp32 nn.Linear']:.2f}x")


if __name__ == "__main__":
    main()
