"""Lesson 07 · the modern path: torchao's `quantize_` and PT2E.

Measures torchao's configs and PT2E static quantization (export, prepare_pt2e, calibrate,
convert_pt2e, torch.compile) beside the classic torch.ao calls of lessons 03-05, and checks
torchao's math and its QAT gradient against qlab's.

Used by `notebooks/07_torchao_and_pt2e.ipynb`,
which imports this package and the kit (qlab.lab.kit).
Why not l07_torchao_and_pt2e: torch.export's ExportedProgram.module() drops its input guards
whenever a file on the call stack has "torchao" in its path (torch/export/_unlift.py), and this
lesson shows the error those guards raise.
Role modules: checks, numbers, panels; imported below: the names the notebook calls directly.
"""

from . import checks, numbers, panels
from .checks import check_torchao_translation
from .panels import paths_panel

__all__ = [
    "checks", "numbers", "panels", "check_torchao_translation", "paths_panel",
]
