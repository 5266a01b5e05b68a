"""int8 modules. Static: integer weights and activations with fixed output qparams
(QuantLinear, QuantConv2d, QFunctional, Quantize/DeQuantize). Dynamic: integer weights,
activation grid per call (DynamicQuantLinear, DynamicQuantLSTM). QAT: float layers that
fake-quantize (QATLinear, QATConv2d, QATConvBn2d). Between int8 layers flows a qlab.QTensor."""

from ..tensor import QTensor
from .dynamic import DynamicQuantLinear, DynamicQuantLSTM
from .qat import QATConv2d, QATConvBn2d, QATLinear, freeze_bn_stats
from .static import (
    DeQuantize,
    DeQuantStub,
    FloatFunctional,
    QFunctional,
    QuantConv2d,
    Quantize,
    QuantLinear,
    QuantStub,
)

__all__ = [
    "DeQuantStub",
    "DeQuantize",
    "DynamicQuantLSTM",
    "DynamicQuantLinear",
    "FloatFunctional",
    "QATConv2d",
    "QATConvBn2d",
    "freeze_bn_stats",
    "QATLinear",
    "QFunctional",
    "QTensor",
    "QuantConv2d",
    "QuantLinear",
    "QuantStub",
    "Quantize",
]
