"""Run every lesson as on an ARM laptop (qnnpack only) and fail on any error cell.

    PYTHONPATH=tests/qnnpack python tests/qnnpack/run_lessons.py [--out DIR] [notebooks/NN_*.ipynb ...]

`make test-qnnpack` runs it. The sitecustomize beside this file restricts PyTorch to qnnpack in
this process and in every kernel it starts. Each lesson runs in a fresh kernel, from the
notebooks folder, in memory (nothing is written back); every cell runs even after an error, so the
report lists all of them. Outputs are not compared with the committed ones: timings and some
checked figures depend on the engine (the x86 run, `make test`, compares them). With --out, each
executed lesson is written there, to read what a student on an ARM laptop sees.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
HERE = str(Path(__file__).resolve().parent)
#: appended to each lesson in memory: proves its kernel ran with qnnpack only
CHECK = ("import torch\nassert torch.backends.quantized.supported_engines == ['none', 'qnnpack'], "
         "'this kernel is not restricted to qnnpack: the sitecustomize was not on its path'")


def error_cells(path: Path, out: Path | None = None, timeout: int = 900) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK))
    NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = []
    for i, cell in enumerate(nb.cells):
        where = "the qnnpack check" if i == len(nb.cells) - 1 else f"cell {i}"
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(f"{where}: {output['ename']}: {output['evalue'][:300]}")
    if out is not None:
        nb.cells.pop()
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)
    return errors


def main(argv: list[str]) -> int:
    if torch.backends.quantized.supported_engines != ["none", "qnnpack"]:
        print("run with PYTHONPATH=tests/qnnpack: PyTorch is not restricted to qnnpack here")
        return 2
    # the kernels start in the notebooks folder: give them this folder by its absolute path
    os.environ["PYTHONPATH"] = os.pathsep.join([HERE, *os.environ.get("PYTHONPATH", "").split(os.pathsep)])
    out = None
    if argv[:1] == ["--out"]:
        out, argv = Path(argv[1]).resolve(), argv[2:]
    paths = [Path(a) for a in argv] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    failed = 0
    for path in paths:
        start = time.perf_counter()
        errors = error_cells(path.resolve(), out)
        print(f"{path.name}: {len(errors)} error cells ({time.perf_counter() - start:.0f} s)", flush=True)
        for line in errors:
            print("   ", line, flush=True)
        failed += bool(errors)
    print(f"{len(paths) - failed} of {len(paths)} lessons ran with qnnpack only and no error cell")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
