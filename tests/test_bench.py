"""kit.timing and the lessons' speed modules: the timings behind lessons 03 and 04 return positive
times and ratios from one run, on the models they claim to time, and refuse bad settings with clear errors.

Sizes are tiny and min_run_time short: these tests check the plumbing, never a speed.
"""

import re
import time

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
from torch import nn

import qlab
from qlab.lab.kit import models, timing
from qlab.lab.lessons.l03_dynamic_quantization import speed as l03_speed
from qlab.lab.lessons.l04_static_quantization import speed as l04_speed
from qlab.lab.tools import bench

FAST = 0.01  # seconds of timed calls per configuration


def _check_ratios(r: dict):
    assert r["spread"] >= 1.0  # the largest max/min between one configuration's timing rounds
    ms, speedup, base = r["ms"], r["speedup"], r["baseline"]
    assert set(ms) == set(speedup) and base in ms
    assert all(t > 0 for t in ms.values())
    assert speedup[base] == 1.0
    for name, t in ms.items():
        assert speedup[name] == pytest.approx(ms[base] / t)


@pytest.mark.parametrize("kind", l03_speed.KINDS)
def test_time_dynamic_returns_times_and_ratios(kind):
    r = l03_speed.time_dynamic(kind, hidden=16, batch=2, seq=3, threads=1, min_run_time=FAST)
    assert {k: r[k] for k in ("kind", "hidden", "batch", "seq", "threads")} == dict(
        kind=kind, hidden=16, batch=2, seq=3, threads=1)
    assert list(r["ms"]) == ["fp32", "torch.ao int8", "qlab int8"] and r["baseline"] == "fp32"
    _check_ratios(r)


def test_time_dynamic_restores_threads_and_engine():
    threads, engine = torch.get_num_threads(), torch.backends.quantized.engine
    l03_speed.time_dynamic("linear", hidden=8, batch=1, seq=1, threads=1, min_run_time=FAST)
    assert (torch.get_num_threads(), torch.backends.quantized.engine) == (threads, engine)


def test_dynamic_variants_are_the_models_they_claim():
    v = l03_speed._dynamic_variants("lstm", 16)
    assert isinstance(v["fp32"].lstm, nn.LSTM) and v["fp32"].lstm.num_layers == 2
    assert isinstance(v["torch.ao int8"].lstm, nnqd.LSTM)
    assert isinstance(v["qlab int8"].lstm, qlab.nn.DynamicQuantLSTM)
    lin = l03_speed._dynamic_variants("linear", 8)
    assert [m.weight.shape for m in lin["fp32"] if isinstance(m, nn.Linear)] == [(32, 8), (8, 32)]
    assert all(isinstance(m, qlab.nn.DynamicQuantLinear) for m in lin["qlab int8"][::2])
    x = torch.randn(2, 3, 16)
    with torch.inference_mode():  # int8 stays close to fp32 on random weights
        ref = v["fp32"](x)
        for name in ("torch.ao int8", "qlab int8"):
            assert (v[name](x) - ref).abs().max() < 0.1, name


def test_time_dynamic_overhead_parts():
    r = l03_speed.time_dynamic_overhead(hidden=16, rows=4, threads=1, min_run_time=FAST)
    assert list(r["ms"]) == ["fp32 Linear", "dynamic Linear", "choose qparams", "quantize x", "int8 product"]
    assert all(t > 0 for t in r["ms"].values()) and (r["hidden"], r["rows"], r["threads"]) == (16, 4, 1)
    assert r["overhead_share"] == pytest.approx(
        (r["ms"]["choose qparams"] + r["ms"]["quantize x"]) / r["ms"]["dynamic Linear"])


def test_overhead_table():
    table = bench.overhead_table((8,), (1, 2), threads=1, min_run_time=FAST).splitlines()
    assert table[0].startswith("| hidden | rows | fp32 us | dynamic us |") and len(table) == 6
    assert re.fullmatch(r"\| 8 \| 2 \|( [\d.]+ \|){5} \d+% \|( UNSTABLE: .*)?", table[3])


def test_dynamic_model_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = l03_speed.dynamic_model("linear", 8), l03_speed.dynamic_model("linear", 8)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a[0].weight, b[0].weight)


@pytest.mark.parametrize("model_name", models.CNNS)
def test_time_cnn_returns_times_and_ratios(model_name):
    r = l04_speed.time_cnn(model_name, batch=2, threads=1, width=0.25, min_run_time=FAST)
    assert (r["model"], r["batch"], r["threads"], r["width"]) == (model_name, 2, 1, 0.25)
    assert list(r["ms"]) == ["fp32 contiguous", "fp32 channels_last", "torch.ao int8", "qlab int8",
                             "dynamic int8"]
    assert r["fp32_layout"] in ("contiguous", "channels_last")
    assert r["dynamic_layout"] in ("contiguous", "channels_last")
    assert r["baseline"] == f"fp32 {r['fp32_layout']}"
    assert r["ms"][r["baseline"]] == min(r["ms"]["fp32 contiguous"], r["ms"]["fp32 channels_last"])
    _check_ratios(r)


def test_cnn_variants_are_the_models_they_claim():
    v = l04_speed._random_cnn_variants("resnet", 0.25)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in v["fp32"].modules())  # folded
    assert any(isinstance(m, nnq.Conv2d) for m in v["torch.ao int8"].modules())
    assert any(isinstance(m, qlab.nn.QuantConv2d) for m in v["qlab int8"].modules())
    dyn = v["dynamic int8"]  # quantize_dynamic touches only the fc
    assert isinstance(dyn.fc, nnqd.Linear)
    assert not any(isinstance(m, (nnq.Conv2d, qlab.nn.QuantConv2d)) for m in dyn.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        ref = v["fp32"](x)
        for name in ("torch.ao int8", "qlab int8", "dynamic int8"):
            out = v[name](x)
            assert out.shape == ref.shape == (4, 10) and torch.isfinite(out).all()
            assert (out - ref).abs().max() < 0.25 * ref.abs().max() + 1e-3, name


def test_cnn_model_width_multiplies_the_channels():
    assert l04_speed.cnn_model("resnet", 2.0).conv1.out_channels == 32
    assert l04_speed.cnn_model("resnet", 0.5).fc.in_features == 32
    wide, lesson = l04_speed.cnn_model("mobilenet_v2", 2.0), l04_speed.cnn_model("mobilenet_v2", 1.0)
    assert wide.features[0][0].out_channels == 2 * lesson.features[0][0].out_channels == 32
    assert l04_speed.cnn_model("mobilenet_v2", 0.5).features[0][0].out_channels == 8


def test_interleaved_ms_and_median_ms():
    ms = timing.interleaved_ms({"a": lambda: None, "b": lambda: sum(range(100))}, FAST, rounds=2)
    assert set(ms) == {"a", "b"} and all(t > 0 for t in ms.values())
    assert timing.median_ms(lambda: None, FAST) > 0


def test_a_call_slower_than_a_round_runs_once_per_later_round():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)

    times = timing.interleaved_rounds({"slow": slow}, min_run_time=0.03, rounds=3)["slow"]
    assert len(times) == 3 and all(t >= 20 for t in times)
    assert len(calls) == 4  # round 1: warm-up + one timed call (blocked_autorange); then one call a round


def test_sweep_dynamic_and_its_table():
    sweep = l03_speed.sweep_dynamic("linear", hiddens=(8, 16), batches=(1, 2), seq=2, threads=1,
                                min_run_time=FAST)
    assert sweep["hiddens"] == [8, 16] and sweep["batches"] == [1, 2]
    assert all(len(rows) == 2 and all(len(r) == 2 for r in rows) for rows in sweep["speedup"].values())
    assert sweep["speedup"]["fp32"] == [[1.0, 1.0], [1.0, 1.0]]
    assert all(s >= 1.0 for row in sweep["spread"] for s in row)
    table = bench.sweep_table(sweep, "torch.ao int8").splitlines()
    assert table[0] == "| hidden \\ batch | 1 | 2 |" and table[1] == "|---|---|---|"
    assert re.fullmatch(r"\| 16 \| \d+\.\d\dx \| \d+\.\d\dx \|( UNSTABLE: rounds differ [\d.]+x)?", table[3])
    assert re.fullmatch(r"\(timing rounds agree within [\d.]+x; int8 on torch.ao's x86 kernels\)"
                        r"|Rows marked UNSTABLE: .*", table[-1])


def test_unstable_timings_are_flagged():
    sweep = {"hiddens": [8], "batches": [1, 2], "speedup": {"x": [[1.5, 2.0]]}, "spread": [[1.05, 2.5]]}
    table = bench.sweep_table(sweep, "x").splitlines()
    assert table[2] == "| 8 | 1.50x | 2.00x | UNSTABLE: rounds differ 2.5x"
    assert table[-1].startswith("Rows marked UNSTABLE: one configuration's timing rounds differed up to 2.5x")
    sweep["spread"] = [[1.05, 1.1]]
    assert bench.sweep_table(sweep, "x").splitlines()[-1] == (
        "(timing rounds agree within 1.10x; int8 on torch.ao's x86 kernels)")


def test_pareto_front():
    points = {"fp32": (1.0, 1.0), "int8": (2.2, 0.95), "per-channel": (1.7, 0.98),
              "slow and bad": (1.5, 0.9), "fast and bad": (2.2, 0.5)}
    assert timing.pareto_front(points) == ["fp32", "per-channel", "int8"]
    assert timing.pareto_front({"a": (1.0, 1.0), "b": (1.0, 1.0)}) == ["a", "b"]  # ties both stay
    with pytest.raises(ValueError, match=r"point 'x' must be \(speedup, quality\)"):
        timing.pareto_front({"x": (1.0, float("nan"))})


def test_cnn_table_times_the_trained_checkpoints():
    table = bench.cnn_table(batches=(2,), threads=1, min_run_time=FAST).splitlines()
    assert table[0].startswith("| model | batch | best fp32 | fp32 ms | torch.ao int8 | qlab int8 |")
    assert [row.split(" | ")[:2] for row in table[2:4]] == [["| resnet", "2"], ["| mobilenet_v2", "2"]]
    for row in table[2:4]:
        assert re.search(r"\| (contiguous|channels_last) \| [\d.]+ \| [\d.]+x \| [\d.]+x \| [\d.]+x \|", row)


def test_main_prints_the_linear_table(capsys):
    bench.main(["--quick", "--only", "linear", "--m", "8", "--k", "16", "--n", "16", "--min-run-time", "0.01",
                "--threads", "1"])
    out = capsys.readouterr().out
    assert "# qlab bench: torch threads = 1," in out
    assert "| fp32 nn.Linear |" in out and "qlab / fbgemm time:" in out


@pytest.mark.parametrize("call, message", [
    (lambda: l03_speed.time_dynamic("gru"), r"unknown kind 'gru'; allowed: 'lstm', 'linear'"),
    (lambda: l03_speed.time_dynamic(hidden=4), r"hidden=4 is out of range; hidden must be in 8\.\.4096"),
    (lambda: l03_speed.time_dynamic(hidden=5000), r"hidden must be in 8\.\.4096"),
    (lambda: l03_speed.time_dynamic(batch=0), r"batch=0 is out of range; batch must be in 1\.\.1024"),
    (lambda: l03_speed.time_dynamic(seq=0), r"seq must be in 1\.\.1024"),
    (lambda: l03_speed.time_dynamic(threads=0), r"threads=0 is out of range; threads must be in 1\.\."),
    (lambda: l03_speed.time_dynamic(threads=timing.max_threads() + 1), r"threads must be in 1\.\."),
    (lambda: l03_speed.time_dynamic(min_run_time=0), r"min_run_time must be a number of seconds > 0"),
    (lambda: l03_speed.time_dynamic_overhead(rows=0), r"rows=0 is out of range; rows must be in 1\.\."),
    (lambda: l03_speed.time_dynamic_overhead(hidden=1), r"hidden must be in 8\.\.4096"),
    (lambda: l04_speed.time_cnn("vgg"), r"unknown model_name 'vgg'; allowed: 'resnet', 'mobilenet_v2'"),
    (lambda: l04_speed.time_cnn(width=0), r"width=0 is out of range; width must be > 0"),
    (lambda: l04_speed.time_cnn(width=-1.0), r"width must be > 0"),
    (lambda: l04_speed.time_cnn(width=100), r"width must be > 0 and at most 8"),
    (lambda: l04_speed.time_cnn(batch=-3), r"batch must be in 1\.\.1024"),
    (lambda: l04_speed.time_cnn(threads=0), r"threads must be in 1\.\."),
    (lambda: l04_speed.cnn_model("resnet", 0.0), r"width must be > 0"),
])
def test_bad_settings_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("call, message", [
    (lambda: l03_speed.time_dynamic(hidden=256.0), r"hidden must be an int in 8\.\.4096, got float"),
    (lambda: l03_speed.time_dynamic(batch=True), r"batch must be an int"),
    (lambda: l04_speed.time_cnn(width="wide"), r"width must be a number > 0"),
])
def test_wrong_types_get_type_errors(call, message):
    with pytest.raises(TypeError, match=message):
        call()


# -- torch.ao's int8 convs keep the kernel of their first call: timings use fresh copies --------
class _Counted(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


def test_fresh_kernels_runs_one_copy_per_thread_count_never_the_original():
    model, x = _Counted(), torch.randn(3, 4)
    call = timing.FreshKernels(model, x)
    with timing.settings(1):
        out = call()
        call()
    with timing.settings(2):
        call()
    assert model.calls == 0 and sorted(call.copies) == [1, 2]
    assert [m.calls for m in call.copies.values()] == [2, 1]
    assert torch.equal(out, model(x))


def test_fresh_kernels_can_make_its_copies_another_way():
    made = []
    call = timing.FreshKernels(_Counted(), torch.randn(1, 4), make=lambda: made.append(1) or _Counted())
    with timing.settings(1):
        call()
        call()
    assert made == [1]


def test_time_cnn_variants_times_a_fresh_copy_of_the_torch_ao_model():
    """A model already run at another batch keeps that batch's kernel (FreshKernels' docstring):
    the timing must not inherit it, so it never runs the model it is given."""
    v = dict(l04_speed._random_cnn_variants("resnet", 0.25))
    given = v["torch.ao int8"]
    ran = []  # the hook travels with deepcopy: each call says whether it ran the given model itself
    hook = given.register_forward_hook(lambda module, *_: ran.append(module is given))
    try:
        l04_speed.time_cnn_variants(v, batch=2, threads=1, min_run_time=FAST)
    finally:
        hook.remove()
    assert ran and not any(ran)  # a copy ran, the given model never did


def test_fresh_kernels_starts_from_a_copy_already_made():
    first = _Counted()
    with timing.settings(1):
        call = timing.FreshKernels(_Counted(), torch.randn(1, 4), first=first)
        call()
    with timing.settings(2):
        call()
    assert first.calls == 1 and call.copies[1] is first and sorted(call.copies) == [1, 2]
