"""Lesson 02 · observers and calibration.

Measures how each observer (min-max, moving average, histogram, percentile, MSE, entropy)
picks a range from calibration batches, with and without outliers, scores the qparams it
chooses, checks them against torch.ao's observers, and sweeps activation bit widths.

Used by `notebooks/02_observers_and_calibration.ipynb`,
which imports this package and the kit (qlab.lab.kit).
Role modules: checks, figures, numbers, panels; imported below: the names the notebook calls directly.
"""

from . import checks, figures, numbers, panels
from .checks import check_moving_average, check_percentile_range
from .numbers import activation_bits_sweep, inject_outliers, observer_parity, score_observers, with_settings
from .panels import outlier_panel

__all__ = [
    "checks", "figures", "numbers", "panels", "activation_bits_sweep", "check_moving_average",
    "check_percentile_range", "inject_outliers", "observer_parity", "outlier_panel", "score_observers",
    "with_settings",
]
