"""The shape of the package: qlab/ never imports qlab/lab/, no import cycles, and the concepts
follow one spine, each module using only those before it:

    qtypes -> qparams -> ops -> tensor, observers -> fake_quant -> qconfig -> nn -> pipeline

(integer, fuse and metrics are leaves beside the spine.) Imports inside functions count.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "qlab"

#: each module's rank on the spine; a module may import only lower ranks (or its own package)
SPINE = {
    "qlab.qtypes": 0, "qlab.integer": 0, "qlab.metrics": 0,
    "qlab.qparams": 1,
    "qlab.ops": 2,
    "qlab.tensor": 3, "qlab.observers": 3,
    "qlab.fake_quant": 4, "qlab.fuse": 4,
    "qlab.qconfig": 5, "qlab.smoothquant": 5,
    "qlab.nn": 6,
    "qlab.pipeline": 7,
    "qlab": 8,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every qlab module this file imports, at the top or inside a function."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "qlab" or m.startswith("qlab.")} & MODULES.keys() - {name}


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _concept(name: str) -> str | None:
    """The SPINE entry a module belongs to (qlab.nn.static -> qlab.nn)."""
    while name and name not in SPINE:
        name = name.rpartition(".")[0]
    return name or None


def test_every_concept_module_has_a_place_on_the_spine():
    unplaced = [m for m in MODULES if not m.startswith("qlab.lab") and _concept(m) is None]
    assert not unplaced, f"add these to SPINE in tests/test_layering.py: {unplaced}"


def test_the_concepts_never_import_the_classroom():
    bad = {m: sorted(i for i in deps if i.startswith("qlab.lab"))
           for m, deps in GRAPH.items() if not m.startswith("qlab.lab")}
    assert not {m: d for m, d in bad.items() if d}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("qlab.lab")))
def test_imports_run_down_the_spine(module):
    """A module imports only concepts earlier on the spine, or modules of its own package."""
    here = _concept(module)
    upward = sorted(d for d in GRAPH[module]
                    if _concept(d) != here and SPINE[_concept(d)] >= SPINE[here])
    assert not upward, f"{module} imports {upward}, which come later on the spine"


def test_no_import_cycles_anywhere():
    """Depth-first search over the whole import graph, classroom included."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(d):] + [d])}")
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m)
