"""Lesson 02, the measurements: numbers in, numbers out, no drawing."""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn

import qlab
from qlab.lab.kit.check import check_choice, check_int
from qlab.lab.kit.torch_ao import quiet
from qlab.lab.kit.train import top1

PATTERNS = ("scattered", "channel")  # where inject_outliers puts the outliers


def inject_outliers(x: torch.Tensor, count: int, size: float, pattern: str = "scattered",
                    axis: int = 1) -> torch.Tensor:
    """x, flattened, with outliers of size * max|x| put in:

    "scattered": `count` evenly spaced values are replaced by size * max|x| (a bright pixel, a rare token);
    "channel":   `count` evenly spaced channels along `axis` are scaled up, each by the factor that
                 brings its own max|x| to size * max|x| (a transformer's outlier feature: every
                 value of the channel is large, not a few).
    """
    check_choice("pattern", pattern, PATTERNS, what=f"one of {PATTERNS}")
    check_int("count", count, 0, what="an int >= 0")
    x = x.detach().clone()
    if pattern == "scattered":
        x = x.flatten()
        if count > 0:
            x[torch.linspace(0, x.numel() - 1, count).long()] = size * x.abs().max()
        return x
    if x.dim() < 2 or not -x.dim() <= axis < x.dim():
        raise ValueError(f"the 'channel' pattern needs channels: x has shape {tuple(x.shape)} and "
                         f"axis={axis}; pass the activation with its channel dimension "
                         "(e.g. [N, C, H, W], axis=1)")
    channels = x.movedim(axis, 0)  # a view: scaling it scales x
    if count > channels.shape[0]:
        raise ValueError(f"count={count} outlier channels, but x has only {channels.shape[0]} "
                         f"along axis {axis}")
    top = size * x.abs().max()
    if count > 0:
        for c in torch.linspace(0, channels.shape[0] - 1, count).round().long().unique().tolist():
            amax = channels[c].abs().max()
            if amax > 0:
                channels[c] *= top / amax
    return x.flatten()


def with_settings(observers: Mapping, bits: int | None = None, percentile: float | None = None) -> dict:
    """The observer factories (name -> factory) with their grid set to `bits` (keeping each one's
    signedness) and the percentile observers' percentile set to `percentile`; None keeps a setting."""
    check_factories(observers)
    out = {}
    for name, make in observers.items():
        kwargs = {}
        if bits is not None:
            kwargs["qdtype"] = qlab.qtypes.qdtype(bits, signed=make().qdtype.signed)
        if percentile is not None and isinstance(make(), qlab.observers.PercentileObserver):
            kwargs["percentile"] = percentile
        out[name] = functools.partial(make, **kwargs) if kwargs else make
    return out


def check_factories(observers: Mapping) -> None:
    """Raise TypeError unless observers maps names to observer factories (classes or partials)."""
    if not isinstance(observers, Mapping):
        raise TypeError(f"observers must be a dict of name -> observer class, got {type(observers).__name__}")
    for name, make in observers.items():
        if isinstance(make, torch.nn.Module) or not callable(make):
            raise TypeError(
                f"observers[{name!r}] is a {type(make).__name__} object; pass the class or "
                "functools.partial(ObserverClass, ...), so each run starts from a fresh observer"
            )


def score_observers(x: torch.Tensor | Sequence[torch.Tensor], observers: Mapping,
                    reference: torch.Tensor | None = None) -> dict:  # fmt: skip
    """Calibrate each observer (name -> factory) on x, then score its qparams on `reference`.

    x is one tensor or a list of calibration batches, seen in order. The score compares
    `reference` (default: x, all batches) with its fake-quantized self, so outliers the
    observers saw, or images they did not see, can be left out of it.
    Returns name -> {"range": (min, max) the grid covers, "qparams", "mse", "sqnr" (dB),
    "clipped": share of reference outside the range, "seconds": calibration time}.
    """
    check_factories(observers)
    batches = [x] if isinstance(x, torch.Tensor) else list(x)
    if not batches:
        raise ValueError("x is an empty list of batches; pass a tensor or a list of calibration tensors")
    ref = torch.cat(batches) if reference is None else reference
    out = {}
    for name, make in observers.items():
        obs, start = make(), time.perf_counter()
        for b in batches:
            obs(b)
        qp = obs.qparams()
        seconds = time.perf_counter() - start
        x_hat = qlab.fake_quantize(ref, qp)
        lo, hi = qlab.dequantize(torch.tensor([qp.qmin, qp.qmax]), qp).tolist()
        out[name] = {"range": (lo, hi), "qparams": qp, "seconds": seconds,
                     "mse": qlab.metrics.mse(ref, x_hat), "sqnr": qlab.metrics.sqnr(ref, x_hat),
                     "clipped": ((ref < lo) | (ref > hi)).float().mean().item()}  # fmt: skip
    return out


def observer_parity(batches_by_point: Mapping[str, Sequence[torch.Tensor]]) -> dict:
    """qlab's observers against their torch.ao twins on real activations: point -> list of batches.

    MinMax and MovingAverageMinMax, per-tensor (with and without reduce_range) and per-channel
    (axis 1, tensors of 2+ dims): is qlab's (scale, zero point) identical to torch.ao's after every
    batch? HistogramObserver (per-tensor, with and without reduce_range): the largest relative
    scale and absolute zero-point difference after all batches.
    Returns {"identical": {(observer name, "per-tensor" | "per-channel"): bool},
    "histogram": {"cases": n, "scale": largest relative difference, "zero_point": largest difference}}.
    """
    from torch.ao import quantization as tq

    twins = {
        (qlab.observers.MinMaxObserver, False): tq.MinMaxObserver,
        (qlab.observers.MinMaxObserver, True): tq.PerChannelMinMaxObserver,
        (qlab.observers.MovingAverageMinMaxObserver, False): tq.MovingAverageMinMaxObserver,
        (qlab.observers.MovingAverageMinMaxObserver, True): tq.MovingAveragePerChannelMinMaxObserver,
    }
    identical = {}
    with quiet():
        for (ours, per_channel), theirs in twins.items():
            same = True
            for batches in batches_by_point.values():
                if per_channel and batches[0].dim() < 2:
                    continue
                for reduce_range in (False,) if per_channel else (False, True):
                    a = ours(qdtype=qlab.uint8, reduce_range=reduce_range, axis=1 if per_channel else None)
                    t = theirs(dtype=torch.quint8, reduce_range=reduce_range,
                               **({"ch_axis": 1} if per_channel else {}))
                    for b in batches:
                        a(b), t(b)
                        s, z = t.calculate_qparams()
                        qp = a.qparams()
                        same &= torch.equal(qp.scale, s.reshape(qp.scale.shape))
                        same &= torch.equal(qp.zero_point, z.reshape(qp.scale.shape).long())
            identical[ours.__name__, "per-channel" if per_channel else "per-tensor"] = bool(same)
        worst_scale = worst_zp = 0.0
        cases = 0
        for batches in batches_by_point.values():
            for reduce_range in (False, True):
                a = qlab.observers.HistogramObserver(qdtype=qlab.uint8, reduce_range=reduce_range)
                t = tq.HistogramObserver(dtype=torch.quint8, reduce_range=reduce_range)
                for b in batches:
                    a(b), t(b)
                qp, (s, z) = a.qparams(), t.calculate_qparams()
                worst_scale = max(worst_scale, abs(qp.scale.item() - s.item()) / s.item())
                worst_zp = max(worst_zp, abs(qp.zero_point.item() - z.item()))
                cases += 1
    histogram = {"cases": cases, "scale": worst_scale, "zero_point": worst_zp}
    return {"identical": identical, "histogram": histogram}


def activation_observers(model: nn.Module) -> list[nn.Module]:
    """The activation observers of a prepared (not yet converted) model, in module order."""
    found = [m.activation_post_process for m in model.modules()
             if isinstance(getattr(m, "activation_post_process", None), qlab.observers.Observer)]
    if not found:
        raise ValueError("the model has no activation observers: pass a model made by qlab.prepare")
    return found


def activation_bits_sweep(model: nn.Module, observers: Mapping, batches: Sequence[torch.Tensor],
                          bits: Sequence[int], x: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
    """Test accuracy of `model` quantized with each activation observer at each activation width.

    For each observer (name -> factory): fuse a copy of the model, qlab.prepare it with that
    observer on every activation (unsigned, per-tensor, no reduce_range) and int8 per-channel
    min-max weights, calibrate once on `batches`; then, for each width in `bits`, set the
    observers' grid to that many bits, convert and evaluate qlab's integer model on (x, y).
    Calibrating once is exact: what an observer records (min, max, histogram) does not depend on
    the grid, only the range it then chooses (a test checks it against a fresh prepare).
    Returns name -> [accuracy at each width].
    """
    check_factories(observers)
    widths = [qlab.qtypes.qdtype(b, signed=False) for b in bits]  # checks 2..16 bits
    if not widths:
        raise ValueError("bits is empty; pass the activation widths to try, e.g. (3, 4, 6, 8)")
    if not batches:
        raise ValueError("batches is empty; the observers need calibration data")
    weight = functools.partial(qlab.observers.MinMaxObserver, qdtype=qlab.int8, symmetric=True, axis=0)
    out = {}
    for name, make in observers.items():
        m = copy.deepcopy(model).eval()
        m.fuse_model()
        prepared = qlab.prepare(m, qlab.QConfig(activation=make, weight=weight))
        with torch.no_grad():
            for b in batches:
                prepared(b)
        out[name] = []
        for width in widths:
            for obs in activation_observers(prepared):
                obs.qdtype, obs.reduce_range = width, False
            int8 = qlab.convert(prepared)
            with torch.no_grad():
                out[name].append(top1(int8(x), y))
    return out
