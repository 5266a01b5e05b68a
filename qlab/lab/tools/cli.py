"""The `qlab` command.

    qlab doctor                    checks that this machine can run the lessons
    qlab report [--models ...]     measures every method on the lesson models, here (markdown or --json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import torch

from qlab.lab.kit import checkpoints, compiler, models, torch_ao
from qlab.lab.kit.check import check_int
from qlab.lab.kit.integrity import ChecksumError
from qlab.lab.lessons.l06_choosing_a_method import numbers as l06_numbers
from qlab.lab.lessons.l06_choosing_a_method.numbers import check_models


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def doctor() -> int:
    """Print what the lessons depend on; return 1 if something they need is missing."""
    ok = True
    torch_ao.quiet_logs()  # torchao's import notice (the import check below) is not for students
    print(f"python        {platform.python_version()} ({sys.executable})")
    print(f"torch         {torch.__version__}, {torch.get_num_threads()} threads")
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    chosen = "$QLAB_ENGINE" if os.environ.get("QLAB_ENGINE", "").strip() else "the best one here"
    print(f"int8 engine   {torch_ao.ENGINE} ({chosen}; PyTorch here has {', '.join(engines)})")
    for line in torch_ao.differences():
        print(f"  differs:    {line}")
    flags = _cpu_flags()
    if flags and torch_ao.X86:
        vnni = "avx512_vnni" in flags or "avx_vnni" in flags
        print(f"cpu           avx2={'avx2' in flags} avx512={'avx512f' in flags} vnni={vnni}"
              + ("" if vnni else "  (int8 speedups will be smaller without VNNI)"))
    cxx = compiler.cpp_compiler()
    print(f"c++ compiler  {cxx or 'none that works'} (torch.compile, lesson 07)")
    if cxx is None:
        print(f"  differs:    {compiler.missing_line('lesson 07', 'its compiled rows')}")
    for name in ("torchvision", "matplotlib", "ipywidgets", "jupyterlab", "sklearn", "torchao", "tqdm"):
        try:
            mod = __import__(name)
            print(f"{name:<13} {getattr(mod, '__version__', 'installed')}")
        except ImportError:
            print(f"{name:<13} MISSING: run `make setup` (README: without make)")
            ok = False
        except Exception as e:  # installed but broken, e.g. a CUDA torchvision beside a CPU-only torch
            print(f"{name:<13} BROKEN: {type(e).__name__}: {str(e).splitlines()[0][:120]} (reinstall it "
                  f"for this torch, {torch.__version__}: README, 'A class without GPUs')")
            ok = False
    try:
        for line in checkpoints.verify_all():
            print(f"checkpoint    {line}")
        print(f"MiniLM        sha256 ok ({models.verify_minilm()})")
    except (ChecksumError, OSError, ValueError, ImportError) as e:  # reported, as the lines above
        print(f"files         PROBLEM: {e}")
        ok = False
    print("all good: run `make lab` (without make: `jupyter lab --notebook-dir notebooks`)" if ok
          else "something is missing: see the lines marked above")
    return 0 if ok else 1


def report(models: str = "resnet,mobilenet_v2,charlstm", as_json: bool = False, threads: int = 2) -> int:
    """Measure fp32, dynamic, static and QAT int8 on the lesson models, on this machine (lesson 06)."""
    check_int("threads", threads, 1, what="a positive integer (torch threads)")
    torch.set_num_threads(threads)
    with torch_ao.engine():
        rows = l06_numbers.report_rows(models, threads=threads)
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": threads,
           "cpu_vnni": bool({"avx512_vnni", "avx_vnni"} & _cpu_flags())}
    if as_json:
        print(json.dumps({"environment": env, "rows": rows}, indent=1))
    else:
        print(f"qlab report: python {env['python']}, torch {env['torch']}, {threads} threads, "
              f"VNNI {env['cpu_vnni']}\n")
        print(l06_numbers.report_markdown(rows))
    return 0


COMMANDS = {"doctor": doctor, "report": report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help=doctor.__doc__.splitlines()[0])
    rep = sub.add_parser("report", help=report.__doc__.splitlines()[0])
    rep.add_argument("--models", default="resnet,mobilenet_v2,charlstm",
                     help="comma-separated, of resnet, mobilenet_v2, charlstm, minilm "
                          "(default: the first three)")
    rep.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    rep.add_argument("--threads", type=int, default=2, help="torch threads for every timing (default 2)")
    args = parser.parse_args(argv)
    if args.command == "report":
        try:
            check_models(args.models)
            check_int("--threads", args.threads, 1, what="a positive integer (torch threads)")
        except ValueError as e:
            parser.error(str(e))
        return report(args.models, args.json, args.threads)
    return COMMANDS[args.command]()


if __name__ == "__main__":
    sys.exit(main())
