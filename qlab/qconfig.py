"""QConfig: how to observe a layer, and the defaults (the names mirror torch.ao's).

A QConfig holds two factories, one for the observer of a layer's output (activation) and
one for its weight, and the bias rule the int8 layer will use:

    activation: an unsigned per-tensor grid (uint8: 0..255, or 0..127 with reduce_range)
    weight:     a signed symmetric grid, per-tensor or per output channel (axis 0)
    bias:       "float" (fbgemm/x86: float bias added to the accumulator, as torch.ao)
                or "int32" (integer-only hardware: the bias rounded onto the s_x·s_w grid)

For QAT the factories make FakeQuantize modules (an observer that also fake-quantizes).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .fake_quant import FakeQuantize, LearnedFakeQuantize
from .observers import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver, Observer
from .qtypes import int8, is_int, uint8
from .qtypes import qdtype as int_grid

BIAS_RULES = ("float", "int32")


@dataclass(frozen=True)
class QConfig:
    """Factories for the activation and the weight observer (or FakeQuantize), and the bias rule."""

    activation: Callable[[], nn.Module]
    weight: Callable[[], nn.Module]
    bias: str = "float"

    def __post_init__(self):
        check_bias_rule(self.bias)
        for role in ("activation", "weight"):
            inner = _make_observer(role, getattr(self, role))
            q = inner.qdtype
            if role == "activation" and (q.signed or q.bits > 8 or inner.axis is not None):
                raise ValueError(
                    f"QConfig.activation must observe an unsigned per-tensor grid of at most 8 bits "
                    f"(e.g. qdtype=qlab.uint8, axis=None), got qdtype={q!r}, axis={inner.axis}"
                )
            if role == "weight" and (not q.signed or q.bits > 8 or not inner.symmetric
                                     or inner.axis not in (None, 0)):
                raise ValueError(
                    f"QConfig.weight must observe a signed symmetric grid of at most 8 bits, "
                    f"per-tensor or along axis 0 (e.g. qdtype=qlab.int8, symmetric=True), got "
                    f"qdtype={q!r}, symmetric={inner.symmetric}, axis={inner.axis}"
                )


def check_bias_rule(rule) -> str:
    if rule not in BIAS_RULES:
        raise ValueError(f"bias rule must be one of {BIAS_RULES}, got {rule!r}")
    return rule


def _make_observer(role: str, factory) -> Observer:
    """Call the factory once to check that it makes a qlab observer (or FakeQuantize)."""
    if isinstance(factory, nn.Module) or not callable(factory):
        raise TypeError(
            f"QConfig.{role} must be a factory that makes an observer (a class or "
            f"functools.partial, e.g. MinMaxObserver or FakeQuantize.with_args(...)), not "
            f"{factory!r}; each layer gets its own observer from it"
        )
    obs = factory()
    inner = obs.activation_post_process if isinstance(obs, FakeQuantize) else obs
    if not isinstance(inner, Observer):
        raise TypeError(f"QConfig.{role} must make a qlab observer or FakeQuantize, "
                        f"got {type(obs).__name__}")
    return inner


_with = functools.partial
#: torch.ao's x86 default: histogram activations on 0..127 (reduce_range), per-channel int8 weights.
default_qconfig = QConfig(
    activation=_with(HistogramObserver, qdtype=uint8, reduce_range=True),
    weight=_with(MinMaxObserver, qdtype=int8, symmetric=True, axis=0),
)
#: Min-max activations: fast and simple (the tests' choice, with torch.ao's MinMaxObserver).
minmax_qconfig = QConfig(
    activation=_with(MinMaxObserver, qdtype=uint8, reduce_range=True),
    weight=_with(MinMaxObserver, qdtype=int8, symmetric=True, axis=0),
)
#: torch.ao's x86 QAT default: moving-average min-max fake-quant, per-channel int8 weights.
default_qat_qconfig = QConfig(
    activation=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, qdtype=uint8,
                                      reduce_range=True),
    weight=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, qdtype=int8,
                                  symmetric=True, axis=0),
)

#: torch.ao's qnnpack (ARM) default: histogram activations on the whole 0..255 (no reduce_range:
#: ARM's int8 instructions do not saturate the way x86's VPMADDUBSW does), per-tensor int8 weights,
#: and the bias rounded to an int32 as qnnpack's kernels do (the "int32" rule, not fbgemm's float).
qnnpack_qconfig = QConfig(
    activation=_with(HistogramObserver, qdtype=uint8, reduce_range=False),
    weight=_with(MinMaxObserver, qdtype=int8, symmetric=True),
    bias="int32",
)
#: torch.ao's qnnpack QAT default: as default_qat_qconfig, without reduce_range, per-tensor weights.
qnnpack_qat_qconfig = QConfig(
    activation=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, qdtype=uint8,
                                      reduce_range=False),
    weight=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, qdtype=int8,
                                  symmetric=True),
    bias="int32",
)

_BACKENDS = {"x86": (default_qconfig, default_qat_qconfig),
             "fbgemm": (default_qconfig, default_qat_qconfig),
             "qnnpack": (qnnpack_qconfig, qnnpack_qat_qconfig)}


def _check_backend(backend: str) -> tuple[QConfig, QConfig]:
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {tuple(_BACKENDS)} (the int8 kernels qlab "
                         f"matches), got {backend!r}")
    return _BACKENDS[backend]


def get_default_qconfig(backend: str = "x86") -> QConfig:
    """torch.ao.quantization.get_default_qconfig(backend) in qlab's terms."""
    return _check_backend(backend)[0]


def get_default_qat_qconfig(backend: str = "x86") -> QConfig:
    """torch.ao.quantization.get_default_qat_qconfig(backend) in qlab's terms."""
    return _check_backend(backend)[1]


def _bits(name: str, bits) -> int:
    if not is_int(bits) or not 2 <= bits <= 8:
        raise ValueError(f"{name} must be an integer number of bits from 2 to 8, got {bits!r}")
    return int(bits)


def low_bit_qconfig(weight_bits: int = 8, activation_bits: int = 8, qat: bool = False,
                    learned_scale: bool = False) -> QConfig:
    """Per-channel symmetric signed weights of weight_bits (int8 storage, as torch.ao's qint8 with
    quant_min/quant_max) and unsigned activations of activation_bits.

    PTQ (qat=False): histogram activations, min-max weights (the x86 default's observers).
    QAT: moving-average min-max FakeQuantize (torch.ao's QAT default), or LSQ's
    LearnedFakeQuantize with learned_scale=True. 8-bit activations keep reduce_range (0..127),
    as x86's default; narrower activation grids use their whole range.
    """
    w = int_grid(_bits("weight_bits", weight_bits), True)
    a = int_grid(_bits("activation_bits", activation_bits), False)
    if learned_scale and not qat:
        raise ValueError("learned_scale=True trains the scales: it needs qat=True")
    reduce = a.bits == 8
    if not qat:
        return QConfig(_with(HistogramObserver, qdtype=a, reduce_range=reduce),
                       _with(MinMaxObserver, qdtype=w, symmetric=True, axis=0))
    if learned_scale:
        lsq = functools.partial(LearnedFakeQuantize.with_args, observer=MinMaxObserver)
        return QConfig(lsq(qdtype=a, reduce_range=reduce), lsq(qdtype=w, symmetric=True, axis=0))
    fq = functools.partial(FakeQuantize.with_args, observer=MovingAverageMinMaxObserver)
    return QConfig(fq(qdtype=a, reduce_range=reduce), fq(qdtype=w, symmetric=True, axis=0))
