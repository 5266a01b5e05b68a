import pytest
import torch

import qlab


@pytest.mark.parametrize(
    "bits,signed,qmin,qmax,storage",
    [
        (8, True, -128, 127, torch.int8),
        (8, False, 0, 255, torch.uint8),
        (4, True, -8, 7, torch.int8),
        (4, False, 0, 15, torch.uint8),
        (2, True, -2, 1, torch.int8),
        (16, True, -32768, 32767, torch.int16),
        (16, False, 0, 65535, torch.int32),
        (12, False, 0, 4095, torch.int32),
    ],
)
def test_grid(bits, signed, qmin, qmax, storage):
    dt = qlab.qdtype(bits, signed)
    assert (dt.qmin, dt.qmax, dt.storage) == (qmin, qmax, storage)
    info = torch.iinfo(dt.storage)
    assert info.min <= dt.qmin and dt.qmax <= info.max


def test_named_grids():
    assert qlab.int8 == qlab.qdtype(8, True) and qlab.uint8 == qlab.qdtype(8, False)
    assert (qlab.int4.qmin, qlab.uint4.qmax) == (-8, 15)
    assert repr(qlab.uint8) == "uint8[0..255]"


@pytest.mark.parametrize("bits", [0, 1, 17, 32, -8])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match=r"bits must be between 2 and 16"):
        qlab.qdtype(bits)


@pytest.mark.parametrize("bits", [8.0, "8", True, None])
def test_bits_wrong_type(bits):
    with pytest.raises(TypeError, match="bits must be an int"):
        qlab.qdtype(bits)


def test_signed_wrong_type():
    with pytest.raises(TypeError, match="signed must be True or False"):
        qlab.qdtype(8, signed=1)
