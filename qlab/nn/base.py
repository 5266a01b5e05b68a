"""What every int8 module shares: integer weights made from float ones, and QParams that
travel in the state_dict, so a saved int8 model loads with torch.load(weights_only=True).

The QParams of a module (its weight's, its output's) are plain attributes; the state_dict
carries them as the module's extra state, a dict of tensors and numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops import quantize
from ..qparams import QParams
from ..qtypes import QDType


def quantize_weight(weight: torch.Tensor, qp: QParams) -> torch.Tensor:
    """The integer weight, stored as int8: quantize(w) on a signed grid of at most 8 bits."""
    if not qp.qdtype.signed or qp.qdtype.bits > 8:
        raise ValueError(f"int8 modules store weights on a signed grid of at most 8 bits "
                         f"(e.g. qlab.int8 or qlab.int4), got {qp}")
    return quantize(weight.detach().float(), qp, axis=0 if qp.per_channel else None).to(torch.int8)


def placeholder_qparams(qdtype: QDType) -> QParams:
    """Scale 1, zero point 0: what an int8 module holds before from_float or load_state_dict."""
    return QParams(torch.tensor(1.0), torch.tensor(0), qdtype, qdtype.qmin, qdtype.qmax)


def on_full_grid(qp: QParams) -> QParams:
    """The same scale and zero point on the whole grid of its dtype (uint8: 0..255).

    reduce_range only chooses the scale (so that fbgemm's int16 intermediate sums cannot
    saturate); the int8 tensors themselves use the whole grid, as torch's quint8 tensors do.
    """
    return QParams(qp.scale.reshape(()), qp.zero_point.reshape(()), qp.qdtype, qp.qdtype.qmin,
                   qp.qdtype.qmax)


def qparams_state(qp: QParams | None) -> dict | None:
    if qp is None:
        return None
    return {"scale": qp.scale, "zero_point": qp.zero_point, "bits": qp.qdtype.bits,
            "signed": qp.qdtype.signed, "qmin": qp.qmin, "qmax": qp.qmax, "axis": qp.axis}


def qparams_from_state(d: dict | None) -> QParams | None:
    if d is None:
        return None
    return QParams(d["scale"], d["zero_point"], QDType(d["bits"], d["signed"]), d["qmin"],
                   d["qmax"], d["axis"])


class Int8Module(nn.Module):
    """Base of the int8 modules: the QParams attributes named in `qparams_names` are saved
    and loaded with the state_dict."""

    qparams_names: tuple[str, ...] = ()

    def get_extra_state(self) -> dict:
        return {name: qparams_state(getattr(self, name)) for name in self.qparams_names}

    def set_extra_state(self, state: dict) -> None:
        missing = [n for n in self.qparams_names if n not in state]
        if missing:
            raise ValueError(f"{type(self).__name__}: the saved state has no {missing}; it was not "
                             f"saved from a {type(self).__name__}")
        for name in self.qparams_names:
            setattr(self, name, qparams_from_state(state[name]))


def expect_features(module: nn.Module, x: torch.Tensor | object, features: int, what: str) -> None:
    """A clear error unless the last dimension of x has `features` entries."""
    shape = tuple(x.shape)
    if len(shape) == 0 or shape[-1] != features:
        raise ValueError(f"{type(module).__name__} expects {what} with {features} features in the "
                         f"last dimension, got shape {shape}")

