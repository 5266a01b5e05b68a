"""The student edition (`make student`): no solution is left in it, and every lesson runs top to
bottom without an error (each unsolved exercise's self-check prints its hint instead).

Two checks of "runs top to bottom": a static one for every lesson (every name a solution cell
defines is defined before it by a cell the student keeps, so no later cell can miss it), and a run
of the student copy for the lessons that run in under 40 s (their last cell prints how long the
committed run took); the longer ones (MiniLM, QAT, torch.compile) are left to the static check,
which keeps `make test` under 15 minutes. nbval runs every original lesson in full.
"""

import ast
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from qlab.lab.tools.student import is_solution, make_student

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


def _names(source: str, ctx) -> set[str]:
    """Names a cell binds at its top level (ctx ast.Store: assignments, defs, classes, imports, loop
    variables), or every name it reads (ctx ast.Load)."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.startswith(("%", "!"))))
    if ctx is ast.Load:
        return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            names |= {n.id for n in ast.walk(node)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}  # fmt: skip
    return names


def _needed_from_solutions(nb) -> set[str]:
    """Names that only a solution cell defines (no kept cell before it) and a later kept cell reads."""
    cells = [c for c in nb.cells if c.cell_type == "code"]
    needed = set()
    for i, cell in enumerate(cells):
        if is_solution(cell):
            kept = set().union(*(_names(c.source, ast.Store) for c in cells[:i] if not is_solution(c)))
            later = set().union(*(_names(c.source, ast.Load) for c in cells[i + 1:] if not is_solution(c)))
            needed |= (_names(cell.source, ast.Store) - kept) & later
    return needed


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_no_later_cell_needs_a_name_only_a_solution_defines(path):
    needed = _needed_from_solutions(nbformat.read(path, as_version=4))
    assert not needed, f"{path.name}: {sorted(needed)} defined only by a solution and used later"


def test_the_static_check_catches_a_summary_that_needs_the_solution():
    from nbformat.v4 import new_code_cell, new_notebook

    solution = new_code_cell("passed = check(mine)")
    solution.metadata["tags"] = ["solution"]
    nb = new_notebook(cells=[new_code_cell("def mine(): raise NotImplementedError"), solution,
                             new_code_cell("print(passed)")])
    assert _needed_from_solutions(nb) == {"passed"}
    nb.cells.insert(1, new_code_cell("passed = check(mine)"))  # the stub cell defines it too
    assert _needed_from_solutions(nb) == set()


def test_the_static_check_sees_what_a_cell_defines_and_reads():
    source = "x = 1\ndef f(): pass\nimport torch.nn as tnn\nfor i in range(2): y = i"
    assert _names(source, ast.Store) == {"x", "f", "tnn", "i", "y"}
    assert _names("print(x + f())", ast.Load) == {"print", "x", "f"}


def _stored_run_seconds(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    found = re.findall(r"notebook ran in (\d+(?:\.\d+)?) s", text)
    assert found, f"{path.name}: its last cell should print 'notebook ran in X s'"
    return float(found[-1])


QUICK = [p for p in LESSONS if _stored_run_seconds(p) < 40]


@pytest.mark.parametrize("path", QUICK, ids=[p.stem for p in QUICK])
def test_student_notebook_runs_top_to_bottom(student, path):
    nb = nbformat.read(student / path.name, as_version=4)
    where = {"metadata": {"path": str(ROOT / "notebooks")}}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources=where).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "❌" in text and "NotImplementedError" in text  # the unsolved exercise's self-check said so
