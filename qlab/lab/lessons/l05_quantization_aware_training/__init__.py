"""Lesson 05 · quantization-aware training.

Measures fake quantization's staircase and its straight-through gradient, then QAT against PTQ
at low bit widths on the lesson CNNs (freezing schedule, learning rate, LSQ), qlab against
torch.ao's QAT, and the recorded sweep that `make checkpoints` writes.

Used by `notebooks/05_quantization_aware_training.ipynb`,
which imports this package and the kit (qlab.lab.kit).
Role modules: checks, figures, numbers, panels; imported below: the names the notebook calls directly.
"""

from . import checks, figures, numbers, panels
from .checks import check_ste
from .panels import qat_curve_panel, ste_panel

__all__ = [
    "checks", "figures", "numbers", "panels", "check_ste", "qat_curve_panel", "ste_panel",
]
