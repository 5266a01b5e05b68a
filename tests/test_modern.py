"""Lesson 07's helpers (qlab.lab.lessons.l07_quantize_and_pt2e) and its exercise check: torchao and
PT2E against qlab."""

import pytest
import torch
from torch import nn

import qlab
from qlab.lab.lessons.l07_quantize_and_pt2e import numbers
from qlab.lab.lessons.l07_quantize_and_pt2e.checks import check_torchao_translation

MappingType = pytest.importorskip("torchao.quantization.quant_primitives").MappingType


# ---------------------------------------------------------------------- the same math


def test_same_math_is_bit_for_bit_at_every_granularity():
    torch.manual_seed(0)
    w = torch.randn(48, 128) * torch.rand(48, 1) * 3
    x = torch.randn(16, 128) * 2 + 0.5
    rows = numbers.same_math(w, x, group=32)
    assert len(rows) == 5
    assert all(r["differ"] == 0 and r["of"] > 0 for r in rows), rows


def test_torchao_codes_notice_a_different_grid():
    """The comparison can fail: the restricted [-127, 127] grid gives other integers."""
    torch.manual_seed(1)
    w = torch.randn(8, 64)
    ours = numbers.qlab_codes(w, qlab.int8, True, 64)
    restricted = numbers.torchao_codes(w, "symmetric", (1, 64), torch.int8, -127, 127)
    assert not torch.equal(ours, restricted)


def test_quantize_stores_qlabs_per_channel_weight_codes():
    torch.manual_seed(2)
    assert numbers.quantize_weight_codes_match(nn.Linear(96, 24))


def test_qat_prepare_fake_quantizes_like_qlab():
    r = numbers.qat_same_fake_quant(numbers.mlp(width=64), torch.randn(8, 64), group=32)
    assert r["prepared"] == "FakeQuantizedLinear"
    assert r["weight_differ"] == 0 and r["input_differ"] == 0
    assert r["weight_of"] == 64 * 64 and r["input_of"] == 8 * 64


TORCH = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
# torch 2.14 made clamp's gradient 0 at a bound (it was 1); torchao 0.18 builds its QAT STE on clamp
CLAMP_STOPS_AT_BOUND = numbers.clamp_gradient([7.0], -8, 7) == [0.0]


def test_torch_clamp_stops_the_gradient_at_its_bounds():
    """The cause of the difference below: from torch 2.14, clamp's gradient is 0 at a bound itself."""
    at_bound = 0.0 if TORCH >= (2, 14) else 1.0
    if (2, 12) < TORCH < (2, 14):
        at_bound = numbers.clamp_gradient([7.0], -8, 7)[0]  # the release that changed it is not pinned here
    grads = numbers.clamp_gradient([-9.0, -8.0, -7.5, 0.0, 7.0, 7.5], -8, 7)
    assert grads == [0.0, at_bound, 1.0, 1.0, at_bound, 0.0]


def test_qat_ste_torchao_stops_the_gradient_on_the_grids_edges():
    r = numbers.qat_ste(numbers.mlp(width=128), group=32)
    n = r["weights"]
    assert n == 128 * 128
    beyond, edge, inside = r["beyond"], r["edge"], r["inside"]
    assert beyond["count"] + edge["count"] + inside["count"] == n
    assert r["qlab_vs_torch_ao_differ"] == 0          # qlab's STE is torch.ao's kernel, bit for bit
    # beyond the grid both stop the gradient; on its edge codes only torchao does; inside, neither
    assert beyond["count"] > 0 and beyond["zero_torchao"] == beyond["zero_qlab"] == beyond["count"]
    assert edge["count"] > beyond["count"]
    primitives = pytest.importorskip("torchao.quantization.quant_primitives")
    restored = hasattr(primitives, "_ClampSTE")  # torchao after 0.18 passes the gradient at the ends again
    expected = edge["count"] if CLAMP_STOPS_AT_BOUND and not restored else 0
    assert edge["zero_torchao"] == expected and edge["zero_qlab"] == 0
    assert inside["zero_torchao"] == inside["zero_qlab"] == 0
    # inside, torchao's gradient is g * (1/s) * s: qlab's g up to float rounding
    assert 0 <= inside["max_rel_diff"] < 1e-6 and inside["bit_equal"] > inside["count"] // 2
    # a group's largest weight sits at +-7.5 steps: +7.5 rounds (to even) to 8, beyond; -7.5 to -8, the edge
    assert beyond["codes"] == [8] and set(edge["codes"]) == {-8, 7}


def test_qat_ste_rejects_a_group_that_does_not_divide_the_rows():
    with pytest.raises(ValueError, match="group"):
        numbers.qat_ste(numbers.mlp(width=48), group=32)


# ---------------------------------------------------------------------- the map


def test_try_configs_reports_errors_and_measures_the_rest():
    m, x = numbers.mlp(width=64), torch.randn(8, 64)
    rows = numbers.try_configs(m, x, ["Int8DynamicActivationInt8WeightConfig", "Int4WeightOnlyConfig"],
                              threads=1, min_run_time=0.03, rounds=1)
    by = {r["config"]: r for r in rows}
    assert by["fp32"]["speedup"] == 1.0
    ok = by["Int8DynamicActivationInt8WeightConfig"]
    assert ok["ok"] and 0 < ok["rel_error"] < 0.05 and ok["ms"] > 0
    int4 = by["Int4WeightOnlyConfig"]
    if not int4["ok"]:  # fails on a CPU without its kernel package: the error is kept, first line
        assert int4["error"] and "\n" not in int4["error"]


def test_try_configs_rejects_an_unknown_config():
    with pytest.raises(ValueError, match="known: Int8DynamicActivationInt8WeightConfig"):
        numbers.try_configs(numbers.mlp(width=16), torch.randn(2, 16), ["Int3Config"])


# ---------------------------------------------------------------------- PT2E


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def test_static_batch_export_fails_on_a_smaller_calibration_batch():
    torch.manual_seed(0)
    error = numbers.static_batch_failure(TinyCNN().eval(), torch.randn(12, 3, 8, 8), batch_size=8)
    assert "Guard failed" in error


def test_pt2e_int8_runs_at_any_batch_and_stays_close_to_fp32():
    torch.manual_seed(0)
    model, calib = TinyCNN().eval(), torch.randn(20, 3, 8, 8)
    q = numbers.pt2e_int8(model, calib, batch_size=8)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        ref, got = model(x), q(x)
    assert got.shape == (5, 10)
    assert (got - ref).abs().max() < 0.1 * ref.abs().max()


def test_predict_pads_the_last_batch_and_drops_its_extra_rows():
    seen = []

    def model(b):
        seen.append(len(b))
        return b.flatten(1)[:, :3]

    x = torch.arange(7 * 12, dtype=torch.float32).reshape(7, 3, 2, 2)
    out = numbers.predict(model, x, batch_size=4)
    assert seen == [4, 4] and torch.equal(out, x.flatten(1)[:, :3])


def test_fixed_batches_wants_whole_batches():
    with pytest.raises(ValueError, match="multiple of batch_size"):
        numbers.fixed_batches(None, ["a"] * 5, batch_size=4)


# ---------------------------------------------------------------------- the exercise's check


def _good(obs, shape):
    return {"mapping_type": MappingType.SYMMETRIC if obs.symmetric else MappingType.ASYMMETRIC,
            "block_size": (1, shape[1]) if obs.axis == 0 else tuple(shape),
            "target_dtype": torch.int8 if obs.qdtype.signed else torch.uint8,
            "quant_min": obs.qparams().qmin, "quant_max": obs.qparams().qmax}


def _wrong(**change):
    def fn(obs, shape):
        spec = _good(obs, shape)
        for key, make in change.items():
            spec[key] = make(obs, shape, spec)
        return spec

    return fn


def test_check_torchao_translation_passes_a_right_answer(capsys):
    assert check_torchao_translation(_good) is True
    assert "✅" in capsys.readouterr().out


def test_check_torchao_translation_accepts_mapping_names_as_strings():
    def by_name(obs, shape):
        return {**_good(obs, shape), "mapping_type": "symmetric" if obs.symmetric else "asymmetric"}

    assert check_torchao_translation(by_name) is True


@pytest.mark.parametrize("fn, hint", [
    (_wrong(mapping_type=lambda o, s, d: MappingType.ASYMMETRIC), "MappingType.SYMMETRIC"),
    (_wrong(block_size=lambda o, s, d: (s[0], 1) if o.axis == 0 else d["block_size"]), "input"),
    (_wrong(block_size=lambda o, s, d: (1, s[1])), "one block"),
    (_wrong(quant_min=lambda o, s, d: -d["quant_max"] if o.qdtype.signed else d["quant_min"]), "restricted"),
    (_wrong(quant_max=lambda o, s, d: 255 if not o.qdtype.signed else d["quant_max"]), "reduce_range"),
    (_wrong(quant_min=lambda o, s, d: -128 if o.qdtype.signed else 0,
            quant_max=lambda o, s, d: 127 if o.qdtype.signed else d["quant_max"]), "[-8, 7]"),
    (_wrong(target_dtype=lambda o, s, d: torch.int8), "target_dtype"),
], ids=["mapping", "column", "per-tensor-as-rows", "restricted", "reduce-range", "int4-grid", "dtype"])
def test_check_torchao_translation_hints_each_typical_mistake(fn, hint, capsys):
    assert check_torchao_translation(fn) is False
    out = capsys.readouterr().out
    assert "❌" in out and "Hint:" in out
    assert any(h in out for h in hint.split("|")) or pytest.fail(out)


def test_check_torchao_translation_survives_a_stub_and_a_wrong_type(capsys):
    def stub(obs, shape):
        raise NotImplementedError

    assert check_torchao_translation(stub) is False
    assert "replace the `raise`" in capsys.readouterr().out
    assert check_torchao_translation(lambda o, s: (1, 2)) is False
    assert "return a dict with the keys" in capsys.readouterr().out


# ---------------------------------------------------------------------- the panel


def _choices():
    """Two fake models whose paths are cheap calls: the panel's wiring, not real timings."""
    def work(n):
        return lambda: torch.randn(n, n) @ torch.randn(n, n)

    paths = {("fp32", "eager"): "fp32 eager", ("fp32", "compiled"): "fp32 compiled",
             (numbers.METHODS[2], "compiled"): "int8 compiled"}
    runs = {"fp32 eager": work(64), "fp32 compiled": work(48), "int8 compiled": work(16)}
    one = {"paths": paths, "runs": runs,
           "quality": {"fp32 eager": 1.0, "fp32 compiled": 1.0, "int8 compiled": 0.99},
           "quality_name": "accuracy", "unit": "batch of 64 images", "notes": {}, "baseline": "fp32 eager"}
    two = {**one, "quality_name": "mean cosine", "unit": "64 sentences",
           "notes": {(numbers.METHODS[1], "compiled"): "not measured: a reason"}}
    return {"A": one, "B": two}


def test_paths_panel_reads_out_the_chosen_path():
    from qlab.lab.lessons.l07_quantize_and_pt2e.panels import paths_panel

    panel = paths_panel(_choices(), model="A", min_run_time=0.02)
    panel.figure()
    text = panel.readout.value
    assert "A · modern int8 (torchao / PT2E) · compiled" in text
    assert "latency" in text and "accuracy 99.00 %" in text and "the best fp32" in text
    assert panel.result["marked"] == "int8 compiled"
    assert set(panel.result["ms"]) == {"fp32 eager", "fp32 compiled", "int8 compiled"}


def test_paths_panel_says_why_a_path_is_missing():
    from qlab.lab.lessons.l07_quantize_and_pt2e.panels import PathsPanel

    panel = PathsPanel(_choices(), model="B", method=numbers.METHODS[1], mode="compiled", min_run_time=0.02)
    panel.figure()
    assert "not measured: a reason" in panel.readout.value
    assert panel.result["marked"] is None


@pytest.mark.parametrize("kwargs, match", [
    ({"model": "C"}, "model must be one of"),
    ({"method": "int3"}, "method must be one of"),
    ({"mode": "jit"}, "mode must be one of"),
    ({"threads": 0}, "threads"),
])
def test_paths_panel_rejects_bad_settings(kwargs, match):
    from qlab.lab.lessons.l07_quantize_and_pt2e.panels import PathsPanel

    with pytest.raises((ValueError, TypeError), match=match):
        PathsPanel(_choices(), **kwargs)


def test_paths_panel_needs_choices():
    from qlab.lab.lessons.l07_quantize_and_pt2e.panels import PathsPanel

    with pytest.raises(ValueError, match="panel_choices"):
        PathsPanel({})
