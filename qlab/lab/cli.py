"""The `qlab` command: `qlab doctor` checks that this machine can run the lessons."""

from __future__ import annotations

import argparse
import platform
import sys

import torch

from . import checkpoints, models
from .integrity import ChecksumError


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
    print(f"python        {platform.python_version()} ({sys.executable})")
    print(f"torch         {torch.__version__}, {torch.get_num_threads()} threads")
    engines = torch.backends.quantized.supported_engines
    print(f"int8 engines  {', '.join(engines)}")
    if "x86" not in engines and "fbgemm" not in engines:
        print("  !! no x86/fbgemm engine: PyTorch's int8 kernels (the lessons' reference) are missing")
        ok = False
    flags = _cpu_flags()
    if flags:
        vnni = "avx512_vnni" in flags or "avx_vnni" in flags
        print(f"cpu           avx2={'avx2' in flags} avx512={'avx512f' in flags} vnni={vnni}"
              + ("" if vnni else "  (int8 speedups will be smaller without VNNI)"))
    for name in ("torchvision", "matplotlib", "ipywidgets", "jupyterlab", "sklearn", "tqdm"):
        try:
            mod = __import__(name)
            print(f"{name:<13} {getattr(mod, '__version__', 'installed')}")
        except ImportError:
            print(f"{name:<13} MISSING: run `make setup`")
            ok = False
    try:
        for line in checkpoints.verify_all():
            print(f"checkpoint    {line}")
        print(f"MiniLM        sha256 ok ({models.verify_minilm()})")
    except (ChecksumError, OSError, ValueError, ImportError) as e:  # reported, as the lines above
        print(f"files         PROBLEM: {e}")
        ok = False
    print("all good: run `make lab`" if ok else "something is missing: see the lines marked above")
    return 0 if ok else 1


COMMANDS = {"doctor": doctor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    return COMMANDS[args.command]()


if __name__ == "__main__":
    sys.exit(main())
