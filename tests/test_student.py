"""The student edition (`make student`): no solution is left in it, and every lesson runs top to
bottom without an error (each unsolved exercise's self-check prints its hint instead)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from qlab.lab.student import is_solution, make_student

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    make_student(ROOT / "notebooks", out)
    return out


def test_every_lesson_has_one_exercise_and_a_tagged_solution():
    for path in LESSONS:
        nb = nbformat.read(path, as_version=4)
        solutions = [c for c in nb.cells if is_solution(c)]
        assert solutions, f"{path.name}: no cell tagged 'solution'"
        exercises = [c for c in nb.cells if "raise NotImplementedError" in c.source]
        assert exercises, f"{path.name}: no exercise cell"


def test_no_solution_remains(student):
    for path in LESSONS:
        original = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nbformat.read(student / path.name, as_version=4).cells)
        shared = {line for c in original.cells if not is_solution(c) for line in c.source.splitlines()}
        for cell in original.cells:
            if is_solution(cell):  # the solution's own lines (not the ones its exercise cell shares)
                body = [line for line in cell.source.splitlines()[1:]
                        if len(line.strip()) > 25 and line not in shared]
                assert body and not any(line in text for line in body), f"{path.name}: solution text left"
        assert "**One solution**" not in text


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_student_notebook_runs_top_to_bottom(student, path):
    nb = nbformat.read(student / path.name, as_version=4)
    where = {"metadata": {"path": str(ROOT / "notebooks")}}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources=where).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "❌" in text and "NotImplementedError" in text  # the unsolved exercise's self-check said so
