"""Lesson 01, the measurements: numbers in, numbers out, no drawing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

import qlab
from qlab.lab.kit.check import check_choice, check_int
from qlab.lab.kit.integrity import MINILM_SHA256, verify_sha256
from qlab.lab.kit.models import minilm_dir
from qlab.lab.kit.torch_ao import quiet
from qlab.qparams import QParams

SCHEMES = ("symmetric", "affine")


def check_scheme(scheme: str) -> None:
    """ValueError unless scheme is "symmetric" or "affine"."""
    check_choice("scheme", scheme, SCHEMES, what=f"one of {SCHEMES}")


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
    check_choice("granularity", granularity, GRANULARITIES, what=f"one of {GRANULARITIES}")


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
    with quiet():
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


def check_group(group, row: int) -> int:
    """group, if it is a group size for rows of `row` values: an int from 1 to row that divides it
    (a group never spans two rows). Otherwise a ValueError naming the sizes that fit."""
    sizes = [g for g in range(1, row + 1) if row % g == 0]
    if check_int("group", group, 1, row, what=f"a divisor of the row length {row}: one of {sizes}") in sizes:
        return int(group)
    raise ValueError(f"group={group} does not divide the row length {row}; a group never spans two rows: "
                     f"use one of {sizes}")


def per_group_qparams(w: torch.Tensor, bits: int, group: int) -> QParams:
    """Symmetric qparams with one scale per `group` consecutive weights of a row (per-group).

    That is per-channel qparams of w reshaped to (rows * K / group, group): quantize
    w.reshape(-1, group) with them (axis 0). torchao's block_size (1, group) gives the same
    integers (tests/test_torchao_math.py).
    """
    if w.dim() != 2:
        raise ValueError(f"per-group qparams need a 2-d weight [rows, row length], "
                         f"got shape {tuple(w.shape)}")
    groups = w.reshape(-1, check_group(group, w.shape[1]))
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
    weights (qlab.lab.kit.models.minilm_weights) and the model's own tokenizer.json, without
    importing transformers; [n_tokens, 384]. tests check it equals the model's own.
    """
    from tokenizers import Tokenizer

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
