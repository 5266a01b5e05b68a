"""qlab: quantization from scratch, checked against PyTorch.

    import qlab
    qp = qlab.qparams_from_range(-1.0, 1.0, qlab.uint8)
    q = qlab.quantize(x, qp); x_hat = qlab.dequantize(q, qp)
"""

from . import metrics
from .convert import QConfig, convert, prepare, prepare_qat, quantize_dynamic, to_torch
from .ops import dequantize, fake_quantize, quantize
from .qparams import EPS, QParams, qparams_from_range
from .qtypes import QDType, int4, int8, int16, qdtype, uint4, uint8

__all__ = [
    "EPS",
    "QDType",
    "QConfig",
    "QParams",
    "convert",
    "prepare",
    "prepare_qat",
    "quantize_dynamic",
    "to_torch",
    "dequantize",
    "fake_quantize",
    "int4",
    "int8",
    "int16",
    "metrics",
    "qdtype",
    "qparams_from_range",
    "quantize",
    "uint4",
    "uint8",
]
__version__ = "0.1.0"
