"""Lesson 06 · choosing a method: the workflow as code, measured on every lesson model.

Measures one row per method (quality, loss, size, speed-up) for the lesson models, and decides
with the five-step workflow: train fp32, try PTQ (dynamic, then static), evaluate, QAT if every
PTQ model loses more than the tolerance, deploy the fastest int8 model within it.

Used by `notebooks/06_choosing_a_method.ipynb`,
which imports this package and the kit (qlab.lab.kit).
Role modules: checks, figures, numbers, panels; imported below: the names the notebook calls directly.
"""

from . import checks, figures, numbers, panels
from .checks import check_decision
from .panels import workflow_panel

__all__ = [
    "checks", "figures", "numbers", "panels", "check_decision", "workflow_panel",
]
