"""Lesson 03 · dynamic quantization (CharLSTM and MiniLM).

Measures per-call activation scales, MiniLM's embedding quality after dynamic int8 (per layer,
with SmoothQuant and fp32 layers kept), and the speed of torch.ao's and qlab's dynamic int8
against fp32 over size and batch: where int8 pays and where it does not.

Used by `notebooks/03_dynamic_quantization.ipynb`,
which imports this package and the kit (qlab.lab.kit).
Role modules: checks, figures, numbers, panels, speed; imported below: the names the notebook calls directly.
"""

from . import checks, figures, numbers, panels, speed
from .checks import check_dynamic_qparams
from .panels import dynamic_speed_panel, smoothquant_panel

__all__ = [
    "checks", "figures", "numbers", "panels", "speed", "check_dynamic_qparams", "dynamic_speed_panel",
    "smoothquant_panel",
]
