"""qlab: quantization from scratch, checked against PyTorch.

    import qlab
    qp = qlab.qparams_from_range(-1.0, 1.0, qlab.uint8)
    q = qlab.quantize(x, qp); x_hat = qlab.dequantize(q, qp)

The modules follow one spine, each using only those before it:
qtypes -> qparams -> ops -> tensor, observers -> fake_quant -> qconfig -> nn -> pipeline,
with integer (integer products, requantization), fuse (batch-norm folding), smoothquant and
metrics beside it (tests/test_layering.py keeps the ranks). The classroom, qlab.lab, is built on
top: its kit, one package per lesson, and the tools; nothing here imports it.
"""

from . import fuse, metrics, nn, observers
from .fake_quant import FakeQuantize
from .ops import dequantize, fake_quantize, quantize
from .pipeline import convert, prepare, prepare_qat, quantize_dynamic, to_torch
from .qconfig import (
    QConfig,
    default_qat_qconfig,
    default_qconfig,
    get_default_qat_qconfig,
    get_default_qconfig,
    minmax_qconfig,
)
from .qparams import EPS, QParams, qparams_from_range
from .qtypes import QDType, int4, int8, int16, qdtype, uint4, uint8
from .tensor import QTensor

__all__ = [
    "EPS",
    "FakeQuantize",
    "QConfig",
    "QDType",
    "QParams",
    "QTensor",
    "convert",
    "default_qat_qconfig",
    "default_qconfig",
    "dequantize",
    "fake_quantize",
    "fuse",
    "get_default_qat_qconfig",
    "get_default_qconfig",
    "int16",
    "int4",
    "int8",
    "metrics",
    "minmax_qconfig",
    "nn",
    "observers",
    "prepare",
    "prepare_qat",
    "qdtype",
    "qparams_from_range",
    "quantize",
    "quantize_dynamic",
    "to_torch",
    "uint4",
    "uint8",
]
__version__ = "0.1.0"
