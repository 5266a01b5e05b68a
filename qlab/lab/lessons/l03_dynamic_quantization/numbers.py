"""Lesson 03 (dynamic quantization, MiniLM): the measurements, numbers in, numbers out, no drawing.

    retrieval(embeddings, sentences, query)   a query's top matches, to read
    linear_input_ranges(model, sentences)     min, max and per-channel max|x| of every Linear input
    largest_input_channels(ranges)            each Linear's outlier channel and how far it sticks out
    layer_sensitivity(model, evaluate)        quality with one Linear at a time in dynamic int8
    dynamic_qparams_per_call(name, model, batches)  the activation grid chosen on each call
    saturating_pair_sums(x_u8, w_s8), reduce_range_demo()   why x86 uses 7-bit activations
    bert_value_folds, best_minilm_config      SmoothQuant + per-channel int8, sensitive layers fp32
    minilm_table, format_minilm_table         every configuration, measured

Re-exported for the notebook: encode, embedding_quality, minilm_batches, held_out_sentences (from
qlab.lab.kit.minilm) and speed_vs_fp32 (from .speed: the notebook names its result `speed`)."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

import qlab
from qlab import smoothquant
from qlab.lab.kit.check import check_int
from qlab.lab.kit.data import sentences
from qlab.lab.kit.minilm import (
    check_embeddings,
    check_model,
    check_sentences,
)
from qlab.lab.kit.minilm import embedding_quality as embedding_quality  # re-exported for the notebook
from qlab.lab.kit.minilm import encode as encode  # re-exported for the notebook
from qlab.lab.kit.minilm import held_out_sentences as held_out_sentences  # re-exported for the notebook
from qlab.lab.kit.minilm import minilm_batches as minilm_batches  # re-exported for the notebook
from qlab.lab.kit.models import load_minilm
from qlab.lab.kit.torch_ao import engine
from qlab.nn.dynamic import dynamic_qparams
from qlab.observers import MinMaxObserver

from .speed import speed_vs_fp32 as speed_vs_fp32  # re-exported: the notebook's result is named `speed`


def retrieval(embeddings: torch.Tensor, sentences: Sequence[str], query: int,
              k: int = 3) -> list[tuple[str, float]]:  # fmt: skip
    """The k sentences closest to sentences[query] (itself excluded), as (sentence, cosine), best first."""
    e = torch.nn.functional.normalize(check_embeddings(embeddings, "embeddings"), dim=1)
    sentences = check_sentences(sentences)
    n = e.shape[0]
    if len(sentences) != n:
        raise ValueError(f"embeddings has {n} rows but sentences has {len(sentences)}; one per sentence")
    check_int("query", query, -n, n - 1, what=f"an index into sentences, in 0..{n - 1}")
    check_int("k", k, 1, n - 1, what=f"an int in 1..{n - 1} (the other sentences)")
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
    check_model(model)
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
    """name -> (channel j with the largest max|x_j|, max|x_j| / median_j max|x_j|: SmoothQuant's
    outlier_ratio)."""
    return {name: (int(r["channel_absmax"].argmax()), smoothquant.outlier_ratio(r["channel_absmax"]))
            for name, r in ranges.items()}


def _dynamic_int8(module: nn.Module, per_channel: bool, reduce_range: bool) -> nn.Module:
    """module in dynamic int8: qlab's, on torch.ao's kernels when they can run it (reduce_range).

    The two are bit-identical (tests/test_nn_dynamic.py); torch.ao's are just faster."""
    q = qlab.quantize_dynamic(module, {type(module)}, per_channel=per_channel, reduce_range=reduce_range)
    if reduce_range:
        with engine():
            q = qlab.to_torch(q)
    return q


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
        model.set_submodule(name, _dynamic_int8(original, per_channel, reduce_range))
        try:
            with engine():
                score = evaluate(model)
        finally:
            model.set_submodule(name, original)
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
    check_model(model)
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
            batch = check_sentences(batch, f"batches[{i}]")
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
    check_model(model)
    sentences = check_sentences(sentences)
    if isinstance(keep_fp32, numbers.Integral) and not isinstance(keep_fp32, bool):
        linears = sum(isinstance(m, nn.Linear) for m in model.modules())
        keep_fp32 = check_int("keep_fp32", keep_fp32, 0, linears,
                              what=f"a count of Linears from 0 to {linears}, or a list of names")
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
        with engine():
            q = qlab.to_torch(q)
    return q


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
    model = load_minilm() if model is None else model
    check_model(model)
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
            with engine():
                q = qlab.to_torch(q)
        return q

    with engine():
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
