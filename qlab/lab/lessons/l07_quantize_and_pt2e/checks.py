"""Lesson 07, the self-checks of its exercises."""

from __future__ import annotations

import torch

import qlab
from qlab.lab.kit.check import Student, as_int, checker, describe, error_text, verdict
from qlab.lab.kit.torch_ao import quiet
from qlab.observers import MinMaxObserver

_TORCHAO_KEYS = ("mapping_type", "block_size", "target_dtype", "quant_min", "quant_max")


def _translation_cases() -> list[tuple[str, object, torch.Tensor]]:
    """(what the case is, a classic qlab observer, a tensor it quantizes)."""
    gen = torch.Generator().manual_seed(7)
    act = torch.randn(32, 48, generator=gen) * 1.5 + 0.8                        # an activation, off-centre
    w = torch.randn(24, 48, generator=gen) * torch.rand(24, 1, generator=gen) * 2  # rows of different widths
    return [
        ("activation: per tensor, uint8 affine (static PTQ's default)",
         MinMaxObserver(qdtype=qlab.uint8), act),
        ("weight: per output channel, int8 symmetric (the x86 default)",
         MinMaxObserver(qdtype=qlab.int8, symmetric=True, axis=0), w),
        ("weight: per output channel, int4 symmetric",
         MinMaxObserver(qdtype=qlab.int4, symmetric=True, axis=0), w),
        ("activation: per tensor, uint8 affine with reduce_range (7-bit codes)",
         MinMaxObserver(qdtype=qlab.uint8, reduce_range=True), act),
        ("weight: per tensor, int8 symmetric", MinMaxObserver(qdtype=qlab.int8, symmetric=True), w),
    ]  # fmt: skip


def _mapping_name(v) -> str | None:
    name = getattr(v, "name", v)
    return name.upper() if isinstance(name, str) else None


def _translation_hint(spec: dict, obs, shape: tuple) -> str:
    """The first field of the student's spec that differs from the observer's meaning, explained."""
    qmin, qmax = obs.qparams().qmin, obs.qparams().qmax
    mapping = _mapping_name(spec["mapping_type"])
    want = "SYMMETRIC" if obs.symmetric else "ASYMMETRIC"
    if mapping != want:
        return (f"mapping_type: this observer has symmetric={obs.symmetric}, which is MappingType.{want} "
                "(symmetric: zero point 0, scale from max|x|; asymmetric = torch.ao's affine: scale and "
                "zero point from min and max)")
    block = tuple(spec["block_size"]) if isinstance(spec["block_size"], (tuple, list, torch.Size)) else None
    per_row = (1, shape[1])
    if block is None or len(block) != len(shape):
        return f"block_size must be a tuple with one entry per dimension of the tensor, shape {tuple(shape)}"
    if obs.axis is None and block != tuple(shape):
        return (f"block_size is the shape of the block that shares one scale; a per-tensor observer has one "
                f"block, the whole tensor: {tuple(shape)}, here (block_size={block})")
    if obs.axis == 0 and block != per_row:
        if block == (shape[0], 1):
            return (f"(rows, 1) is a column: one scale per *input* channel. axis=0 means one scale per "
                    f"output channel, a row of the weight: block_size (1, {shape[1]})")
        return f"axis=0 is one scale per row (output channel): block_size (1, {shape[1]}), not {block}"
    lo, hi = spec["quant_min"], spec["quant_max"]
    if (lo, hi) != (qmin, qmax):
        if (lo, hi) == (-qmax, qmax):
            return (f"[{lo}, {hi}] is the restricted range some material uses; qlab's and torch.ao's "
                    f"signed grids include {qmin} (and torchao's symmetric scale is then "
                    "max|x| / ((qmax - qmin) / 2), PyTorch's 127.5 at 8 bits)")
        if obs.reduce_range and (lo, hi) == (0, 255):
            return ("reduce_range=True halves the grid: codes 0..127 (quant_max 127), one bit fewer, so that "
                    "fbgemm's int16 pair sums cannot saturate")
        return (f"quant_min / quant_max are the observer's grid: {obs.qdtype.bits}-bit "
                f"{'signed' if obs.qdtype.signed else 'unsigned'} codes [{qmin}, {qmax}]"
                + (" (an int4 grid stored in int8 is still [-8, 7])" if obs.qdtype.bits == 4 else ""))
    return ("target_dtype is the storage of the codes: torch.uint8 for an unsigned grid, torch.int8 for a "
            "signed one (int4 codes are stored in int8 too)")


def _integers(spec: dict) -> tuple[tuple, int, int] | None:
    """(block_size, quant_min, quant_max) of the student's spec as ints, or None if one is no integer."""
    block = spec["block_size"]
    block = tuple(as_int(b) for b in block) if isinstance(block, (tuple, list, torch.Size)) else (None,)
    lo, hi = as_int(spec["quant_min"]), as_int(spec["quant_max"])
    return None if None in (*block, lo, hi) else (block, lo, hi)


@checker(f"a dict with the keys {', '.join(_TORCHAO_KEYS)}: a MappingType, a tuple of ints, "
         "a torch dtype and two ints")
def check_torchao_translation(student: Student) -> bool:
    """Check a student's fn(observer, shape) -> dict(mapping_type, block_size, target_dtype, quant_min,
    quant_max): torchao's choose_qparams_affine / quantize_affine arguments that give the integers the
    classic observer gives (qlab.quantize with its qparams), for five typical qconfig observers."""
    from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine, quantize_affine

    name = student.name
    cases = _translation_cases()
    for what, obs, x in cases:
        obs(x)
        qp = obs.qparams()
        expected = qlab.quantize(x, qp, axis=obs.axis).to(torch.int64)
        spec = student(what, obs, tuple(x.shape))
        if not isinstance(spec, dict) or set(_TORCHAO_KEYS) - set(spec):
            return verdict(False, name, f"{what}: return a dict with the keys {', '.join(_TORCHAO_KEYS)}, "
                                        f"got {describe(spec)}")
        mapping = _mapping_name(spec["mapping_type"])
        if mapping not in ("SYMMETRIC", "ASYMMETRIC"):
            return verdict(False, name, f"{what}: mapping_type must be MappingType.SYMMETRIC or "
                                        f"MappingType.ASYMMETRIC, got {spec['mapping_type']!r}")
        ints = _integers(spec)
        if ints is None:
            return verdict(False, name, f"{what}: it returned {spec!r}; block_size must be a tuple of ints, "
                                        "one per dimension, and quant_min and quant_max ints")
        (block, lo, hi), kind, dtype = ints, MappingType[mapping], spec["target_dtype"]
        try:
            with quiet():
                eps = torch.finfo(torch.float32).eps
                s, z = choose_qparams_affine(x, kind, block, dtype, lo, hi, eps=eps)
                got = quantize_affine(x, block, s, z, dtype, lo, hi).to(torch.int64)
        except Exception as e:  # torchao rejects the arguments: say which and why
            return verdict(False, name, f"{what}: torchao rejected what it returned, {spec}: "
                                        f"{error_text(e)}.\n"
                                        f"   Hint: {_translation_hint(spec, obs, tuple(x.shape))}")
        if not torch.equal(got, expected):
            n = int((got != expected).sum())
            return verdict(False, name, f"{what}: {n} of {got.numel()} integers differ from the observer's "
                                        f"(shape {tuple(x.shape)}, you returned {spec}).\n"
                                        f"   Hint: {_translation_hint(spec, obs, tuple(x.shape))}")
    return verdict(True, name, f"all {len(cases)} observers translate to torchao arguments that give qlab's "
                               "integers bit for bit")
