"""Lesson 07: the modern path. torchao's `quantize_` configs and PT2E static quantization
(export -> prepare_pt2e -> calibrate -> convert_pt2e -> torch.compile), measured beside the
classic torch.ao calls of lessons 03-05 and checked against qlab's own math.

Everything here is measured when called; nothing is a recorded figure.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

import qlab
from qlab.lab.kit import compiler, timing, torch_ao
from qlab.lab.kit.minilm import embedding_quality
from qlab.lab.kit.minilm import held_out_sentences as held_out_sentences  # re-exported for the notebook
from qlab.lab.kit.torch_ao import quiet_logs
from qlab.lab.kit.train import top1
from qlab.lab.lessons.l01_quantization_math.numbers import check_group
from qlab.lab.lessons.l03_dynamic_quantization.numbers import (
    best_minilm_config as best_minilm_config,  # re-exported for the notebook
)
from qlab.lab.lessons.l04_static_quantization import speed as l04_speed
from qlab.qparams import EPS

BATCH = 64  # the batch every CNN path is timed at (lesson 04's)


PATHS = ("fp32 eager", "fp32 compiled", "torch.ao int8 eager", "torch.ao int8 compiled", "PT2E int8 eager",
         "PT2E int8 compiled", "PT2E int8 compiled, no freezing")
MINILM_COMPILED = ("fp32 compiled", "torchao int8 compiled")


def skipped_paths() -> dict[str, str]:
    """The paths this machine cannot run, each with the one line that says why; {} on an x86 CPU
    with a C++ compiler. Without a compiler every compiled path is skipped (compiler.missing_line);
    on a non-x86 engine (qnnpack: ARM laptops) PT2E's compiled int8, whose X86InductorQuantizer
    targets x86's oneDNN int8 kernels."""
    if not compiler.can_compile():
        line = compiler.missing_line()
        return {p: line for p in (*PATHS, *MINILM_COMPILED) if "compiled" in p}
    if not torch_ao.X86:
        line = (f"PT2E int8 compiled is skipped on this machine's {torch_ao.ENGINE} engine: "
                "X86InductorQuantizer's compiled int8 kernels are x86's (oneDNN); its eager graph runs here")
        return {"PT2E int8 compiled": line, "PT2E int8 compiled, no freezing": line}
    return {}


def _torchao():
    quiet_logs()
    import torchao.quantization as tq
    from torchao.quantization import quant_primitives

    return tq, quant_primitives


# ---------------------------------------------------------------------------------------
# The same math: torchao's primitives against qlab's
# ---------------------------------------------------------------------------------------


def torchao_codes(x: torch.Tensor, mapping: str, block_size: Sequence[int], target_dtype: torch.dtype,
                  quant_min: int, quant_max: int) -> torch.Tensor:
    """torchao's integers for x: choose_qparams_affine then quantize_affine, one (scale, zero point)
    per block of shape block_size (x.shape: per tensor; (1, K): per row; (1, g): per group of g)."""
    _, qp = _torchao()
    kind = {"symmetric": qp.MappingType.SYMMETRIC, "asymmetric": qp.MappingType.ASYMMETRIC}[mapping]
    block_size = tuple(block_size)
    s, z = qp.choose_qparams_affine(x, kind, block_size, target_dtype, quant_min, quant_max, eps=EPS)
    return qp.quantize_affine(x, block_size, s, z, target_dtype, quant_min, quant_max).to(torch.int64)


def qlab_codes(x: torch.Tensor, qdtype: qlab.QDType, symmetric: bool,
               group: int | None = None) -> torch.Tensor:  # fmt: skip
    """qlab's integers for a 2-D x from its min-max range: per tensor (group None), per row
    (group = x.shape[1]) or per group of `group` consecutive values of a row (the rows reshaped
    to [rows * K / group, group], then one scale a row: per-group is per-channel of that view)."""
    if group is None:
        return qlab.quantize(x, qlab.qparams_from_range(x.min(), x.max(), qdtype, symmetric=symmetric)).long()
    g = x.reshape(-1, check_group(group, x.shape[-1]))
    qp = qlab.qparams_from_range(g.amin(1), g.amax(1), qdtype, symmetric=symmetric, axis=0)
    return qlab.quantize(g, qp, axis=0).reshape(x.shape).long()


def same_math(weight: torch.Tensor, activation: torch.Tensor, group: int = 32) -> list[dict]:
    """qlab against torchao on the same tensors, one row per granularity the lessons use: the count
    of integers that differ (0 = bit for bit) out of all."""
    k = weight.shape[1]
    check_group(group, k)
    cases = [
        ("activation, per tensor, uint8 affine (static PTQ)", activation, qlab.uint8, False, None,
         ("asymmetric", activation.shape, torch.uint8, 0, 255)),
        ("activation, per token (row), int8 symmetric (torchao dynamic)", activation, qlab.int8, True,
         activation.shape[1], ("symmetric", (1, activation.shape[1]), torch.int8, -128, 127)),
        ("weight, per output channel, int8 symmetric", weight, qlab.int8, True, k,
         ("symmetric", (1, k), torch.int8, -128, 127)),
        ("weight, per channel, int4 symmetric", weight, qlab.int4, True, k,
         ("symmetric", (1, k), torch.int8, -8, 7)),
        (f"weight, per group of {group}, int4 symmetric", weight, qlab.int4, True, group,
         ("symmetric", (1, group), torch.int8, -8, 7)),
    ]  # fmt: skip
    rows = []
    for name, x, qdtype, symmetric, g, spec in cases:
        ours, theirs = qlab_codes(x, qdtype, symmetric, g), torchao_codes(x, *spec)
        rows.append({"case": name, "differ": int((ours != theirs).sum()), "of": ours.numel(),
                     "block_size": tuple(spec[1])})
    return rows


def quantize_weight_codes_match(linear: nn.Linear) -> bool:
    """Does quantize_(Int8DynamicActivationInt8WeightConfig()) store the integers qlab gives the
    weight per output channel (int8 symmetric, qmin -128)? Reads torchao's Int8Tensor.qdata."""
    tq, _ = _torchao()
    m = nn.Sequential(copy.deepcopy(linear))
    tq.quantize_(m, tq.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False))
    w = linear.weight.detach()
    return torch.equal(m[0].weight.qdata.long(), qlab_codes(w, qlab.int8, True, w.shape[1]))


# ---------------------------------------------------------------------------------------
# The map: each classic call and its torchao counterpart, run on the same Linear model
# ---------------------------------------------------------------------------------------


def mlp(width: int = 1024, layers: int = 2, seed: int = 0) -> nn.Module:
    """`layers` Linear(width, width) with ReLUs between: big enough that int8 kernels can pay."""
    torch.manual_seed(seed)
    parts: list[nn.Module] = []
    for i in range(layers):
        parts += [nn.Linear(width, width)] + ([nn.ReLU()] if i < layers - 1 else [])
    return nn.Sequential(*parts).eval()


def _configs() -> dict[str, Callable]:
    tq, _ = _torchao()
    from torchao.quantization import PerGroup

    return {
        "Int8DynamicActivationInt8WeightConfig":
            lambda: tq.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False),
        "Int8WeightOnlyConfig": lambda: tq.Int8WeightOnlyConfig(),
        "Int4WeightOnlyConfig": lambda: tq.Int4WeightOnlyConfig(group_size=32),
        "IntxWeightOnlyConfig(int4, group 32)":
            lambda: tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)),
        "Int8DynamicActivationIntxWeightConfig(int4, group 32)":
            lambda: tq.Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                             weight_granularity=PerGroup(32)),
    }  # fmt: skip


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def try_configs(model: nn.Module, x: torch.Tensor, names: Sequence[str] | None = None,
                threads: int = 2, min_run_time: float = 0.3, rounds: int = 3) -> list[dict]:  # fmt: skip
    """Apply each torchao config (quantize_, eager) to a copy of model and run x through it.

    A config that fails on this CPU (at quantize_ or at the first call) gets its error, first line,
    instead of numbers. The others get the relative error of the output against fp32
    (||y - y_fp32|| / ||y_fp32||) and their speed-up over fp32 eager, timed interleaved in one run.
    Rows: config, ok, error, rel_error, ms, speedup; "fp32" first.
    """
    tq, _ = _torchao()
    configs = _configs()
    names = list(configs) if names is None else list(names)
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise ValueError(f"unknown config {unknown[0]!r}; known: {', '.join(configs)}")
    with torch.no_grad():
        ref = model(x)
    rows, ready = [], {"fp32": model}
    for name in names:
        m = copy.deepcopy(model)
        try:
            tq.quantize_(m, configs[name]())
            with torch.no_grad():
                y = m(x)
        except Exception as e:  # noqa: BLE001 - the error is the lesson's result
            rows.append({"config": name, "ok": False, "error": _first_line(e)})
            continue
        rel = float((y - ref).norm() / ref.norm())
        rows.append({"config": name, "ok": True, "error": "", "rel_error": rel})
        ready[name] = m
    with timing.settings(threads):
        fns = {n: functools.partial(m, x) for n, m in ready.items()}
        ms = timing.interleaved_ms(fns, min_run_time, rounds)
    for r in rows:
        if r["ok"]:
            r["ms"], r["speedup"] = ms[r["config"]], ms["fp32"] / ms[r["config"]]
    fp32 = {"config": "fp32", "ok": True, "error": "", "rel_error": 0.0, "ms": ms["fp32"], "speedup": 1.0}
    return [fp32] + rows


def _qat_prepare(model: nn.Module, group: int):
    """torchao's QAT prepare step on a copy of model, for an int8-activation, int4-per-group-weight
    base config: (base config, prepared copy, its first FakeQuantizedLinear)."""
    check_group(group, next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features)
    tq, _ = _torchao()
    from torchao.quantization import PerGroup
    from torchao.quantization.qat import QATConfig

    base = tq.Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                    weight_granularity=PerGroup(group))
    prepared = copy.deepcopy(model)
    tq.quantize_(prepared, QATConfig(base, step="prepare"))
    return base, prepared, next(m for m in prepared.modules() if hasattr(m, "weight_fake_quantizer"))


def _int4_group_qparams(g: torch.Tensor) -> qlab.QParams:
    """qlab's grid for weights reshaped to [groups, group]: int4 symmetric, one scale a row."""
    return qlab.qparams_from_range(g.amin(1), g.amax(1), qlab.int4, symmetric=True, axis=0)


def qat_same_fake_quant(model: nn.Module, x: torch.Tensor, group: int = 32) -> dict:
    """torchao's QAT prepare step (QATConfig(base, step="prepare") on an int8-activation,
    int4-per-group-weight base config) against qlab's fake_quantize with the same grids:
    the first FakeQuantizedLinear's fake-quantized weight and input, compared value for value;
    then the convert step, and the type the weight becomes."""
    tq, _ = _torchao()
    from torchao.quantization.qat import QATConfig

    base, prepared, first = _qat_prepare(model, group)
    w = first.weight.detach()
    g = w.reshape(-1, group)
    qp_w = _int4_group_qparams(g)
    qp_x = qlab.qparams_from_range(x.amin(1), x.amax(1), qlab.int8, axis=0)  # per token, affine
    with torch.no_grad():
        w_ours = qlab.fake_quantize(g, qp_w, axis=0).reshape(w.shape)
        x_ours = qlab.fake_quantize(x, qp_x, axis=0)
        w_diff = int((first.weight_fake_quantizer(w) != w_ours).sum())
        x_diff = int((first.activation_fake_quantizer(x) != x_ours).sum())
    converted = copy.deepcopy(prepared)
    tq.quantize_(converted, QATConfig(base, step="convert"))
    after = next(m for m in converted.modules() if isinstance(m, nn.Linear))
    return {"prepared": type(first).__name__, "weight_differ": w_diff, "weight_of": w.numel(),
            "input_differ": x_diff, "input_of": x.numel(), "converted_weight": type(after.weight).__name__}


def clamp_gradient(values, lo: float, hi: float) -> list[float]:
    """d torch.clamp(x, lo, hi) / dx at each value: 1 strictly inside [lo, hi]; in this torch (2.14)
    0 at the bounds themselves as well as beyond them (older releases passed 1 at the bounds)."""
    x = torch.tensor(values, dtype=torch.float32, requires_grad=True)
    torch.clamp(x, lo, hi).sum().backward()
    return x.grad.tolist()


def qat_ste(model: nn.Module, group: int = 32, seed: int = 0) -> dict:
    """The backward pass (the STE) of torchao's QAT weight fake quantizer (int4, per group of
    `group`, symmetric, as in qat_same_fake_quant) against qlab.fake_quantize's and torch.ao's
    fake_quantize_per_channel_affine's, for one random upstream gradient on the first Linear's weight.
    Weights fall in three classes by their unclamped code round(w / s): "beyond" the grid (clipped),
    on its "edge" (code qmin or qmax exactly) and "inside"; for each: how many, how many zero
    gradients each STE gives, and which codes occur ("beyond", "edge"); inside also the largest
    relative difference of the two gradients and how many are bit-equal."""
    first_linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    if first_linear.in_features % group:
        raise ValueError(f"group = {group} must divide the first Linear's in_features "
                         f"({first_linear.in_features}): a group is that many weights of one row")
    fq = _qat_prepare(model, group)[2].weight_fake_quantizer
    w = first_linear.weight.detach().reshape(-1, group)
    g_out = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed))
    qp = _int4_group_qparams(w)

    def grad(f):
        x = w.clone().requires_grad_(True)
        f(x).backward(g_out)
        return x.grad

    g_ao = grad(lambda x: fq(x.reshape(first_linear.weight.shape)).reshape(x.shape))
    g_ours = grad(lambda x: qlab.fake_quantize(x, qp, axis=0))
    g_kernel = grad(lambda x: torch.fake_quantize_per_channel_affine(
        x, qp.scale, qp.zero_point.to(torch.int32), 0, qp.qmin, qp.qmax))
    code = torch.round(w * (1.0 / qp.scale.reshape(-1, 1)))
    classes = {"beyond": (code < qp.qmin) | (code > qp.qmax),
               "edge": (code == qp.qmin) | (code == qp.qmax)}
    classes["inside"] = ~(classes["beyond"] | classes["edge"])
    out: dict = {"weights": w.numel(), "qlab_vs_torch_ao_differ": int((g_ours != g_kernel).sum())}
    for name, where in classes.items():
        out[name] = {"count": int(where.sum()), "zero_torchao": int((g_ao[where] == 0).sum()),
                     "zero_qlab": int((g_ours[where] == 0).sum())}
        if name != "inside":
            out[name]["codes"] = sorted(int(c) for c in code[where].unique())
    inside = classes["inside"]
    rel = ((g_ao - g_ours).abs() / g_ours.abs().clamp_min(1e-30))[inside]
    out["inside"].update(max_rel_diff=float(rel.max()) if rel.numel() else 0.0,
                         bit_equal=int((g_ao[inside] == g_ours[inside]).sum()))
    return out


# ---------------------------------------------------------------------------------------
# PT2E: export, prepare_pt2e with the x86 inductor quantizer, calibrate, convert_pt2e
# ---------------------------------------------------------------------------------------


def export(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = True, max_batch: int = 1024):
    """torch.export of the eval model as a plain GraphModule (ExportedProgram.module()). With
    dynamic_batch the batch dimension is a symbol (torch.export.Dim), so the graph runs at any batch
    from 1 to max_batch; without it, the graph is fixed to example's batch."""
    from torch.export import Dim

    shapes = {"x": {0: Dim("batch", min=1, max=max_batch)}} if dynamic_batch else None
    return torch.export.export(model.eval(), (example,), dynamic_shapes=shapes).module()


def pt2e_int8(model: nn.Module, calib: torch.Tensor, dynamic_batch: bool = True, batch_size: int = BATCH):
    """PT2E static int8 of a float model: export, prepare_pt2e with X86InductorQuantizer's default
    config (uint8 affine activations over all 8 bits, 0..255, from a histogram observer; int8
    per-channel symmetric weights; torch.ao's x86 default qconfig differs in using reduce_range,
    codes 0..127), calibrate on calib in batches, convert_pt2e.
    The result still runs eagerly, on quantize / dequantize nodes around float ops; torch.compile
    fuses them into int8 kernels."""
    quiet_logs()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(export(model, calib[:batch_size], dynamic_batch), quantizer)
    with torch.no_grad():
        for b in calib.split(batch_size):
            prepared(b)
    return convert_pt2e(prepared)


def static_batch_failure(model: nn.Module, calib: torch.Tensor, batch_size: int = BATCH) -> str:
    """What happens when the graph is exported for one batch size and calibrated with another
    (the last calibration batch is smaller): the error, first line, or "" if it ran."""
    try:
        pt2e_int8(model, calib[: batch_size + batch_size // 2], dynamic_batch=False, batch_size=batch_size)
    except Exception as e:  # noqa: BLE001 - the error is the lesson's result
        return _first_line(e)
    return ""


def torch_ao_int8(model: nn.Module, calib: torch.Tensor, batch_size: int = BATCH) -> nn.Module:
    """Lesson 04's classic path: fuse, then l04_speed.torch_ao_static (torch.ao's default for ENGINE)."""
    fused = copy.deepcopy(model).eval()
    fused.fuse_model()
    return l04_speed.torch_ao_static(fused, calib.split(batch_size))


def compile_frozen(model: nn.Module, example, freezing: bool = True) -> tuple[Callable, float]:
    """torch.compile(model) with inductor's freezing on (weights become constants the compiler may
    fold, e.g. pre-packed int8 weights), compiled now by a first call on example.
    Shapes are static: each new input shape compiles again. Returns (compiled, seconds).
    The seconds depend on the machine's caches: inductor keeps compiled kernels on disk (in
    /tmp/torchinductor_<user>), so a second run of the same model compiles faster."""
    quiet_logs()
    start = time.perf_counter()
    with torch._inductor.config.patch(freezing=freezing):
        compiled = torch.compile(model, dynamic=False)
        with torch.no_grad():
            compiled(example) if isinstance(example, torch.Tensor) else compiled(dict(example))
    seconds = time.perf_counter() - start
    return _with_config(compiled, freezing), seconds


def _with_config(compiled, freezing: bool):
    """compiled, called under the inductor config it was compiled with (a recompile, e.g. for a new
    shape, then freezes too)."""

    @functools.wraps(compiled)
    def run(*args, **kwargs):
        with torch._inductor.config.patch(freezing=freezing), torch.no_grad():
            return compiled(*args, **kwargs)

    return run


def predict(model: Callable, x: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """model's logits for x in batches of batch_size. The last batch is padded to batch_size with
    the first images (their logits are dropped): a compiled model sees one shape, compiles once."""
    out = []
    with torch.no_grad():
        for b in x.split(batch_size):
            n = len(b)
            if n < batch_size:
                b = torch.cat([b, x[: batch_size - n]])
            out.append(model(b)[:n])
    return torch.cat(out)


def _compiled_copy(model: nn.Module, example: torch.Tensor) -> Callable:
    """A fresh copy of model, compiled for example (what FreshKernels makes for torch.ao compiled)."""
    return compile_frozen(copy.deepcopy(model), example)[0]


def cnn_paths(model: nn.Module, calib: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
              batches: Sequence[int] = (1, BATCH), threads: int = 2, min_run_time: float = 0.6,
              rounds: int = 3) -> dict:  # fmt: skip
    """The ways lesson 07 runs a lesson CNN, each with test accuracy (in batches of 64) and latency
    at each batch size in `batches`, timed interleaved in one run at `threads` threads:

        fp32 eager              batch norm folded (fuse_model), the faster of contiguous and
                                channels_last at each batch (named in "fp32_layout")
        fp32 compiled           the same folded model, compile_frozen
        torch.ao int8 eager     lesson 04's classic static PTQ (x86 kernels)
        torch.ao int8 compiled  the same, compile_frozen: dynamo cannot trace torch.ao's quantized
                                tensors and runs them eagerly (its warnings are silenced by quiet_logs())
        PT2E int8 eager         pt2e_int8's graph as it is: quantize / dequantize around float ops
        PT2E int8 compiled      the same graph, compile_frozen: inductor fuses it into int8 kernels
        PT2E int8 compiled, no freezing    the same, with freezing off: the weights stay inputs

    Shapes are static, so each compiled path compiles once per batch size. Paths this machine
    cannot run (skipped_paths: no C++ compiler, or not x86) are left out, each with its reason.
    Returns {"rows": {path: {"accuracy", "ms": {batch: ms}, "speedup": {batch: best fp32 ms / ms},
    "compile_s": {batch: seconds} or None}}, "baseline": {batch: the fastest fp32 path},
    "fp32_layout": {batch: layout}, "build_s": PT2E export + calibrate + convert seconds,
    "runs": {batch: {path: zero-argument call that runs one timed batch}}, "batches", "threads",
    "skipped": {path: why}}.
    """
    skipped = {p: why for p, why in skipped_paths().items() if p in PATHS}
    paths = [p for p in PATHS if p not in skipped]
    fused = copy.deepcopy(model).eval()
    fused.fuse_model()
    cl = copy.deepcopy(fused).to(memory_format=torch.channels_last)
    rows = {p: {"ms": {}, "speedup": {}, "compile_s": {} if "compiled" in p else None} for p in paths}
    baseline, layout, runs = {}, {}, {}
    with timing.settings(threads):
        start = time.perf_counter()
        pt2e = pt2e_int8(model, calib)
        build_s = time.perf_counter() - start
        ao = torch_ao_int8(model, calib)
        eager = {"fp32 eager": fused, "torch.ao int8 eager": ao, "PT2E int8 eager": pt2e}
        # the no-freezing variant compiles a copy: dynamo caches compiled code per module's forward,
        # and the inductor config is not part of its guards, so the same module would reuse the frozen code
        # torch.ao compiled (None): its compiled graph still runs torch.ao's kernels, so a fresh copy of ao
        # is compiled per batch and thread count, as eager times a fresh copy (timing.FreshKernels)
        to_compile = {"fp32 compiled": fused, "torch.ao int8 compiled": None, "PT2E int8 compiled": pt2e,
                      "PT2E int8 compiled, no freezing": copy.deepcopy(pt2e)}
        to_compile = {p: m for p, m in to_compile.items() if p in paths}
        models = dict(eager)
        for b in batches:
            example = x[:b]
            example_cl = example.contiguous(memory_format=torch.channels_last)
            fns = {"fp32 contiguous": functools.partial(fused, example),
                   "fp32 channels_last": functools.partial(cl, example_cl),
                   "torch.ao int8 eager": timing.FreshKernels(ao, example),  # its kernels, for this batch
                   "PT2E int8 eager": functools.partial(pt2e, example)}
            for path, m in to_compile.items():
                freezing = not path.endswith("no freezing")
                if m is None:
                    compiled, rows[path]["compile_s"][b] = compile_frozen(copy.deepcopy(ao), example)
                    fresh = functools.partial(_compiled_copy, ao, example)
                    fns[path] = timing.FreshKernels(ao, example, make=fresh, first=compiled)
                else:
                    compiled, rows[path]["compile_s"][b] = compile_frozen(m, example, freezing=freezing)
                    fns[path] = functools.partial(compiled, example)
                if b == BATCH or path not in models:
                    models[path] = compiled  # accuracy runs in batches of 64: the batch-64 compile
            ms = timing.interleaved_ms(fns, min_run_time, rounds)
            layout[b] = min(("contiguous", "channels_last"), key=lambda k: ms[f"fp32 {k}"])
            ms["fp32 eager"], fns["fp32 eager"] = ms[f"fp32 {layout[b]}"], fns[f"fp32 {layout[b]}"]
            baseline[b] = min((p for p in ("fp32 eager", "fp32 compiled") if p in paths), key=ms.get)
            for p in paths:
                rows[p]["ms"][b], rows[p]["speedup"][b] = ms[p], ms[baseline[b]] / ms[p]
            runs[b] = {p: fns[p] for p in paths}
        for p in paths:
            rows[p]["accuracy"] = top1(predict(models[p], x, BATCH), y)
    return {"rows": rows, "baseline": baseline, "fp32_layout": layout, "build_s": build_s, "runs": runs,
            "batches": tuple(batches), "threads": threads, "skipped": skipped}


def format_cnn_paths(results: Mapping[str, dict]) -> str:
    """Markdown: model -> cnn_paths result, one row a (model, path), one latency column a batch size."""
    batches = next(iter(results.values()))["batches"]
    head = "".join(f" batch {b}: ms | vs best fp32 |" for b in batches)
    lines = [f"| model | path | accuracy |{head} compile (s) |",
             "|---|---|---|" + "---|---|" * len(batches) + "---|"]
    for name, r in results.items():
        for path, row in r["rows"].items():
            cells = ""
            for b in batches:
                best = "**" if path == r["baseline"][b] else ""
                label = f" ({r['fp32_layout'][b]})" if path == "fp32 eager" else ""
                cells += f" {best}{row['ms'][b]:.2f}{best}{label} | {row['speedup'][b]:.2f}x |"
            comp = "—" if row["compile_s"] is None else " + ".join(f"{row['compile_s'][b]:.1f}"
                                                                     for b in batches)
            lines.append(f"| {name} | {path} | {100 * row['accuracy']:.2f} % |{cells} {comp} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# MiniLM with torchao, beside lesson 03's configurations
# ---------------------------------------------------------------------------------------


def fixed_batches(model, sentences: Sequence[str], batch_size: int = 32,
                  length: int | None = None) -> list[dict]:  # fmt: skip
    """The sentences tokenized in batches of batch_size, every batch padded to the same length (the
    longest sentence's, or `length`): one input shape, so a compiled model compiles once. Padding
    is masked, so the embeddings equal those of shorter batches up to float rounding."""
    if len(sentences) % batch_size:
        raise ValueError(f"{len(sentences)} sentences do not split into batches of {batch_size}; "
                         "pass a multiple of batch_size")
    tok = model.tokenizer
    if length is None:
        length = max(len(ids) for ids in tok(list(sentences))["input_ids"])
    return [dict(tok(list(sentences[i:i + batch_size]), padding="max_length", max_length=length,
                     truncation=True, return_tensors="pt"))
            for i in range(0, len(sentences), batch_size)]  # fmt: skip


def embed(model: Callable, batches: Sequence[dict]) -> torch.Tensor:
    """Sentence embeddings of every batch, in order (model(batch)["sentence_embedding"])."""
    with torch.no_grad():
        return torch.cat([model(dict(b))["sentence_embedding"].float() for b in batches])


def torchao_dynamic(model: nn.Module) -> nn.Module:
    """quantize_(copy, Int8DynamicActivationInt8WeightConfig()): every Linear gets int8 per-channel
    symmetric weights and int8 per-token symmetric activations, chosen at run time.
    set_inductor_config=False: quantize_ would otherwise change inductor's global settings, and the
    fp32 model compiled beside it would be compiled differently."""
    tq, _ = _torchao()
    m = copy.deepcopy(model)
    tq.quantize_(m, tq.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False))
    return m


def minilm_paths(model: nn.Module, classic: Mapping[str, nn.Module], batches: Sequence[dict],
                 timing_batches: int = 2, compile_models: bool | None = None, threads: int = 2,
                 min_run_time: float = 0.6, rounds: int = 3) -> dict:  # fmt: skip
    """MiniLM's fp32 and int8 paths, quality and speed in one run.

    classic: lesson 03's models (name -> model, e.g. torch.ao's quantize_dynamic) shown beside
    torchao's; torchao int8 is torchao_dynamic(model); with compile_models (default: when this
    machine has a C++ compiler), fp32 and torchao int8 are also torch.compile'd with freezing
    (compile seconds reported). Quality is embedding_quality against fp32 eager on all batches;
    latency is the first timing_batches batches, interleaved.
    Returns {"rows": {name: {"cosine", "nn_agreement", "ms", "speedup" vs the best fp32,
    "compile_s"}}, "baseline": the best fp32 path, "skipped": {path: why}}.
    """
    skipped = {p: why for p, why in skipped_paths().items() if p in MINILM_COMPILED}
    if compile_models is None:
        compile_models = not skipped
    elif not compile_models:
        skipped = dict.fromkeys(MINILM_COMPILED, "not compiled: compile_models=False")
    models: dict[str, Callable] = {"fp32 eager": model, **classic,
                                   "torchao int8 eager": torchao_dynamic(model)}
    compile_s: dict[str, float] = {}
    with timing.settings(threads):
        if compile_models:
            bases = {"fp32 compiled": model, "torchao int8 compiled": models["torchao int8 eager"]}
            for name, base in bases.items():
                models[name], compile_s[name] = compile_frozen(base, batches[0])
        ref = embed(model, batches)
        quality = {n: embedding_quality(ref, embed(m, batches)) for n, m in models.items()}
        timed = batches[:timing_batches]
        fns = {n: functools.partial(lambda m: [m(dict(b)) for b in timed], m) for n, m in models.items()}
        ms = timing.interleaved_ms(fns, min_run_time, rounds)
    fp32 = [n for n in models if n.startswith("fp32")]
    best = min(fp32, key=ms.get)
    rows = {n: {**quality[n], "ms": ms[n], "speedup": ms[best] / ms[n], "compile_s": compile_s.get(n)}
            for n in models}  # fmt: skip
    return {"rows": rows, "baseline": best, "models": models, "skipped": skipped,
            "timed_sentences": sum(len(b["input_ids"]) for b in timed)}


def format_minilm_paths(result: Mapping) -> str:
    lines = [f"| MiniLM path | mean cosine | NN agreement | ms ({result['timed_sentences']} sentences) "
             "| vs best fp32 | compile |",
             "|---|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        best = " (best fp32)" if name == result["baseline"] else ""
        comp = "—" if r["compile_s"] is None else f"{r['compile_s']:.1f} s"
        lines.append(f"| {name}{best} | {r['cosine']:.4f} | {100 * r['nn_agreement']:.1f} % | {r['ms']:.1f} "
                     f"| {r['speedup']:.2f}x | {comp} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The panel's choices: model x method x eager / compiled
# ---------------------------------------------------------------------------------------

METHODS = ("fp32", "classic int8 (torch.ao)", "modern int8 (torchao / PT2E)")


MODES = ("eager", "compiled")


_CNN_PATHS = {("fp32", "eager"): "fp32 eager", ("fp32", "compiled"): "fp32 compiled",
              (METHODS[1], "eager"): "torch.ao int8 eager",
              (METHODS[1], "compiled"): "torch.ao int8 compiled",
              (METHODS[2], "eager"): "PT2E int8 eager", (METHODS[2], "compiled"): "PT2E int8 compiled"}


_MINILM_PATHS = {("fp32", "eager"): "fp32 eager", ("fp32", "compiled"): "fp32 compiled",
                 (METHODS[2], "eager"): "torchao int8 eager",
                 (METHODS[2], "compiled"): "torchao int8 compiled"}


def panel_choices(cnn_results: Mapping[str, dict], minilm_result: Mapping | None = None,
                  minilm_classic: str | None = None,
                  minilm_batches: Sequence[dict] = ()) -> dict:  # fmt: skip
    """What paths_panel times: model -> {"paths": {(method, mode): path name}, "runs": {path: call},
    "quality": {path: value}, "quality_name", "unit", "notes": {(method, mode): why it is missing}}.

    cnn_results: model -> cnn_paths(...); minilm_result: minilm_paths(...), whose classic model
    minilm_classic is the "classic int8" choice, timed on minilm_batches."""
    out = {}
    for name, r in cnn_results.items():
        for b in r["batches"]:
            eager = f"fp32 eager ({r['fp32_layout'][b]})"  # the best fp32 layout, named

            def named(p, eager=eager):
                return eager if p == "fp32 eager" else p

            out[f"{name} · batch {b}"] = {
                "paths": {k: named(p) for k, p in _CNN_PATHS.items() if p in r["rows"]},
                "runs": {named(p): f for p, f in r["runs"][b].items() if not p.endswith("no freezing")},
                "baseline": named(r["baseline"][b]), "quality_name": "accuracy",
                "quality": {named(p): row["accuracy"] for p, row in r["rows"].items()},
                "unit": f"batch of {b} image" + ("s" if b > 1 else ""),
                "notes": {k: r["skipped"][p] for k, p in _CNN_PATHS.items() if p in r.get("skipped", {})}}
    if minilm_result is not None:
        skipped = minilm_result.get("skipped", {})
        paths = {k: p for k, p in _MINILM_PATHS.items() if p not in skipped}
        if minilm_classic is not None:
            paths[(METHODS[1], "eager")] = minilm_classic
        models = minilm_result["models"]
        runs = {p: functools.partial(lambda m: [m(dict(b)) for b in minilm_batches], models[p])
                for p in paths.values()}  # fmt: skip
        sentences = sum(len(b["input_ids"]) for b in minilm_batches)
        out[f"MiniLM · {sentences} sentences"] = {
            "paths": paths, "runs": runs, "baseline": minilm_result["baseline"],
            "quality": {p: row["cosine"] for p, row in minilm_result["rows"].items()},
            "quality_name": "mean cosine", "unit": f"{sentences} sentences",
            "notes": {(METHODS[1], "compiled"): "not measured: torch.compile cannot trace torch.ao's "
                                                "quantized modules and runs them eagerly (the CNNs show it)",
                      **{k: skipped[p] for k, p in _MINILM_PATHS.items() if p in skipped}},
        }  # fmt: skip
    return out
