"""FakeQuantize: an observer plus qlab.fake_quantize, with switches for QAT.

    forward(x):  if observing:      observer(x); scale, zero_point <- observer.qparams()
                 if fake-quantizing: x <- (clamp(round(x / scale) + zp, qmin, qmax) - zp) * scale
                 return x        (backward: straight-through estimator, qlab.fake_quantize)

QAT observes and fake-quantizes from the start; freezing the observer late in training
(disable_observer) keeps the grid still while the weights settle onto it.
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
        self.activation_post_process = observer(**observer_kwargs)
        if not isinstance(self.activation_post_process, Observer):
            raise TypeError(f"observer must make a qlab Observer, got {observer!r}")
        self.register_buffer("fake_quant_enabled", torch.tensor(1, dtype=torch.uint8))
        self.register_buffer("observer_enabled", torch.tensor(1, dtype=torch.uint8))

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
        self.fake_quant_enabled.fill_(int(enabled))
        return self

    def disable_fake_quant(self) -> FakeQuantize:
        return self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True) -> FakeQuantize:
        self.observer_enabled.fill_(int(enabled))
        return self

    def disable_observer(self) -> FakeQuantize:
        return self.enable_observer(False)

    def has_data(self) -> bool:
        return self.activation_post_process.has_data()

    def qparams(self) -> QParams:
        return self.activation_post_process.qparams()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled:
            self.activation_post_process(x.detach())
        if self.fake_quant_enabled and self.has_data():
            qp = self.qparams()
            x = fake_quantize(x, qp, axis=qp.axis)
        return x

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={bool(self.fake_quant_enabled)}, "
                f"observer_enabled={bool(self.observer_enabled)}")
