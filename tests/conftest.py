import os

import pytest
import torch
from hypothesis import settings

# Warning filters live in one place: pyproject.toml's [tool.pytest.ini_options].

# Property tests draw the same examples on every run, so CI passes or fails for a reason that
# reproduces. Set HYPOTHESIS_PROFILE=explore to draw fresh random examples while developing.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
