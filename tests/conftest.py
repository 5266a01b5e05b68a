import pytest
import torch

# Warning filters live in one place: pyproject.toml's [tool.pytest.ini_options].


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
