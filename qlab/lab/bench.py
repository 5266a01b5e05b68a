"""Latency of qlab's int8 Linear against torch.ao's fbgemm Linear and fp32, in one run.

    python -m qlab.lab.bench [--m 256 --k 1024 --n 1024 --repeats 50 --threads 1]

Medians of `repeats` timed calls after warm-up, all at the same torch thread count; the
report gives ratios, measured in this run (a ratio is what carries over between machines).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

import qlab
from qlab.nn import QTensor, QuantLinear


def median_ms(fn, repeats: int = 50, warmup: int = 5) -> float:
    """Median wall time of fn() in milliseconds."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_linear(m: int = 256, k: int = 1024, n: int = 1024, repeats: int = 50) -> dict:
    """Times fp32 nn.Linear, qlab QuantLinear (torch._int_mm path) and torch.ao's Linear."""
    torch.manual_seed(0)
    lin = nn.Linear(k, n).eval()
    x = torch.randn(m, k)
    w = lin.weight.detach()
    wqp = qlab.qparams_from_range(w.amin(1), w.amax(1), qlab.int8, symmetric=True)
    out_qp = qlab.qparams_from_range(-4.0, 4.0, qlab.uint8)
    ours = QuantLinear.from_float(lin, wqp, out_qp)
    xqp = qlab.qparams_from_range(float(x.min()), float(x.max()), qlab.uint8)
    xq = QTensor(qlab.quantize(x, xqp), float(xqp.scale), int(xqp.zero_point))
    ours(xq)  # fixes the input qparams and the int32 bias
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = torch.backends.quantized.engine
        torch.backends.quantized.engine = "x86"
        theirs = qlab.to_torch(ours)
        x_torch = torch.quantize_per_tensor(x, float(xqp.scale), int(xqp.zero_point), torch.quint8)
        try:
            times = {
                "fp32 nn.Linear": median_ms(lambda: lin(x), repeats),
                "qlab QuantLinear (_int_mm)": median_ms(lambda: ours(xq), repeats),
                "torch.ao Linear (x86/fbgemm)": median_ms(lambda: theirs(x_torch), repeats),
            }
        finally:
            torch.backends.quantized.engine = old
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=256)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    times = bench_linear(a.m, a.k, a.n, a.repeats)
    print(f"Linear M={a.m} K={a.k} N={a.n}, {torch.get_num_threads()} threads, "
          f"median of {a.repeats}")
    for name, ms in times.items():
        print(f"  {name:30s} {ms:8.3f} ms")
    ours = times["qlab QuantLinear (_int_mm)"]
    print(f"  qlab / fbgemm time: {ours / times['torch.ao Linear (x86/fbgemm)']:.2f}x   "
          f"(goal: within 3x)")
    print(f"  qlab / fp32 time:   {ours / times['fp32 nn.Linear']:.2f}x")


if __name__ == "__main__":
    main()
