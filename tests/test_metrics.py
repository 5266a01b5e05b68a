import math

import pytest
import torch

import qlab
from qlab import metrics


def test_mse_sqnr_cosine_known_values():
    x = torch.tensor([1.0, -1.0, 1.0, -1.0])
    y = x + 0.1
    assert metrics.mse(x, y) == pytest.approx(0.01)
    assert metrics.sqnr(x, y) == pytest.approx(10 * math.log10(4 / 0.04))
    assert metrics.cosine(x, 2 * x) == pytest.approx(1.0)
    assert metrics.cosine(x, -x) == pytest.approx(-1.0)
    assert metrics.sqnr(x, x) == math.inf


def test_sqnr_grows_about_six_db_per_bit():
    x = torch.rand(100_000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sq = []
    for bits in (4, 6, 8):
        qp = qlab.qparams_from_range(-1.0, 1.0, qlab.qdtype(bits, True), symmetric=True)
        sq.append(metrics.sqnr(x, qlab.fake_quantize(x, qp)))
    assert 11 < sq[1] - sq[0] < 13 and 11 < sq[2] - sq[1] < 13  # 6.02 dB per bit


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"x and y must have the same shape, got \(3,\) and \(4,\)"):
        metrics.mse(torch.ones(3), torch.ones(4))


def test_model_size_bytes_counts_storage():
    small = metrics.model_size_bytes(torch.nn.Linear(10, 10))
    big = metrics.model_size_bytes(torch.nn.Linear(100, 100))
    assert big > 100 * 100 * 4 > small
