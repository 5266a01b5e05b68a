"""The measurements behind the lessons' panels and tables: numbers in, numbers out, no drawing.

    quantize_with(x, bits, scheme, clip, granularity)  qparams and fake-quantized x at a panel's settings
    quantization_report(x, bits, scheme, clip, granularity) the same with the grid, SQNR, MSE, clipped share
    parity_with_torch(w, per_channel)         qlab vs torch.ao on one weight: bit-exact yes/no, claim by claim
    per_group_qparams(w, bits, group)         int-b symmetric scales, one per `group` weights of a row
    weight_bytes(numel, bits, scales, zero_points)  payload + overhead bytes of a quantized weight
    minilm_hidden_state(weights, sentences)   MiniLM's first hidden state (an activation), one row a token
    inject_outliers(x, count, size)           x with a few values replaced by size * max|x|
    score_observers(batches, observers)       calibrate each observer, then score its qparams
    inject_outliers(..., pattern="channel")   whole channels scaled up instead (lesson 02's panel)
    with_settings(observers, bits, percentile) the observer factories at another width / percentile
    observer_parity(batches_by_point)        qlab's observers against torch.ao's twins
    activation_bits_sweep(model, observers, ...) accuracy per activation observer and bit width
    Lesson 03 (dynamic quantization, MiniLM): listed at the head of its section

widgets.py wires these to sliders and plots.py draws what they return; every figure a
panel shows is computed here, by qlab's own functions.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

import qlab
from qlab.qparams import QParams

SCHEMES = ("symmetric", "affine")

# ---------------------------------------------------------------------------------------
# Lesson 01: quantization math
# ---------------------------------------------------------------------------------------


def check_scheme(scheme: str) -> None:
    """ValueError unless scheme is "symmetric" or "affine"."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def clip_range(x: torch.Tensor, scheme: str, clip: float) -> tuple[float, float]:
    """The range the grid covers: clip * [min, max] (affine) or clip * [-max|x|, max|x|]."""
    check_scheme(scheme)
    if scheme == "symmetric":
        a = clip * x.abs().max().item()
        return -a, a
    return clip * x.min().item(), clip * x.max().item()


GRANULARITIES = ("per-tensor", "per-channel")


def check_granularity(granularity: str) -> None:
    """ValueError unless granularity is "per-tensor" or "per-channel"."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x as a matrix with one row per channel: a weight's output channels (dim 0), an
    activation's tokens; a 1-d tensor is one row."""
    return x.reshape(1, -1) if x.dim() < 2 else x.reshape(x.shape[0], -1)


def _row_ranges(x: torch.Tensor, scheme: str, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """clip_range for every row of x (1-d lo, hi)."""
    check_scheme(scheme)
    rows = _rows(x)
    if scheme == "symmetric":
        a = clip * rows.abs().amax(dim=1)
        return -a, a
    return clip * rows.amin(dim=1), clip * rows.amax(dim=1)


def quantize_with(x: torch.Tensor, bits: int, scheme: str, clip: float,
                  granularity: str = "per-tensor") -> tuple[QParams, torch.Tensor]:
    """qparams and fake-quantized x for a bit width, a scheme, a clip range and a granularity.

    'symmetric' uses a signed grid centred on 0 (PyTorch's default for weights), 'affine'
    an unsigned grid with a zero point (PyTorch's default for activations). 'per-channel'
    gives each row of x (a weight's output channel; an activation's token) its own range,
    clip * that row's [min, max], and so its own scale (axis 0 of x seen as rows x rest).
    """
    check_granularity(granularity)
    symmetric = scheme == "symmetric"
    qdtype = qlab.qdtype(bits, signed=symmetric)
    if granularity == "per-channel":
        lo, hi = _row_ranges(x, scheme, clip)
        qp = qlab.qparams_from_range(lo, hi, qdtype, symmetric=symmetric, axis=0)
        return qp, qlab.fake_quantize(_rows(x), qp).reshape(x.shape)
    lo, hi = clip_range(x, scheme, clip)
    qp = qlab.qparams_from_range(lo, hi, qdtype, symmetric=symmetric)
    return qp, qlab.fake_quantize(x, qp)


@dataclass
class QuantizationReport:
    """What quantizing x at one setting gives: the grid, x_hat and how far it is from x.

    Per-channel, `levels`, `clip_range`, `scale` and `zero_point` are those of one typical
    row, `row` (the one with the median range); qparams holds every row's.
    """

    qparams: QParams
    x_hat: torch.Tensor
    levels: torch.Tensor  # the float value of every grid point, (q - zero_point) * scale
    clip_range: tuple[float, float]
    sqnr: float  # dB
    mse: float
    clipped: float  # share of x outside its clip range
    row: int | None = None  # per-channel: the row whose grid `levels` shows

    @property
    def scale(self) -> float:
        s = self.qparams.scale
        return (s if self.row is None else s[self.row]).item()

    @property
    def zero_point(self) -> int:
        z = self.qparams.zero_point
        return int(z if self.row is None else z[self.row])


def quantization_report(x: torch.Tensor, bits: int, scheme: str, clip: float,
                        granularity: str = "per-tensor") -> QuantizationReport:
    """Quantize x at (bits, scheme, clip, granularity) with qlab and measure the result."""
    qp, x_hat = quantize_with(x, bits, scheme, clip, granularity)
    codes = torch.arange(qp.qmin, qp.qmax + 1)
    if granularity == "per-channel":
        lo, hi = _row_ranges(x, scheme, clip)
        row = int((hi - lo).argsort()[(len(lo) - 1) // 2])  # the median range
        rows = _rows(x)
        clipped = ((rows < lo[:, None]) | (rows > hi[:, None])).float().mean().item()
        one = QParams(qp.scale[row], qp.zero_point[row], qp.qdtype, qp.qmin, qp.qmax)
        levels, span = qlab.dequantize(codes, one), (lo[row].item(), hi[row].item())
    else:
        lo, hi = clip_range(x, scheme, clip)
        row, span = None, (lo, hi)
        clipped = ((x < lo) | (x > hi)).float().mean().item()
        levels = qlab.dequantize(codes, qp)
    return QuantizationReport(
        qparams=qp,
        x_hat=x_hat,
        levels=levels,
        clip_range=span,
        sqnr=qlab.metrics.sqnr(x, x_hat),
        mse=qlab.metrics.mse(x, x_hat),
        clipped=clipped,
        row=row,
    )


def parity_with_torch(w: torch.Tensor, per_channel: bool = False) -> dict[str, bool]:
    """qlab against torch.ao on the weight w, claim by claim: {claim: bit-exact?}.

    Per tensor: uint8 affine and int8 symmetric qparams equal MinMaxObserver's, the integers
    equal torch.quantize_per_tensor's, and fake_quantize equals
    torch.fake_quantize_per_tensor_affine at 2..8 bits, symmetric and affine.
    Per channel (axis 0, int8 symmetric): qparams equal PerChannelMinMaxObserver's and the
    integers torch.quantize_per_channel's.
    """
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    out = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.ao")
        if per_channel:
            qp = qlab.qparams_from_range(w.amin(dim=1), w.amax(dim=1), qlab.int8, symmetric=True, axis=0)
            obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
            obs(w)
            t_scale, t_zp = obs.calculate_qparams()
            out["int8 symmetric per-channel: same qparams as PerChannelMinMaxObserver"] = (
                torch.equal(t_scale.float(), qp.scale) and torch.equal(t_zp, qp.zero_point))
            t_ints = torch.quantize_per_channel(w, qp.scale.double(), qp.zero_point, 0, torch.qint8)
            t_ints = t_ints.int_repr()
            out["int8 symmetric per-channel: same integers as quantize_per_channel"] = torch.equal(
                t_ints.long(), qlab.quantize(w, qp).long())
            return out
        for name, qdtype, symmetric, torch_dtype, qscheme in [
            ("uint8 affine", qlab.uint8, False, torch.quint8, torch.per_tensor_affine),
            ("int8 symmetric", qlab.int8, True, torch.qint8, torch.per_tensor_symmetric),
        ]:
            qp = qlab.qparams_from_range(w.min(), w.max(), qdtype, symmetric=symmetric)
            obs = MinMaxObserver(dtype=torch_dtype, qscheme=qscheme)
            obs(w)
            t_scale, t_zp = obs.calculate_qparams()
            out[f"{name}: same qparams as MinMaxObserver"] = (
                torch.equal(t_scale, qp.scale.reshape(1)) and torch.equal(t_zp, qp.zero_point.reshape(1)))
            t_ints = torch.quantize_per_tensor(w, qp.scale.item(), qp.zero_point.item(), torch_dtype)
            out[f"{name}: same integers as quantize_per_tensor"] = torch.equal(
                t_ints.int_repr().long(), qlab.quantize(w, qp).long())
        same_fq = []
        for bits in range(2, 9):
            for symmetric in (True, False):
                qp = qlab.qparams_from_range(w.min(), w.max(), qlab.qdtype(bits, signed=symmetric),
                                             symmetric=symmetric)
                t_fq = torch.fake_quantize_per_tensor_affine(w, qp.scale.item(), qp.zero_point.item(),
                                                             qp.qmin, qp.qmax)
                same_fq.append(torch.equal(t_fq, qlab.fake_quantize(w, qp)))
        out[f"fake_quantize = torch.fake_quantize_per_tensor_affine, 2..8 bits x symmetric/affine "
            f"({sum(same_fq)}/{len(same_fq)})"] = all(same_fq)
    return out


def per_group_qparams(w: torch.Tensor, bits: int, group: int) -> QParams:
    """Symmetric qparams with one scale per `group` consecutive weights of a row (per-group).

    That is per-channel qparams of w reshaped to (rows * K / group, group): quantize
    w.reshape(-1, group) with them (axis 0). torchao's block_size (1, group) gives the same
    integers (tests/test_torchao_math.py).
    """
    if w.dim() != 2 or w.shape[1] % group:
        raise ValueError(f"group={group} must divide the row length of a 2-d weight, "
                         f"got shape {tuple(w.shape)}")
    groups = w.reshape(-1, group)
    return qlab.qparams_from_range(groups.amin(1), groups.amax(1), qlab.qdtype(bits, signed=True),
                                   symmetric=True, axis=0)


def weight_bytes(numel: int, bits: int, scales: int = 0, zero_points: int = 0,
                 scale_bytes: int = 4, zero_point_bits: int = 8) -> dict[str, float]:
    """Bytes of a quantized weight: payload (numel * bits / 8), overhead (scales in float32,
    zero points at zero_point_bits each; a symmetric grid stores none), total, bits per weight."""
    payload = numel * bits / 8
    overhead_scales = scales * scale_bytes
    overhead_zp = zero_points * zero_point_bits / 8
    total = payload + overhead_scales + overhead_zp
    return {"payload": payload, "scales": overhead_scales, "zero_points": overhead_zp,
            "total": total, "bits_per_weight": 8 * total / numel}


def minilm_hidden_state(weights: Mapping[str, torch.Tensor], sentences: Sequence[str]) -> torch.Tensor:
    """MiniLM's first hidden state (hidden_states[0], the input of layer 0), one row per token.

    LayerNorm(word + position + token-type embedding) of each sentence's tokens, from the
    weights (qlab.lab.models.minilm_weights) and the model's own tokenizer.json, without
    importing transformers; [n_tokens, 384]. tests check it equals the model's own.
    """
    from tokenizers import Tokenizer

    from .integrity import MINILM_SHA256, verify_sha256
    from .models import minilm_dir

    path = verify_sha256(minilm_dir() / "tokenizer.json", MINILM_SHA256["tokenizer.json"])
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=512)
    rows = []
    for enc in tokenizer.encode_batch(list(sentences)):
        ids = torch.tensor(enc.ids)
        e = (weights["embeddings.word_embeddings.weight"][ids]
             + weights["embeddings.position_embeddings.weight"][: len(ids)]
             + weights["embeddings.token_type_embeddings.weight"][0])
        rows.append(torch.nn.functional.layer_norm(
            e, (e.shape[-1],), weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"],
            eps=1e-12))
    return torch.cat(rows)


# ---------------------------------------------------------------------------------------
# Lesson 02: observers and calibration
# ---------------------------------------------------------------------------------------


PATTERNS = ("scattered", "channel")  # where inject_outliers puts the outliers


def inject_outliers(x: torch.Tensor, count: int, size: float, pattern: str = "scattered",
                    axis: int = 1) -> torch.Tensor:
    """x, flattened, with outliers of size * max|x| put in:

    "scattered": `count` evenly spaced values are replaced by size * max|x| (a bright pixel, a rare token);
    "channel":   `count` evenly spaced channels along `axis` are scaled up, each by the factor that
                 brings its own max|x| to size * max|x| (a transformer's outlier feature: every
                 value of the channel is large, not a few).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
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
    with _torch_ao_quiet():
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


@contextlib.contextmanager
def _torch_ao_quiet():
    """Silence torch.ao's deprecation warnings (it is the reference here, deprecated upstream)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.ao")
        warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")
        yield


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
                out[name].append(float((int8(x).argmax(1) == y).float().mean()))
    return out


# ---------------------------------------------------------------------------------------
# Lesson 03: dynamic quantization
# ---------------------------------------------------------------------------------------
#
#     encode(model, sentences)                  [n, 384] sentence embeddings, no grad
#     embedding_quality(reference, embeddings)  mean cosine and nearest-neighbour agreement
#     retrieval(embeddings, sentences, query)   a query's top matches, to read
#     linear_input_ranges(model, sentences)     min, max and per-channel max|x| of every Linear input
#     largest_input_channels(ranges)            each Linear's outlier channel and how far it sticks out
#     layer_sensitivity(model, evaluate)        quality with one Linear at a time in dynamic int8
#     dynamic_qparams_per_call(name, model, batches)  the activation grid chosen on each call
#     saturating_pair_sums(x_u8, w_s8), reduce_range_demo()   why x86 uses 7-bit activations
#     minilm_batches, held_out_sentences        tokenized batches; calibration kept apart from scoring
#     speed_vs_fp32(models, fp32, batches)      adjacent fp32/int8 timing pairs, 2 threads
#     bert_value_folds, best_minilm_config      SmoothQuant + per-channel int8, sensitive layers fp32
#     minilm_table, format_minilm_table         every configuration, measured (the closing note's table)

def _check_model(model) -> None:
    if not isinstance(model, nn.Module) or not callable(getattr(model, "encode", None)):
        raise TypeError("model must be a sentence encoder (an nn.Module with .encode, e.g. "
                        f"qlab.lab.models.load_minilm()), got {type(model).__name__}")


def _check_sentences(sentences, name: str = "sentences") -> list[str]:
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(sentences).__name__}")
    if not sentences or not all(isinstance(s, str) for s in sentences):
        raise ValueError(f"{name} must be a non-empty list of strings")
    return list(sentences)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return batch_size


@contextlib.contextmanager
def _x86_engine():
    """torch.ao's x86 (fbgemm) kernels, quietly: the engine the lessons measure."""
    old = torch.backends.quantized.engine
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.backends.quantized.engine = "x86"
        try:
            yield
        finally:
            torch.backends.quantized.engine = old


def encode(model, sentences: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Sentence embeddings [n, 384] (unit length for MiniLM): model.encode under inference_mode.

    Deterministic: sentence-transformers sorts the sentences by length and cuts batches of
    batch_size, so the same list always gives the same batches (and, for a dynamic int8 model,
    the same activation grids).
    """
    _check_model(model)
    sentences = _check_sentences(sentences)
    with torch.inference_mode(), _x86_engine():
        out = model.encode(sentences, batch_size=_check_batch_size(batch_size),
                           convert_to_tensor=True, show_progress_bar=False)
    return out.float().cpu().clone()


def _check_embeddings(e, name: str) -> torch.Tensor:
    if not isinstance(e, torch.Tensor) or e.dim() != 2 or not e.is_floating_point():
        got = f"shape {tuple(e.shape)}" if isinstance(e, torch.Tensor) else type(e).__name__
        raise TypeError(f"{name} must be a float tensor [n, dim], got {got}")
    if e.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 sentences (a nearest neighbour), got {e.shape[0]}")
    if not torch.isfinite(e).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return e.float()


def nearest_neighbours(embeddings: torch.Tensor) -> torch.Tensor:
    """For each sentence i, argmax_{j != i} cos(e_i, e_j): its closest other sentence."""
    e = torch.nn.functional.normalize(_check_embeddings(embeddings, "embeddings"), dim=1)
    sim = e @ e.T
    sim.fill_diagonal_(-float("inf"))
    return sim.argmax(dim=1)


def embedding_quality(reference: torch.Tensor, embeddings: torch.Tensor) -> dict[str, float]:
    """How close int8 embeddings are to the fp32 ones, sentence by sentence:

        cosine       = mean_i cos(ref_i, emb_i)
        nn_agreement = share of i whose nearest other sentence (by cosine) is the same in both
    """
    ref, emb = _check_embeddings(reference, "reference"), _check_embeddings(embeddings, "embeddings")
    if ref.shape != emb.shape:
        raise ValueError(f"reference and embeddings must have the same shape, got "
                         f"{tuple(ref.shape)} and {tuple(emb.shape)}")
    cos = torch.nn.functional.cosine_similarity(ref, emb, dim=1).mean().item()
    agree = (nearest_neighbours(ref) == nearest_neighbours(emb)).float().mean().item()
    return {"cosine": cos, "nn_agreement": agree}


def retrieval(embeddings: torch.Tensor, sentences: Sequence[str], query: int,
              k: int = 3) -> list[tuple[str, float]]:  # fmt: skip
    """The k sentences closest to sentences[query] (itself excluded), as (sentence, cosine), best first."""
    e = torch.nn.functional.normalize(_check_embeddings(embeddings, "embeddings"), dim=1)
    sentences = _check_sentences(sentences)
    n = e.shape[0]
    if len(sentences) != n:
        raise ValueError(f"embeddings has {n} rows but sentences has {len(sentences)}; one per sentence")
    if isinstance(query, bool) or not isinstance(query, int) or not -n <= query < n:
        raise ValueError(f"query must be an index into sentences, in 0..{n - 1}, got {query!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an int in 1..{n - 1} (the other sentences), got {k!r}")
    sim = e @ e[query]
    sim[query] = -float("inf")
    top = sim.topk(k)
    return [(sentences[i], float(c)) for c, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def linear_input_ranges(model, sentences: Sequence[str], batch_size: int = 32) -> dict[str, dict]:
    """For the input x of every nn.Linear that runs while encoding `sentences`:

        min, max       over every token of every batch (floats)
        channel_absmax max|x_j| per input channel j (a tensor): a spike is an outlier channel

    Recorded by forward pre-hooks; names are the model's own (model.named_modules()).
    """
    _check_model(model)
    ranges: dict[str, dict] = {}

    def hook(name):
        def record(module, args):
            x = args[0].detach().float()
            lo, hi = x.min().item(), x.max().item()
            absmax = x.abs().reshape(-1, x.shape[-1]).amax(0)
            r = ranges.setdefault(name, {"min": lo, "max": hi, "channel_absmax": absmax})
            r["min"], r["max"] = min(r["min"], lo), max(r["max"], hi)
            r["channel_absmax"] = torch.maximum(r["channel_absmax"], absmax)
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Linear)]  # fmt: skip
    try:
        encode(model, sentences, batch_size)
    finally:
        for h in handles:
            h.remove()
    return ranges


def largest_input_channels(ranges: Mapping[str, dict]) -> dict[str, tuple[int, float]]:
    """name -> (channel j with the largest max|x_j|, max|x_j| / median_j max|x_j|)."""
    out = {}
    for name, r in ranges.items():
        a = r["channel_absmax"]
        out[name] = (int(a.argmax()), float(a.max() / a.median().clamp_min(1e-12)))
    return out


def _dynamic_int8(module: nn.Module, per_channel: bool, reduce_range: bool) -> nn.Module:
    """module in dynamic int8: qlab's, on torch.ao's kernels when they can run it (reduce_range).

    The two are bit-identical (tests/test_nn_dynamic.py); torch.ao's are just faster."""
    q = qlab.quantize_dynamic(module, {type(module)}, per_channel=per_channel, reduce_range=reduce_range)
    if reduce_range:
        with _x86_engine():
            q = qlab.to_torch(q)
    return q


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def layer_sensitivity(model: nn.Module, evaluate: Callable[[nn.Module], float],
                      per_channel: bool = True, layer_type: type = nn.Linear,
                      reduce_range: bool = True) -> dict[str, float]:  # fmt: skip
    """Quantize ONE layer at a time (dynamic int8), score the model with it, put it back:

        score[name] = evaluate(model with only `name` in int8)

    e.g. evaluate = lambda m: embedding_quality(ref, encode(m, sents))["cosine"]; the layers
    whose score drops most are the ones to keep in fp32. The model is restored after each layer
    (also if evaluate raises), so it comes back unchanged.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a function model -> float, got {type(evaluate).__name__}")
    if layer_type not in (nn.Linear, nn.LSTM):
        raise ValueError(f"layer_type must be nn.Linear or nn.LSTM (what dynamic quantization "
                         f"swaps), got {layer_type!r}")
    names = [n for n, m in model.named_modules() if type(m) is layer_type and n]
    if not names:
        raise ValueError(f"the model has no {layer_type.__name__} to quantize: a sensitivity scan "
                         f"puts its {layer_type.__name__} layers in int8 one at a time")
    scores = {}
    for name in names:
        original = model.get_submodule(name)
        _set_submodule(model, name, _dynamic_int8(original, per_channel, reduce_range))
        try:
            with _x86_engine():
                score = evaluate(model)
        finally:
            _set_submodule(model, name, original)
        if isinstance(score, torch.Tensor) and score.numel() == 1:
            score = score.item()
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise TypeError(f"evaluate must return a number, got {type(score).__name__}")
        scores[name] = float(score)
    return scores


def dynamic_qparams_per_call(layer_name: str, model, batches: Sequence[Sequence[str]],
                             reduce_range: bool = True) -> dict[str, list]:  # fmt: skip
    """The activation grid a dynamic layer chooses on each call, beside its one fixed weight grid.

    Each batch (a list of sentences) is encoded in one call; a pre-hook on `layer_name` reads
    that call's min and max of x and computes, as the dynamic layer does at run time,

        lo, hi = min(x_min, 0), max(x_max, 0)
        scale  = (hi - lo) / (qmax - qmin),   zero_point = round(qmin - lo / scale)
        (qlab.nn.dynamic.dynamic_qparams, as fbgemm; qmin = 0, qmax = 127 with reduce_range, else 255)

    Returns plain lists, one entry per call: "scale", "zero_point", "min", "max", "tokens"
    (rows of x in that call), and "weight_scale": the layer's per-tensor int8 weight scale
    max|W| / 127.5 (qlab's symmetric grid, as torch.ao's), fixed before any input is seen.
    """
    from qlab.nn.dynamic import dynamic_qparams
    from qlab.observers import MinMaxObserver

    _check_model(model)
    modules = dict(model.named_modules())
    if layer_name not in modules or not isinstance(modules[layer_name], nn.Linear):
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        raise ValueError(f"layer_name must name an nn.Linear of the model, e.g. {linears[:2]}; "
                         f"got {layer_name!r}")
    if isinstance(batches, str) or not isinstance(batches, Sequence) or not batches:
        raise ValueError("batches must be a non-empty list of batches, each a list of sentences")
    layer = modules[layer_name]
    obs = MinMaxObserver(qdtype=qlab.int8, symmetric=True)
    obs(layer.weight.detach())
    calls: dict[str, list] = {"scale": [], "zero_point": [], "min": [], "max": [], "tokens": []}

    def record(module, args):
        x = args[0].detach().float()
        lo, hi = x.min().item(), x.max().item()
        qp = dynamic_qparams(lo, hi, reduce_range)
        for key, v in (("scale", float(qp.scale)), ("zero_point", int(qp.zero_point)), ("min", lo),
                       ("max", hi), ("tokens", x.numel() // x.shape[-1])):  # fmt: skip
            calls[key].append(v)

    handle = layer.register_forward_pre_hook(record)
    try:
        for i, batch in enumerate(batches):
            batch = _check_sentences(batch, f"batches[{i}]")
            encode(model, batch, batch_size=len(batch))
    finally:
        handle.remove()
    return {**calls, "weight_scale": float(obs.qparams().scale)}


def saturating_pair_sums(x_u8: torch.Tensor, w_s8: torch.Tensor) -> torch.Tensor:
    """The x86 VPMADDUBSW step: products of uint8 x and int8 w, summed in adjacent pairs into
    int16 WITH saturation (before the int32 accumulation):

        out[..., i] = clamp(x[2i] w[2i] + x[2i+1] w[2i+1], -32768, 32767)     (int16)

    With 8-bit activations 255 * 127 + 255 * 127 = 64770 does not fit; with reduce_range's
    7-bit activations the largest pair, 127 * (-128) * 2 = -32512, always does.
    """
    for name, t, lo, hi in (("x_u8", x_u8, 0, 255), ("w_s8", w_s8, -128, 127)):
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.dtype == torch.bool:
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{name} must be an integer tensor, got {got}")
        if t.numel() and (t.min() < lo or t.max() > hi):
            raise ValueError(f"{name} must hold values in {lo}..{hi}, got {int(t.min())}..{int(t.max())}")
    if x_u8.shape != w_s8.shape or x_u8.dim() == 0 or x_u8.shape[-1] % 2:
        raise ValueError(f"x_u8 and w_s8 must have the same shape with an even last dimension "
                         f"(pairs), got {tuple(x_u8.shape)} and {tuple(w_s8.shape)}")
    products = x_u8.to(torch.int32) * w_s8.to(torch.int32)
    pairs = products.reshape(*products.shape[:-1], -1, 2).sum(-1)
    return pairs.clamp(-32768, 32767).to(torch.int16)


def reduce_range_demo() -> dict[str, dict]:
    """One pair of products that overflows int16 with 8-bit activations and fits with 7-bit:

        8-bit: 255 * 127 + 255 * 127 = 64770 > 32767   -> saturates to 32767 (wrong by 32003)
        7-bit: 127 * 127 + 127 * 127 = 32258 <= 32767  -> exact
    """
    w = torch.tensor([127, 127], dtype=torch.int8)
    out = {}
    for label, x in (("8-bit activations (0..255)", torch.tensor([255, 255], dtype=torch.uint8)),
                     ("7-bit activations (0..127)", torch.tensor([127, 127], dtype=torch.uint8))):
        exact = int((x.long() * w.long()).sum())
        got = int(saturating_pair_sums(x, w)[0])
        out[label] = {"x": x.tolist(), "w": w.tolist(), "exact": exact, "int16": got,
                      "saturated": got != exact}  # fmt: skip
    return out


def minilm_batches(model, sentences: Sequence[str], batch_size: int = 32) -> list[dict]:
    """The sentences tokenized into batches of batch_size, each ready for model(batch): for
    calibration (SmoothQuant) and for timing the model without the tokenizer."""
    _check_model(model)
    sentences, batch_size = _check_sentences(sentences), _check_batch_size(batch_size)
    prep = model.preprocess if hasattr(model, "preprocess") else model.tokenize
    return [prep(sentences[i:i + batch_size]) for i in range(0, len(sentences), batch_size)]


def _other_processes_cores():
    """A stopwatch of the CPU that other processes use (Linux /proc): returns read(), which gives
    the cores they kept busy on average since the start; None where /proc is missing."""
    def ticks():
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        return sum(cpu) - cpu[3] - cpu[4], int(own[11]) + int(own[12]), time.perf_counter()

    try:
        start = ticks()
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        busy, own, t = ticks()
        return ((busy - start[0]) - (own - start[1])) / hz / max(t - start[2], 1e-9)

    return read


def speed_vs_fp32(models: Mapping[str, nn.Module], fp32: nn.Module, batches: Sequence[dict],
                  threads: int = 2, min_run_time: float = 0.3, rounds: int = 3,
                  max_other_load: float | None = None, max_tries: int = 20) -> dict[str, dict]:  # fmt: skip
    """Latency of running every batch through each model, and its speed-up over fp32:

        speedup = t_fp32 / t_model       (both medians of torch.utils.benchmark's
                                          blocked_autorange, at `threads` torch threads)

    Each round times fp32 right before each model, and a model's speed-up is the median over
    rounds of t_fp32 / t_model from those adjacent pairs: on a shared machine whose load comes
    and goes, both sides of a pair see about the same load.
    On a machine shared with other jobs, max_other_load (e.g. 0.15 cores) retakes a pair, up to
    max_tries times, while other processes kept more than that busy (Linux; /proc/stat).
    Returns name -> {"ms": median ms, "speedup": median ratio, "speedup_range": (lowest, highest)
    per-round ratio, "busy_pairs": pairs kept although the machine stayed busy}, "fp32" first.
    """
    from qlab.lab.bench import median_ms

    if not isinstance(models, Mapping) or not all(isinstance(m, nn.Module) for m in models.values()):
        raise TypeError("models must be a dict of name -> nn.Module")
    if not isinstance(fp32, nn.Module):
        raise TypeError(f"fp32 must be the float nn.Module, got {type(fp32).__name__}")
    if not batches:
        raise ValueError("batches is empty; pass minilm_batches(model, sentences)")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise ValueError(f"max_tries must be an int >= 1, got {max_tries!r}")
    if max_other_load is not None and not (isinstance(max_other_load, (int, float))
                                           and max_other_load >= 0):  # fmt: skip
        raise ValueError(f"max_other_load must be None or a number of cores >= 0, got {max_other_load!r}")

    def pair(m):
        """(t_fp32, t_m) in ms, and whether other processes stayed under max_other_load."""
        read = _other_processes_cores() if max_other_load is not None else None
        f = median_ms(lambda: [fp32(dict(b)) for b in batches], min_run_time)
        t = median_ms(lambda: [m(dict(b)) for b in batches], min_run_time)
        return f, t, read is None or read() <= max_other_load

    fp32_ms: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in models}
    ratios: dict[str, list[float]] = {name: [] for name in models}
    busy = dict.fromkeys(models, 0)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _x86_engine():
            for _ in range(rounds):
                for name, m in models.items():
                    for _ in range(max_tries):
                        f, t, quiet = pair(m)
                        if quiet:
                            break
                    busy[name] += not quiet
                    fp32_ms.append(f)
                    times[name].append(t)
                    ratios[name].append(f / t)
    finally:
        torch.set_num_threads(old)
    out = {"fp32": {"ms": statistics.median(fp32_ms), "speedup": 1.0, "speedup_range": (1.0, 1.0),
                    "busy_pairs": 0}}
    for name in models:
        out[name] = {"ms": statistics.median(times[name]), "speedup": statistics.median(ratios[name]),
                     "speedup_range": (min(ratios[name]), max(ratios[name])), "busy_pairs": busy[name]}
    return out


#: SmoothQuant's α for MiniLM: 0.75, 0.8 and 0.85 all reach the goal with the layers below in
#: fp32 (cosine 0.997-0.998, NN agreement 92-94 % on sentences(256)); with every Linear in int8,
#: 0.8 gives the best cosine (0.9926) and 0.5 loses (0.933): see minilm_table.
MINILM_ALPHA = 0.8
#: the three Linears that layer_sensitivity ranks worst on the smoothed MiniLM (α = 0.8,
#: per-channel weights, mean cosine on 32 or 64 calibration sentences, same order for both):
#: the FFN down-projections of layers 0-2, whose inputs are GELU outputs with outlier channels.
MINILM_KEEP_FP32 = ("encoder.layer.0.output.dense", "encoder.layer.2.output.dense",
                    "encoder.layer.1.output.dense")


def bert_value_folds(model: nn.Module) -> dict[str, list[str]]:
    """{value Linear: [attention.output.dense]} for every BERT layer in the model.

    context = softmax(Q Kᵀ) V mixes tokens but never channels, so the 1/s that SmoothQuant
    wants on attention.output.dense's input folds into value's output rows (W_v / s, b_v / s).
    The LayerNorms cannot take 1/s: in this post-LN BERT their outputs also feed the residuals.
    """
    names = {n for n, _ in model.named_modules()}
    return {n: [n.replace("self.value", "output.dense")] for n in sorted(names)
            if n.endswith("attention.self.value") and n.replace("self.value", "output.dense") in names}


def _resolve(model: nn.Module, name: str) -> str:
    """The full module name in model for `name` given in full or relative to the BERT."""
    found = [n for n, _ in model.named_modules() if n == name or n.endswith("." + name)]
    if len(found) != 1:
        raise ValueError(f"keep_fp32 names {name!r}, which matches {len(found)} modules of the model "
                         "(need exactly one), e.g. 'encoder.layer.0.output.dense'")
    return found[0]


def best_minilm_config(model, sentences: Sequence[str], alpha: float = MINILM_ALPHA,
                       keep_fp32: int | Sequence[str] = MINILM_KEEP_FP32,
                       to_torch: bool = True) -> nn.Module:  # fmt: skip
    """MiniLM in dynamic int8 at cosine >= 0.99 and NN agreement >= 90 % (lesson 03's goal):

    1. calibrate: max|X_j| of every Linear input, one pass over `sentences` (64-128 suffice);
    2. SmoothQuant, s_j = max|X_j|^α / max|W_:,j|^(1-α), α = 0.8: folded into value for
       attention.output.dense (bert_value_folds), an explicit x * (1/s) before the others;
    3. keep_fp32 stay float: names (full or relative to the BERT), or an int n to take the n
       lowest scores of layer_sensitivity (mean cosine on sentences[:32]);
    4. quantize_dynamic: int8 per-channel weights, reduce_range, on torch.ao's x86 kernels
       (to_torch=False keeps qlab's bit-identical modules).
    """
    from qlab import smoothquant

    _check_model(model)
    sentences = _check_sentences(sentences)
    absmax = smoothquant.input_channel_absmax(model, minilm_batches(model, sentences))
    folds = bert_value_folds(model)
    if isinstance(keep_fp32, int) and not isinstance(keep_fp32, bool):
        smoothed = smoothquant.smooth_quant(model, None, alpha, folds=folds, act_absmax=absmax)
        sample = sentences[:32]
        ref = encode(model, sample)
        scores = layer_sensitivity(
            smoothed, lambda m: embedding_quality(ref, encode(m, sample))["cosine"])
        worst = sorted(scores, key=scores.get)[:keep_fp32]
        keep = [n.removesuffix(".linear") for n in worst]
    elif isinstance(keep_fp32, Sequence) and not isinstance(keep_fp32, str):
        keep = [_resolve(model, n) for n in keep_fp32]
    else:
        raise TypeError(f"keep_fp32 must be a list of layer names or an int, got {keep_fp32!r}")
    absmax = {n: a for n, a in absmax.items() if n not in keep}
    folds = {p: c for p, c in folds.items() if not set(c) & set(keep)}
    smoothed = smoothquant.smooth_quant(model, None, alpha, folds=folds, act_absmax=absmax)
    for n in keep:
        smoothed.get_submodule(n).qconfig = None  # quantize_dynamic leaves it float
    q = qlab.quantize_dynamic(smoothed, {nn.Linear}, per_channel=True, reduce_range=True)
    if to_torch:
        with _x86_engine():
            q = qlab.to_torch(q)
    return q


def held_out_sentences(n: int, exclude: Sequence[str]) -> list[str]:
    """The first n corpus sentences that are not in `exclude`: calibration data kept apart from
    the sentences a configuration is scored on."""
    from qlab.lab.data import sentences

    excluded = set(exclude)
    rest = [s for s in sentences(None) if s not in excluded]
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= len(rest):
        raise ValueError(f"n must be an int in 1..{len(rest)}, got {n!r}")
    return rest[:n]


def _sensitivity_order(model, sample: Sequence[str], per_channel: bool = True) -> list[str]:
    """Linear names (".linear" of a smoothed layer dropped), most sensitive first."""
    ref = encode(model, sample)
    scores = layer_sensitivity(model, lambda m: embedding_quality(ref, encode(m, sample))["cosine"],
                               per_channel=per_channel)
    return [n.removesuffix(".linear") for n in sorted(scores, key=scores.get)]


def minilm_table(model=None, n_eval: int = 256, n_calibration: int = 128,
                 alphas: Sequence[float] = (0.5, 0.65, 0.75, 0.8, 0.85, 0.9), timing_sentences: int = 64,
                 threads: int = 2, rounds: int = 5, min_run_time: float = 0.3,
                 max_other_load: float | None = None) -> list[dict]:  # fmt: skip
    """Every MiniLM configuration of lesson 03, measured in one run: quality on sentences(n_eval)
    (embedding_quality against fp32), speed-up over fp32 on torch.ao's x86 kernels for the first
    timing_sentences of them in batches of 32 (speed_vs_fp32), calibration and sensitivity scans
    on held_out_sentences(n_calibration) (scans: its first 32). max_other_load: see
    speed_vs_fp32. Slow (15 minutes on 2 cores): for the closing note, not the lesson.
    Rows are dicts: configuration, cosine, nn_agreement, speedup, speedup_range ("qlab only"
    rows, reduce_range off, have no speed: torch.ao's x86 kernels need reduce_range).
    """
    from qlab import smoothquant
    from qlab.lab.data import sentences
    from qlab.lab.models import load_minilm

    model = load_minilm() if model is None else model
    _check_model(model)
    sents = sentences(n_eval)
    calib = held_out_sentences(n_calibration, sents)
    ref = encode(model, sents)
    absmax = smoothquant.input_channel_absmax(model, minilm_batches(model, calib))
    folds = bert_value_folds(model)

    def smooth(alpha, keep=()):
        a = {n: v for n, v in absmax.items() if n not in keep}
        f = {p: c for p, c in folds.items() if not set(c) & set(keep)}
        return smoothquant.smooth_quant(model, None, alpha, folds=f, act_absmax=a)

    def dyn(m, per_channel=True, reduce_range=True, keep=()):
        m = copy.deepcopy(m)
        for n in keep:
            m.get_submodule(n).qconfig = None
        q = qlab.quantize_dynamic(m, {nn.Linear}, per_channel=per_channel, reduce_range=reduce_range)
        if reduce_range:
            with _x86_engine():
                q = qlab.to_torch(q)
        return q

    with _x86_engine():
        ao_default = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear},
                                                           dtype=torch.qint8)
    plain_order = _sensitivity_order(model, calib[:32])
    smooth_order = _sensitivity_order(smooth(MINILM_ALPHA), calib[:32])
    ffn_out = [n for n, _ in model.named_modules() if n.endswith(".output.dense") and "attention" not in n]
    fast = {"torch.ao dynamic, x86 default (per-tensor weights, reduce_range)": ao_default,
            "per-channel weights": dyn(model),
            "per-channel, 3 most sensitive Linears fp32 (scan)": dyn(model, keep=plain_order[:3]),
            "per-channel, six FFN down-projections fp32": dyn(model, keep=ffn_out),
            f"SmoothQuant α={MINILM_ALPHA}, per-tensor weights": dyn(smooth(MINILM_ALPHA), False)}
    for a in alphas:
        fast[f"SmoothQuant α={a}, per-channel"] = dyn(smooth(a))
    for k in (1, 2, 3):
        keep = smooth_order[:k]
        fast[f"SmoothQuant α={MINILM_ALPHA}, per-channel, {k} most sensitive fp32 (scan)"] = \
            dyn(smooth(MINILM_ALPHA, keep), keep=keep)
    fast["best_minilm_config (the recipe)"] = best_minilm_config(model, calib)
    slow = {"per-channel, reduce_range off (qlab only)": dyn(model, reduce_range=False),
            f"SmoothQuant α={MINILM_ALPHA}, per-channel, reduce_range off (qlab only)":
                dyn(smooth(MINILM_ALPHA), reduce_range=False)}  # fmt: skip
    speed = speed_vs_fp32(fast, model, minilm_batches(model, sents[:timing_sentences]), threads=threads,
                          rounds=rounds, min_run_time=min_run_time, max_other_load=max_other_load)
    rows = [{"configuration": "fp32", "cosine": 1.0, "nn_agreement": 1.0, **speed["fp32"]}]
    for name, m in {**fast, **slow}.items():
        row = {"configuration": name, **embedding_quality(ref, encode(m, sents))}
        row.update(speed.get(name, {"ms": None, "speedup": None, "speedup_range": None}))
        rows.append(row)
    kept = {"per-channel, 3": plain_order[:3], "best_minilm_config": list(MINILM_KEEP_FP32),
            f"SmoothQuant α={MINILM_ALPHA}, per-channel, 3": smooth_order[:3]}
    for row in rows:
        for prefix, names in kept.items():
            if row["configuration"].startswith(prefix):
                row["kept_fp32"] = names
    return rows


def format_minilm_table(rows: Sequence[dict]) -> str:
    """minilm_table's rows as a Markdown table (cosine to 4 places, NN agreement in %)."""
    lines = ["| configuration | mean cosine | NN agreement | speed vs fp32 (median; range) |",
             "|---|---|---|---|"]
    for r in rows:
        speed = "—" if r["speedup"] is None else (
            f"{r['speedup']:.2f}x ({r['speedup_range'][0]:.2f}–{r['speedup_range'][1]:.2f})")
        quality = f"{r['cosine']:.4f} | {100 * r['nn_agreement']:.1f} %"
        lines.append(f"| {r['configuration']} | {quality} | {speed} |")
    return "\n".join(lines)
