"""Issue 25, item 14 (per-group helpers) and item 12's keep_fp32: a group size that does not fit
the row, and a negative count of fp32 Linears, each a clear error naming what is allowed."""

import numpy as np
import pytest
import torch

from qlab.lab.kit.models import load_minilm
from qlab.lab.lessons.l01_quantization_math.numbers import check_group, per_group_qparams
from qlab.lab.lessons.l03_dynamic_quantization.numbers import best_minilm_config
from qlab.lab.lessons.l07_quantize_and_pt2e.numbers import qlab_codes
from qlab.qtypes import int4

W = torch.randn(4, 6)


@pytest.mark.parametrize("group, message", [
    (0, r"group must be a divisor of the row length 6: one of \[1, 2, 3, 6\], got 0"),
    (12, r"group must be a divisor of the row length 6: one of \[1, 2, 3, 6\], got 12"),  # spans rows
    (4, r"group=4 does not divide the row length 6; a group never spans two rows: use one of \[1, 2, 3, 6\]"),
    (2.0, r"group must be a divisor of the row length 6"),
])
def test_a_group_that_does_not_fit_the_row_is_refused(group, message):
    with pytest.raises(ValueError, match=message):
        per_group_qparams(W, 4, group)
    with pytest.raises(ValueError, match=message):
        qlab_codes(W, int4, True, group)


def test_numpy_group_sizes_are_group_sizes():
    assert check_group(np.int64(3), 6) == 3
    assert torch.equal(qlab_codes(W, int4, True, np.int64(3)), qlab_codes(W, int4, True, 3))
    assert per_group_qparams(W, 4, np.int32(2)).scale.numel() == 12


@pytest.mark.parametrize("keep", [-1, 38, 2.5])
def test_keep_fp32_must_be_a_count_of_linears_or_names(keep):
    model = load_minilm()
    error = ValueError if isinstance(keep, int) else TypeError
    with pytest.raises(error, match=r"keep_fp32"):
        best_minilm_config(model, ["a sentence"] * 4, keep_fp32=keep)
