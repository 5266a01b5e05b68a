import warnings

import pytest
import torch

# torch.ao quantization (the reference we check against) warns that it is deprecated.
warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.ao")
warnings.filterwarnings("ignore", message="Please use quant_min and quant_max", category=UserWarning)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
