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

from . import fuse, metrics, nn, observers, smoothquant
from .fake_quant import FakeQuantize, LearnedFakeQuantize, disable_observer, enable_observer
from .nn import freeze_bn_stats
from .ops import dequantize, fake_quantize, quantize
from .pipeline import convert, prepare, prepare_qat, quantize_dynamic, to_torch
from .qconfig import (
    QConfig,
    default_qat_qconfig,
    default_qconfig,
    get_default_qat_qconfig,
    get_default_qconfig,
    low_bit_qconfig,
    minmax_qconfig,
)
from .qparams import EPS, QParams, qparams_from_range
from .qtypes import QDType, int4, int8, int16, qdtype, uint4, uint8
from .smoothquant import input_channel_absmax, outlier_ratio, smooth_quant, smooth_scales
from .tensor import QTensor

__all__ = [
    "EPS",
    "FakeQuantize",
    "LearnedFakeQuantize",
    "QConfig",
    "QDType",
    "QParams",
    "QTensor",
    "convert",
    "default_qat_qconfig",
    "default_qconfig",
    "dequantize",
    "disable_observer",
    "enable_observer",
    "fake_quantize",
    "freeze_bn_stats",
    "fuse",
    "get_default_qat_qconfig",
    "get_default_qconfig",
    "input_channel_absmax",
    "int16",
    "int4",
    "int8",
    "low_bit_qconfig",
    "metrics",
    "minmax_qconfig",
    "nn",
    "observers",
    "outlier_ratio",
    "prepare",
    "prepare_qat",
    "qdtype",
    "qparams_from_range",
    "quantize",
    "quantize_dynamic",
    "smooth_quant",
    "smooth_scales",
    "smoothquant",
    "to_torch",
    "uint4",
    "uint8",
]
__version__ = "0.1.0"
