"""FakeQuantize: an observer plus qlab.fake_quantize, with switches for QAT.

    forward(x):  if observing:       observer(x)   (the grid follows the data)
                 if fake-quantizing: x <- (clamp(round(x * (1/scale)) + zp, qmin, qmax) - zp) * scale
                 return x        (backward: straight-through estimator, qlab.fake_quantize)

QAT observes and fake-quantizes from the start; freezing the observer late in training
(disable_observer) keeps the grid still while the weights settle onto it. While the observer
is frozen its qparams are computed once and reused, not searched again every step.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .observers import MovingAverageMinMaxObserver, Observer
from .ops import fake_quantize
from .qparams import QParams


class FakeQuantize(nn.Module):
    """Observer + fake quantization. `observer` is an observer class or factory; kwargs go to it."""

    def __init__(self, observer=MovingAverageMinMaxObserver, **observer_kwargs):
        super().__init__()
        if isinstance(observer, nn.Module) or not callable(observer):
            raise TypeError(
                f"observer must be an observer class or factory (e.g. MinMaxObserver or "
                f"functools.partial(MinMaxObserver, ...)), not an instance: got {observer!r}"
            )
        self.activation_post_process = observer(**observer_kwargs)
        if not isinstance(self.activation_post_process, Observer):
            raise TypeError(f"observer must make a qlab Observer, got {observer!r}")
        self.register_buffer("fake_quant_enabled", torch.tensor(1, dtype=torch.uint8))
        self.register_buffer("observer_enabled", torch.tensor(1, dtype=torch.uint8))
        self._qparams = None  # cached while the observer is frozen

    @classmethod
    def with_args(cls, **kwargs):
        """A factory, as torch.ao's: FakeQuantize.with_args(observer=..., qdtype=...)()."""
        return functools.partial(cls, **kwargs)

    @property
    def observer(self) -> Observer:
        return self.activation_post_process

    @property
    def qdtype(self):
        return self.activation_post_process.qdtype

    @property
    def axis(self):
        return self.activation_post_process.axis

    def enable_fake_quant(self, enabled: bool = True) -> FakeQuantize:
        self.fake_quant_enabled.fill_(int(_flag("enable_fake_quant", enabled)))
        return self

    def disable_fake_quant(self) -> FakeQuantize:
        return self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True) -> FakeQuantize:
        self.observer_enabled.fill_(int(_flag("enable_observer", enabled)))
        self._qparams = None
        return self

    def disable_observer(self) -> FakeQuantize:
        return self.enable_observer(False)

    def has_data(self) -> bool:
        return self.activation_post_process.has_data()

    def qparams(self) -> QParams:
        if self.observer_enabled or self._qparams is None:
            self._qparams = self.activation_post_process.qparams()
        return self._qparams

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled:
            self.activation_post_process(x.detach())
        if self.fake_quant_enabled and self.has_data():
            qp = self.qparams()
            x = fake_quantize(x, qp, axis=qp.axis)
        return x

    def _load_from_state_dict(self, *args, **kwargs):
        self._qparams = None  # the loaded observer state decides the grid
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={bool(self.fake_quant_enabled)}, "
                f"observer_enabled={bool(self.observer_enabled)}")


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} takes True or False, got {value!r}")
    return value
