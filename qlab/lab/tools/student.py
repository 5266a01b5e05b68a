"""The student edition: the lessons without their exercise solutions (`make student`).

    python -m qlab.lab.tools.student [--out student]

Every code cell tagged `solution` is dropped, with the "**One solution**" note just before it, and
the outputs are cleared, so the student edition holds neither the solution code nor its result.
The exercise cell before it stays: run as it is, its self-check prints ❌ and a hint, and the rest
of the lesson runs on (no later cell uses a solution; the summary then prints "NO" for it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ClearOutputPreprocessor, TagRemovePreprocessor

SOLUTION_TAG = "solution"
SOLUTION_NOTE = "**One solution**"


def is_solution(cell) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def strip_solutions(nb):
    """The notebook without solution cells (and the note that introduces each), outputs cleared:
    nbconvert's TagRemovePreprocessor and ClearOutputPreprocessor, the note tagged first."""
    for cell, following in zip(nb.cells, nb.cells[1:], strict=False):
        if (cell.cell_type == "markdown" and cell.source.lstrip().startswith(SOLUTION_NOTE)
                and is_solution(following)):
            cell.metadata.setdefault("tags", []).append(SOLUTION_TAG)
    nb, _ = TagRemovePreprocessor(remove_cell_tags={SOLUTION_TAG}).preprocess(nb, {})
    nb, _ = ClearOutputPreprocessor().preprocess(nb, {})
    return nb


def make_student(src: str | Path = "notebooks", out: str | Path = "student") -> list[Path]:
    """Write the student edition of every numbered lesson of src into out; return the paths."""
    src, out = Path(src), Path(out)
    lessons = sorted(src.glob("[0-9]*.ipynb"))
    if not lessons:
        raise FileNotFoundError(f"no lessons (NN_*.ipynb) in {src.resolve()}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in lessons:
        nb = strip_solutions(nbformat.read(path, as_version=4))
        target = out / path.name
        nbformat.write(nb, target)
        written.append(target)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write the lessons without exercise solutions.")
    parser.add_argument("--src", default="notebooks")
    parser.add_argument("--out", default="student")
    args = parser.parse_args(argv)
    for path in make_student(args.src, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
