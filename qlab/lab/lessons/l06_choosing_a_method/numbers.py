"""Lesson 06: choosing a method, measured, and the five-step workflow as code.

    method_rows(name)            one row per method that applies to a lesson model, measured now
    decide(rows, tolerance)      the workflow over measured rows: the chosen method and why
    check_rows(rows)             method -> row, if the rows have what decide reads (else a clear error)
    choose(model, data, ...)     the workflow on any float classifier: fp32, dynamic, static, (QAT)
    report_rows(names) / report_markdown(rows)     `qlab report`: the table for this machine
    report_rows_from(rows)       method_rows' rows in the report's columns
    check_models(names)          the model names `qlab report` accepts

The workflow (the seed's five steps): 1. train fp32; 2. try PTQ, dynamic then static; 3. evaluate
(quality and speed); 4. if every PTQ model loses more than the tolerance, QAT with a low learning
rate; 5. deploy the fastest int8 model within the tolerance.

A row: {"model", "method", "quality", "metric" (what quality is), "loss" (fp32's quality minus
this one's, in the metric's units; for bits per char, this one minus fp32's: higher is worse),
"size_bytes", "speedup" (best fp32 time / this time, on torch's int8 kernels), "baseline" (the best
fp32, named), "data" (what producing it needs), "seconds" (time to produce it), "note"}.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from numbers import Real

import torch
from torch import nn
from tqdm.auto import tqdm

import qlab
from qlab.lab.kit import checkpoints, data, minilm, models, timing
from qlab.lab.kit.check import check_choice
from qlab.lab.kit.models import CNNS, load_minilm
from qlab.lab.kit.torch_ao import ENGINE
from qlab.lab.kit.train import accuracy, bits_per_char
from qlab.lab.lessons.l03_dynamic_quantization import numbers as l03_numbers
from qlab.lab.lessons.l03_dynamic_quantization import speed as l03_speed
from qlab.lab.lessons.l04_static_quantization.numbers import (
    calibrate_shifted as calibrate_shifted,  # re-exported for the notebook
)
from qlab.lab.lessons.l05_quantization_aware_training import numbers as l05_numbers
from qlab.lab.lessons.l05_quantization_aware_training.numbers import (
    ptq_accuracy as ptq_accuracy,  # re-exported for the notebook
)

MODELS = (*CNNS, "charlstm", "minilm")


METHODS = ("fp32", "dynamic", "static", "QAT 8-bit", "QAT 4-bit")


CALIB_IMAGES = 128


GAIN = 1.1  # an int8 model must be more than 1.1x faster or 1.1x smaller than fp32 to be worth deploying


def check_models(names) -> list[str]:
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    unknown = [n for n in names if n not in MODELS]
    if not names or unknown:
        raise ValueError(f"unknown model name(s) {unknown or names!r}; choose from {', '.join(MODELS)}")
    return names


def _timed(build: Callable) -> tuple[nn.Module, float]:
    start = time.perf_counter()
    model = build()
    return model, time.perf_counter() - start


def _speedups(models: dict[str, nn.Module], x: torch.Tensor, channels_last: bool, threads: int,
              min_run_time: float) -> tuple[dict[str, float], str]:
    """best fp32 time / time for each model (torch's kernels), and the best fp32's name."""
    float_convs = {"fp32", "dynamic"}  # models whose convolutions run in float: both layouts, the faster
    fns = {}
    x_cl = x.contiguous(memory_format=torch.channels_last) if channels_last else None
    for name, m in models.items():
        fns[f"{name} contiguous" if name in float_convs else name] = functools.partial(m, x)
        if channels_last and name in float_convs:
            m_cl = copy.deepcopy(m).to(memory_format=torch.channels_last)
            fns[f"{name} channels_last"] = functools.partial(m_cl, x_cl)
    with timing.settings(threads), torch.no_grad():
        ms = timing.interleaved_ms(fns, min_run_time)
    best = {name: min((k for k in ms if k == name or k.startswith(name + " ")), key=ms.get)
            for name in models}
    baseline = best["fp32"]
    return {name: ms[baseline] / ms[best[name]] for name in models}, baseline


def _cnn_rows(name: str, threads: int, min_run_time: float, batch: int) -> list[dict]:
    x_train, _ = data.digits_tensors("train")
    x, y = data.digits_tensors("test")
    fp32 = checkpoints.load_model(name)
    fused = copy.deepcopy(fp32)
    fused.fuse_model()

    def static():
        prepared = qlab.prepare(fused, qlab.get_default_qconfig(ENGINE))
        with torch.no_grad():
            for b in x_train[:CALIB_IMAGES].split(64):
                prepared(b)
        return qlab.convert(prepared)

    built = {"fp32": (fused, 0.0),
             "dynamic": _timed(lambda: qlab.quantize_dynamic(fused, {nn.Linear})),
             "static": _timed(static)}
    runs = l05_numbers.recorded_runs()
    for bits in (8, 4):  # lesson 05's recorded runs: their time is the recorded training time
        seconds = runs[l05_numbers.run_name(name, bits, 8)]["train_seconds"]
        built[f"QAT {bits}-bit"] = (l05_numbers.load_int8(name, bits, 8), seconds)
    data_needed = {"fp32": "the training set (trained once)", "dynamic": "none",
                   "static": f"{CALIB_IMAGES} unlabelled images",
                   "QAT 8-bit": "the labelled training set (1,078 images), 2 epochs",
                   "QAT 4-bit": "the labelled training set (1,078 images), 2 epochs"}
    with timing.settings(threads):
        fast = {k: m if k == "fp32" else qlab.to_torch(m) for k, (m, _) in built.items()}
        images = torch.randn(batch, *models.IMAGE, generator=torch.Generator().manual_seed(1))
        speed, baseline = _speedups(fast, images, True, threads, min_run_time)
        acc = {k: accuracy(m, x, y) for k, m in fast.items()}
    rows = []
    for method, (model, seconds) in built.items():
        rows.append({"model": name, "method": method, "quality": acc[method], "metric": "test accuracy",
                     "loss": acc["fp32"] - acc[method], "size_bytes": qlab.metrics.model_size_bytes(model),
                     "speedup": speed[method], "baseline": f"{baseline}, batch {batch}",
                     "data": data_needed[method], "seconds": seconds,
                     "note": "QAT time recorded by make checkpoints" if method.startswith("QAT") else ""})
    return rows


def _charlstm_rows(threads: int, min_run_time: float) -> list[dict]:

    fp32 = checkpoints.load_model("charlstm")
    dynamic, seconds = _timed(lambda: qlab.quantize_dynamic(fp32, {nn.LSTM, nn.Linear}))
    test_ids = data.text_splits()["test"]
    x, _ = next(data.lm_batches(data.text_splits()["val"], batch_size=32, seq_len=128))
    with timing.settings(threads):
        fast = {"fp32": fp32, "dynamic": qlab.to_torch(dynamic)}
        speed, baseline = _speedups(fast, x, False, threads, min_run_time)
        bpc = {k: bits_per_char(m, test_ids) for k, m in fast.items()}
    return [{"model": "charlstm", "method": k, "quality": bpc[k], "metric": "bits per char (lower is better)",
             "loss": bpc[k] - bpc["fp32"], "size_bytes": qlab.metrics.model_size_bytes(m),
             "speedup": speed[k], "baseline": f"{baseline}, batch 32 x 128 chars",
             "data": "none" if k == "dynamic" else "the training text (trained once)",
             "seconds": 0.0 if k == "fp32" else seconds,
             "note": "" if k == "fp32" else "static and QAT of an LSTM are not built in qlab"}
            for k, m in (("fp32", fp32), ("dynamic", dynamic))]


def _minilm_rows(threads: int, min_run_time: float, n_sentences: int = 64) -> list[dict]:

    fp32 = load_minilm()
    sentences = data.sentences(n_sentences)
    calibration = minilm.held_out_sentences(64, sentences)
    reference = minilm.encode(fp32, sentences)
    built = {"dynamic": _timed(lambda: qlab.quantize_dynamic(fp32, {nn.Linear})),
             "dynamic + SmoothQuant": _timed(lambda: l03_numbers.best_minilm_config(fp32, calibration,
                                                                                      to_torch=False))}
    fast = {"fp32": fp32, **{k: qlab.to_torch(m) for k, (m, _) in built.items()}}
    batches = minilm.minilm_batches(fp32, sentences)
    speed = l03_speed.speed_vs_fp32({k: m for k, m in fast.items() if k != "fp32"}, fp32, batches,
                                      threads=threads, rounds=3, min_run_time=min_run_time)
    rows = [{"model": "minilm", "method": "fp32", "quality": 1.0, "metric": "mean cosine to fp32",
             "loss": 0.0, "size_bytes": qlab.metrics.model_size_bytes(fp32), "speedup": 1.0,
             "baseline": "fp32, batches of 32 sentences", "data": "(pretrained)", "seconds": 0.0, "note": ""}]
    for k, (m, seconds) in built.items():
        cosine = minilm.embedding_quality(reference, minilm.encode(fast[k], sentences))["cosine"]
        rows.append({"model": "minilm", "method": k, "quality": cosine, "metric": "mean cosine to fp32",
                     "loss": 1.0 - cosine, "size_bytes": qlab.metrics.model_size_bytes(m),
                     "speedup": speed[k]["speedup"], "baseline": "fp32, batches of 32 sentences",
                     "data": "none" if k == "dynamic" else "64 unlabelled sentences (SmoothQuant)",
                     "seconds": seconds,
                     "note": "" if k == "dynamic" else "SmoothQuant α 0.8, 3 FFN-down Linears fp32"})
    return rows


def method_rows(name: str, threads: int = 2, min_run_time: float = 0.2, batch: int = 64) -> list[dict]:
    """Every method that applies to lesson model `name`, measured now (see the module doc)."""
    (name,) = check_models([name])
    if name in CNNS:
        return _cnn_rows(name, threads, min_run_time, batch)
    if name == "charlstm":
        return _charlstm_rows(threads, min_run_time)
    return _minilm_rows(threads, min_run_time)


# ---------------------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------------------


def _check_tolerance(tolerance) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(f"tolerance is the largest quality loss you accept (0 or more, in the metric's "
                         f"units, e.g. 0.01 = one accuracy point), got {tolerance!r}")
    return float(tolerance)


#: the methods decide() knows, in the order the workflow tries them
DECIDE_METHODS = ("fp32", "dynamic", "dynamic + SmoothQuant", "static", "QAT 8-bit", "QAT 4-bit")


#: the keys decide() reads: in every row, and in the fp32 row (the baseline) besides
ROW_KEYS = ("method", "loss", "speedup", "size_bytes")
FP32_KEYS = ("quality", "metric", "baseline")


def _check_row(i: int, row) -> str:
    """rows[i]'s method, if the row has what decide() reads."""
    if not isinstance(row, dict):
        raise TypeError(f"rows[{i}] must be a dict (a row of numbers.method_rows), got {type(row).__name__}")
    if "method" not in row:
        raise ValueError(f"rows[{i}] has no key 'method'; each row needs {ROW_KEYS}")
    method = check_choice(f"rows[{i}]['method']", row["method"], DECIDE_METHODS,
                          what=f"one of {', '.join(map(repr, DECIDE_METHODS))}")
    needed = ROW_KEYS + (FP32_KEYS if method == "fp32" else ())
    missing = [k for k in needed if k not in row]
    if missing:
        raise ValueError(f"rows[{i}] (method {method!r}) has no key {missing[0]!r}; each row needs "
                         f"{ROW_KEYS}, and the fp32 row {FP32_KEYS} besides")
    for key in ("loss", "speedup", "size_bytes") + (("quality",) if method == "fp32" else ()):
        if isinstance(row[key], bool) or not isinstance(row[key], Real):
            raise TypeError(f"rows[{i}] (method {method!r}): {key!r} must be a number, "
                            f"got {type(row[key]).__name__}")
    return method


def check_rows(rows) -> dict[str, dict]:
    """method -> row, if rows are one model's rows as decide() reads them (numbers.method_rows)."""
    if isinstance(rows, (str, dict)) or not isinstance(rows, Sequence):
        raise TypeError("rows must be a list of one model's row dicts (numbers.method_rows(name)), "
                        f"got {type(rows).__name__}")
    by = {}
    for i, row in enumerate(rows):
        method = _check_row(i, row)
        if method in by:
            raise ValueError(f"rows[{i}] repeats method {method!r}: one row per method")
        by[method] = row
    if "fp32" not in by:
        raise ValueError("rows must include the fp32 row (the baseline)")
    return by


def decide(rows: Sequence[dict], tolerance: float) -> dict:
    """The workflow over one model's measured rows: PTQ (dynamic, then static) first; QAT only if
    no PTQ row is acceptable; among the acceptable rows of the first stage that has any, the
    fastest. Acceptable: a loss within the tolerance, and a gain (more than GAIN times faster
    than the best fp32, or more than GAIN times smaller). Returns {"chosen" (a row, or None), "trail"}."""
    tolerance = _check_tolerance(tolerance)
    by = check_rows(rows)
    fp32 = by["fp32"]
    trail = [f"1. fp32: {fp32['metric']} {fp32['quality']:.4g}, the baseline ({fp32['baseline']})"]

    def verdict(r):
        within = r["loss"] <= tolerance
        gain = r["speedup"] > GAIN or r["size_bytes"] < fp32["size_bytes"] / GAIN
        line = (f"{r['method']}: loss {r['loss']:+.4g} ({'within' if within else 'beyond'} the tolerance "
                f"{tolerance:g}), {r['speedup']:.2f}x the best fp32, {r['size_bytes'] / 1e6:.2f} MB")
        if within and not gain:
            line += " -- but it gains neither speed nor size: keep looking"
        return within and gain, line

    stages = (("2-3. PTQ", [m for m in ("dynamic", "dynamic + SmoothQuant", "static") if m in by]),
              ("4. QAT", [m for m in ("QAT 8-bit", "QAT 4-bit") if m in by]))
    for stage, methods in stages:
        if not methods:
            trail.append(f"{stage}: nothing to try for this model")
            continue
        accepted = []
        for m in methods:
            ok, line = verdict(by[m])
            trail.append(f"{stage} {line}")
            if ok:
                accepted.append(by[m])
        if accepted:
            best = max(accepted, key=lambda r: r["speedup"])
            faster = best["speedup"] > GAIN
            trail.append(f"5. deploy {best['method']}: the fastest within the tolerance"
                         + ("" if faster else " (no faster than fp32 here, but smaller)"))
            return {"chosen": best, "trail": trail}
        if stage.startswith("2"):
            trail.append("   every PTQ model loses more than the tolerance: go on to QAT, at a low "
                         "learning rate")
    trail.append("5. no int8 model is within the tolerance and gains speed or size: keep fp32, or raise "
                 "the tolerance")
    return {"chosen": None, "trail": trail}


def choose(model: nn.Module, data_: tuple[torch.Tensor, torch.Tensor], tolerance: float = 0.01,
           calib: torch.Tensor | None = None, methods: Sequence[str] = ("dynamic", "static"),
           qat_model: nn.Module | None = None, threads: int = 2, min_run_time: float = 0.2,
           verbose: bool = True) -> dict:
    """The five steps on any float image classifier (eval mode), measured now: fp32 (batch norms
    folded by its fuse_model(), if it has one), then dynamic (qlab.quantize_dynamic of that) and
    static (fuse_model, prepare, calibrate on `calib`, convert), and a QAT int8 model if you
    trained one (qat_model); evaluated on data_ = (x, y) (accuracy on all of it, speed on its
    first 64 images); decide(). Prints the decision trail; returns decide()'s dict plus "rows"."""
    tolerance = _check_tolerance(tolerance)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a float nn.Module, got {type(model).__name__}")
    x, y = _check_data(data_)
    unknown = [m for m in methods if m not in ("dynamic", "static")]
    if isinstance(methods, str) or unknown:
        raise ValueError(f"methods must be a list of 'dynamic' and/or 'static', got {methods!r}")
    if "static" in methods:
        if not hasattr(model, "fuse_model"):
            raise ValueError("static quantization needs the model to fuse conv + bn first: give it a "
                             "fuse_model() method (as torchvision's quantizable models), or pass "
                             "methods=('dynamic',)")
        if calib is None or not isinstance(calib, torch.Tensor) or len(calib) == 0:
            raise ValueError("static quantization needs calibration images: pass calib, e.g. 128 training "
                             "images (not the evaluation data)")
    baseline_model = copy.deepcopy(model).eval()
    if hasattr(baseline_model, "fuse_model"):  # the best fp32 has its batch norms folded, as int8 does
        baseline_model.fuse_model()
    built = {"fp32": (baseline_model, 0.0)}
    if "dynamic" in methods:
        built["dynamic"] = _timed(lambda: qlab.quantize_dynamic(baseline_model, {nn.Linear}))
    if "static" in methods:
        def static():
            fused = copy.deepcopy(model).eval()
            fused.fuse_model()
            prepared = qlab.prepare(fused, qlab.get_default_qconfig(ENGINE))
            with torch.no_grad():
                for b in calib.split(64):
                    prepared(b)
            return qlab.convert(prepared)
        built["static"] = _timed(static)
    if qat_model is not None:
        built["QAT 8-bit"] = (qat_model, float("nan"))
    with timing.settings(threads):
        fast = {k: m if k == "fp32" else qlab.to_torch(m) for k, (m, _) in built.items()}
        speed, baseline = _speedups(fast, x[:64], True, threads, min_run_time)
        acc = {k: accuracy(m, x, y) for k, m in fast.items()}
    rows = [{"model": type(model).__name__, "method": k, "quality": acc[k], "metric": "accuracy",
             "loss": acc["fp32"] - acc[k], "size_bytes": qlab.metrics.model_size_bytes(m),
             "speedup": speed[k], "baseline": baseline, "data": "", "seconds": s, "note": ""}
            for k, (m, s) in built.items()]
    result = {**decide(rows, tolerance), "rows": rows}
    if verbose:
        print("\n".join(result["trail"]))
    return result


def _check_data(data_) -> tuple[torch.Tensor, torch.Tensor]:
    if (not isinstance(data_, (tuple, list)) or len(data_) != 2
            or not all(isinstance(t, torch.Tensor) for t in data_)):
        raise ValueError("data must be (x, y): a batch of evaluation inputs and their labels")
    x, y = data_
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"data must hold at least one example and one label per input, got {len(x)} inputs "
                         f"and {len(y)} labels")
    return x, y


# ---------------------------------------------------------------------------------------
# qlab report
# ---------------------------------------------------------------------------------------

COLUMNS = ("model", "method", "quality", "metric", "loss", "size_mb", "speedup", "baseline", "data",
           "seconds", "note")


def report_rows(names: Sequence[str] | str = ("resnet", "mobilenet_v2", "charlstm"), threads: int = 2,
                min_run_time: float = 0.2, progress: bool = True) -> list[dict]:
    """method_rows for each model, with a progress bar; sizes in MB; rounded for printing."""
    names = check_models(names)
    rows = []
    for name in tqdm(names, desc="qlab report", disable=not progress):
        rows += report_rows_from(method_rows(name, threads, min_run_time))
    return rows


def report_markdown(rows: Sequence[dict]) -> str:
    """The rows as a markdown table (COLUMNS)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def report_rows_from(rows: Sequence[dict]) -> list[dict]:
    """method_rows' rows in the report's columns (sizes in MB, rounded)."""
    return [{"model": r["model"], "method": r["method"], "quality": round(r["quality"], 4),
             "metric": r["metric"], "loss": round(r["loss"], 4), "size_mb": round(r["size_bytes"] / 1e6, 3),
             "speedup": round(r["speedup"], 2), "baseline": r["baseline"], "data": r["data"],
             "seconds": round(r["seconds"], 2), "note": r["note"]} for r in rows]
