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
import math

import torch
from torch import nn

from .observers import MovingAverageMinMaxObserver, Observer
from .ops import fake_quantize
from .qparams import QParams, grid
from .qtypes import along_axis, is_int


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


def disable_observer(module: nn.Module) -> None:
    """Freeze the grid of every FakeQuantize in `module` and its submodules. Both disable_observer(model)
    and model.apply(disable_observer) (torch.ao's style) work."""
    for m in module.modules():
        if isinstance(m, FakeQuantize):
            m.disable_observer()


def enable_observer(module: nn.Module) -> None:
    """Let the grid of every FakeQuantize in `module` and its submodules follow the data again
    (LSQ's learned scales stay learned). Both enable_observer(model) and model.apply(enable_observer)
    work."""
    for m in module.modules():
        if isinstance(m, FakeQuantize) and not isinstance(m, LearnedFakeQuantize):
            m.enable_observer()


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} takes True or False, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------
# Learned step size (LSQ): the scale is a trained parameter
# ---------------------------------------------------------------------------------------


def _per_axis(p: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """A 0-d or 1-d parameter shaped to broadcast against x along `axis`."""
    return p.reshape(()) if p.dim() == 0 or axis is None else along_axis(p, x.dim(), axis)


def _sum_to(g: torch.Tensor, p: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Sum a gradient over x's shape down to the parameter's shape (0-d, or one per channel)."""
    if p.dim() == 0 or axis is None:
        return g.sum().reshape(p.shape)
    return g.movedim(axis, 0).reshape(g.shape[axis], -1).sum(1)


class _LSQ(torch.autograd.Function):
    """x_hat = (clamp(round(x / s + z), qmin, qmax) - z) s, and LSQ's gradients (Esser et al. 2020):

        d x_hat / d x = 1 inside the grid, 0 outside                      (the clipped STE)
        d x_hat / d s = round(x/s + z) - z - x/s   inside                   (round's STE)
                        qmin - z  below,   qmax - z  above
        d x_hat / d z = 0 inside,  -s outside
    The scale's and zero point's gradients are multiplied by grad_factor (LSQ's gradient scale).
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, grad_factor, axis):
        s, z = _per_axis(scale, x, axis), _per_axis(zero_point, x, axis)
        r = torch.round(x / s + z)
        q = r.clamp(qmin, qmax)
        ctx.save_for_backward(x, scale, zero_point, r)
        ctx.qmin, ctx.qmax, ctx.grad_factor, ctx.axis = qmin, qmax, grad_factor, axis
        return (q - z) * s

    @staticmethod
    def backward(ctx, g):
        x, scale, zero_point, r = ctx.saved_tensors
        s, z = _per_axis(scale, x, ctx.axis), _per_axis(zero_point, x, ctx.axis)
        below, above = r < ctx.qmin, r > ctx.qmax
        inside = ~(below | above)
        d_s = torch.where(inside, r - z - x / s, torch.where(below, ctx.qmin - z, ctx.qmax - z))
        d_z = torch.where(inside, torch.zeros_like(x), -s.expand_as(x))
        grad_s = _sum_to(g * d_s, scale, ctx.axis) * ctx.grad_factor
        grad_z = _sum_to(g * d_z, zero_point, ctx.axis) * ctx.grad_factor
        return g * inside, grad_s, grad_z, None, None, None, None


def lsq_fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                      grad_factor: float = 1.0, axis: int | None = None) -> torch.Tensor:
    """Fake quantization whose scale (and zero point) get gradients: LSQ's (see _LSQ), equal to
    torch._fake_quantize_learnable_per_tensor_affine (per_channel_affine with axis)."""
    if not is_int(qmin) or not is_int(qmax) or not qmin < qmax:
        raise ValueError(f"qmin < qmax must be integers, got qmin={qmin!r}, qmax={qmax!r}")
    _check_learned_scale(scale.detach())
    if scale.dim() == 1 and axis is not None and scale.numel() != x.shape[axis]:
        raise ValueError(
            f"the learned per-channel scale has {scale.numel()} channels but the tensor has "
            f"{x.shape[axis]} along axis {axis} (shape {tuple(x.shape)}); they must match"
        )
    return _LSQ.apply(x, scale, zero_point.to(scale.dtype), int(qmin), int(qmax), float(grad_factor), axis)


def _check_learned_scale(scale: torch.Tensor) -> None:
    if not bool(torch.isfinite(scale).all()):
        raise ValueError("the learned scale must stay finite and > 0, got NaN or Inf (training "
                         "diverged: lower the learning rate of the scales)")
    if bool((scale <= 0).any()):
        raise ValueError("the learned scale must stay > 0 (lower the learning rate of the scales)")


class LearnedFakeQuantize(FakeQuantize):
    """LSQ (Esser et al., "Learned Step Size Quantization", ICLR 2020): fake quantization with a
    trained scale.

    The first batch sets the grid through the observer (its min-max qparams); the observer then
    stops, and the scale becomes an nn.Parameter trained with the rest of the model, with LSQ's
    gradient scale g = 1 / sqrt(N * qmax), N the values per scale. The zero point stays where the
    first batch put it (0 for symmetric weights and ReLU outputs). Run one batch through the model
    before building the optimizer, so that it sees the scales.
    """

    def __init__(self, observer=MovingAverageMinMaxObserver, grad_scaling: bool = True, **observer_kwargs):
        super().__init__(observer, **observer_kwargs)
        self.grad_scaling = grad_scaling
        self.scale = None  # an nn.Parameter after the first batch
        self.register_buffer("zero_point", None)
        self._grid = None  # (qmin, qmax)

    def _start(self, x: torch.Tensor) -> None:
        self.activation_post_process(x.detach())
        qp = self.activation_post_process.qparams()
        self.scale = nn.Parameter(qp.scale.clone())
        self.zero_point = qp.zero_point.to(torch.float32).clone()
        self._grid = (qp.qmin, qp.qmax)
        self.observer_enabled.fill_(0)

    def has_data(self) -> bool:
        return self.scale is not None

    def enable_observer(self, enabled: bool = True) -> LearnedFakeQuantize:
        if enabled and self.scale is not None:
            raise RuntimeError(
                "this LearnedFakeQuantize's scale is learned (an nn.Parameter since the first "
                "batch): it cannot observe again. To set the grid from data again, prepare a fresh "
                "model with prepare_qat; to keep the grid still, stop training the scale"
            )
        return super().enable_observer(enabled)

    def qparams(self) -> QParams:
        if self.scale is None:
            raise RuntimeError("LearnedFakeQuantize has seen no data yet: run a batch through it first")
        qp = self.activation_post_process
        zp = self.zero_point.round().to(torch.int64).clamp(*self._grid)
        return QParams(self.scale.detach().clone(), zp, qp.qdtype, *self._grid,
                       axis=qp.axis if self.scale.dim() == 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            self._start(x)
        if not self.fake_quant_enabled:
            return x
        per_scale = x.numel() // self.scale.numel()
        g = 1.0 / math.sqrt(per_scale * self._grid[1]) if self.grad_scaling else 1.0
        axis = self.activation_post_process.axis if self.scale.dim() == 1 else None
        return lsq_fake_quantize(x, self.scale, self.zero_point, *self._grid, g, axis)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "scale" in state_dict and self.scale is None:  # a trained LSQ model, loaded fresh
            self.scale = nn.Parameter(torch.empty_like(state_dict[prefix + "scale"]))
            self.zero_point = torch.empty_like(state_dict[prefix + "zero_point"])
            qp = self.activation_post_process
            lo, hi = grid(qp.qdtype, qp.reduce_range)
            self._grid = (lo, hi)
            self.observer_enabled.fill_(0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        learned = "not started" if self.scale is None else f"{self.scale.numel()} learned scale(s)"
        return f"{super().extra_repr()}, {learned}, grad_scaling={self.grad_scaling}"
