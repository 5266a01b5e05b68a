"""Lesson 01 · quantization math: grids, scale and zero point.

Measures the error of quantizing a tensor at a panel's settings (bits, scheme, clipping,
per-tensor or per-channel), checks qlab's qparams and codes against torch.ao's bit for bit,
and counts the bytes of per-channel and per-group int4/int8 weights.

Used by `notebooks/01_quantization_math.ipynb`,
which imports this package and the kit (qlab.lab.kit).
Role modules: checks, figures, numbers, panels; imported below: the names the notebook calls directly.
"""

from . import checks, figures, numbers, panels
from .checks import check_qparams, check_quantize
from .numbers import quantization_report
from .panels import quantization_panel

__all__ = [
    "checks", "figures", "numbers", "panels", "check_qparams", "check_quantize", "quantization_panel",
    "quantization_report",
]
