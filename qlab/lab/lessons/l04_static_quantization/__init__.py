"""Lesson 04 · static post-training quantization (ResNet and MobileNetV2).

Measures one int8 layer step by step against torch.ao's kernels, the bias rule's cost, each
layer's tolerance (SQNR), accuracy after calibrating on shifted images, and the speed of static
int8 against the best fp32.

An int8 layer computes, for input codes q_x on (s_x, z_x) and int8 weights q_w on s_w:

    acc   = sum_k (q_x - z_x) q_w                                       int32, exact
    q_out = clamp(round((acc + b / (s_x s_w)) * M) + z_out, lo, qmax),  M = s_x s_w / s_out

Used by `notebooks/04_static_quantization.ipynb`,
which imports this package and the kit (qlab.lab.kit).
Role modules: checks, figures, numbers, panels, speed; imported below: the names the notebook calls directly.
"""

from . import checks, figures, numbers, panels, speed
from .checks import check_multiplier
from .panels import cnn_speed_panel, shift_panel, stepper_panel

__all__ = [
    "checks", "figures", "numbers", "panels", "speed", "check_multiplier", "cnn_speed_panel",
    "shift_panel", "stepper_panel",
]
