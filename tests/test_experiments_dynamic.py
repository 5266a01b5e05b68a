"""Lesson 03 (qlab.lab.lessons.l03_dynamic_quantization): the measurements behind the dynamic-quantization
lesson are what they say (checked by hand and against torch), leave the model as they found it, and
refuse bad input."""

import copy

import pytest
import torch
from torch import nn

import qlab
from qlab.lab.kit import minilm as kit_minilm
from qlab.lab.kit import torch_ao
from qlab.lab.lessons.l03_dynamic_quantization import numbers, speed

SHORT = ["A dog.", "Read the file.", "It works."]


@pytest.fixture(scope="module")
def minilm():
    from qlab.lab.kit.models import load_minilm

    return load_minilm().eval()


@pytest.fixture(scope="module")
def sents():
    from qlab.lab.kit.data import sentences

    return sentences(16)


# ---------------------------------------------------------------------- encode, quality, retrieval


def test_encode_is_deterministic_and_without_grad(minilm, sents):
    a, b = kit_minilm.encode(minilm, sents), kit_minilm.encode(minilm, sents, batch_size=5)
    assert a.shape == (16, 384) and a.dtype == torch.float32 and not a.requires_grad
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # float batches of another size
    assert torch.equal(a, kit_minilm.encode(minilm, sents))


def test_embedding_quality_by_hand():
    """Unit vectors at 0, 10, 50, 60, 120 and 130 degrees: neighbours 0-1, 2-3, 4-5. Moving the last
    one to 65 degrees changes its neighbour (4 -> 3) and 3's (2 -> 5); 4's is still 5."""
    def at(degrees):
        r = torch.tensor(degrees, dtype=torch.float64).deg2rad()
        return torch.stack([r.cos(), r.sin()], dim=1).float()

    ref, moved = at([0, 10, 50, 60, 120, 130]), at([0, 10, 50, 60, 120, 65])
    assert kit_minilm.nearest_neighbours(ref).tolist() == [1, 0, 3, 2, 5, 4]
    assert kit_minilm.nearest_neighbours(moved).tolist() == [1, 0, 3, 5, 5, 3]
    q = kit_minilm.embedding_quality(ref, moved)
    assert q["nn_agreement"] == pytest.approx(4 / 6)
    assert q["cosine"] == pytest.approx((5 + torch.tensor(65.0).deg2rad().cos().item()) / 6, abs=1e-6)
    assert kit_minilm.embedding_quality(ref, ref) == {"cosine": pytest.approx(1.0), "nn_agreement": 1.0}


def test_retrieval_excludes_the_query_and_sorts_by_cosine():
    e = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [1.0, 0.1]])
    top = numbers.retrieval(e, ["a", "b", "c", "d"], query=0, k=2)
    assert [s for s, _ in top] == ["d", "b"]
    assert top[0][1] == pytest.approx(1 / (1 + 0.01) ** 0.5) and top[1][1] == pytest.approx(0.8)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: kit_minilm.embedding_quality(torch.ones(3, 4), torch.ones(3, 5)), ValueError, "same shape"),
        (lambda: kit_minilm.embedding_quality(torch.ones(1, 4), torch.ones(1, 4)), ValueError, "at least 2"),
        (lambda: kit_minilm.embedding_quality([[1.0]], torch.ones(2, 4)), TypeError,
         r"float tensor \[n, dim\]"),
        (lambda: kit_minilm.embedding_quality(torch.ones(2, 4), torch.full((2, 4), float("nan"))), ValueError,
         "NaN"),
        (lambda: numbers.retrieval(torch.ones(3, 2), ["a", "b", "c"], 3), ValueError, r"query .* 0\.\.2"),
        (lambda: numbers.retrieval(torch.ones(3, 2), ["a", "b", "c"], 0, k=3), ValueError, r"k .* 1\.\.2"),
        (lambda: numbers.retrieval(torch.ones(3, 2), ["a", "b"], 0), ValueError, "one per sentence"),
        (lambda: kit_minilm.encode(nn.Linear(2, 2), ["a"]), TypeError, "sentence encoder"),
        (lambda: numbers.saturating_pair_sums(torch.ones(2), torch.ones(2, dtype=torch.int8)), TypeError,
         "x_u8 must be an integer tensor"),
        (lambda: numbers.saturating_pair_sums(torch.tensor([256, 0]), torch.tensor([1, 1])), ValueError,
         r"x_u8 must hold values in 0\.\.255"),
        (lambda: numbers.saturating_pair_sums(torch.tensor([1, 0]), torch.tensor([1, -129])), ValueError,
         r"w_s8 must hold values in -128\.\.127"),
        (lambda: numbers.saturating_pair_sums(torch.tensor([1, 0, 3]), torch.tensor([1, 1, 1])), ValueError,
         "even last dimension"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_encode_bad_sentences(minilm):
    with pytest.raises(TypeError, match="list of strings"):
        kit_minilm.encode(minilm, "one string")
    with pytest.raises(ValueError, match="non-empty list of strings"):
        kit_minilm.encode(minilm, [])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        kit_minilm.encode(minilm, ["a"], batch_size=0)


# ---------------------------------------------------------------------- activation ranges


def test_linear_input_ranges_cover_every_linear_and_find_lesson_01s_outlier(minilm, sents):
    from qlab.lab.kit.models import minilm_weights

    ranges = numbers.linear_input_ranges(minilm, sents)
    linears = {n: m for n, m in minilm.named_modules() if isinstance(m, nn.Linear)}
    assert set(ranges) == set(linears) and len(ranges) == 6 * 6 + 1  # six layers and the pooler
    for name, r in ranges.items():
        assert r["min"] <= r["max"]
        assert r["channel_absmax"].shape == (linears[name].in_features,)
        assert r["channel_absmax"].max().item() == pytest.approx(max(-r["min"], r["max"]))
    # lesson 01: output channel 99 of layer 0's FFN output weight is the outlier; the residual
    # stream carries it, so channel 99 is the largest input of the next layer's query
    w = minilm_weights()["encoder.layer.0.output.dense.weight"]
    outlier = int(w.abs().amax(1).argmax())
    largest = numbers.largest_input_channels(ranges)
    name = next(n for n in ranges if n.endswith("encoder.layer.1.attention.self.query"))
    assert outlier == 99 and largest[name][0] == outlier and largest[name][1] > 3


# ---------------------------------------------------------------------- layer_sensitivity


def toy():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def test_layer_sensitivity_quantizes_one_layer_at_a_time_and_restores():
    model, x = toy(), torch.randn(32, 8)
    ref = model(x).detach()
    state = copy.deepcopy(model.state_dict())
    seen = []

    def evaluate(m):
        seen.append([type(c) is nn.Linear for c in m.children()])  # float Linear or not
        return qlab.metrics.sqnr(ref, m(x))

    scores = numbers.layer_sensitivity(model, evaluate)
    assert list(scores) == ["0", "2"]
    assert seen == [[False, False, True], [True, False, False]]  # one layer in int8 at a time
    assert all(type(model[i]) is nn.Linear for i in (0, 2))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    # each score is that of qlab's own dynamic int8 layer (torch.ao's kernels are bit-identical)
    for i in (0, 2):
        m = copy.deepcopy(model)
        m[i] = qlab.quantize_dynamic(m[i], {nn.Linear}, per_channel=True)
        assert scores[str(i)] == pytest.approx(qlab.metrics.sqnr(ref, m(x)), abs=1e-9)


def test_layer_sensitivity_restores_the_model_when_evaluate_raises():
    model = toy()

    def evaluate(m):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        numbers.layer_sensitivity(model, evaluate)
    assert type(model[0]) is nn.Linear


def test_layer_sensitivity_bad_input():
    with pytest.raises(ValueError, match="the model has no Linear to quantize"):
        numbers.layer_sensitivity(nn.Sequential(nn.ReLU(), nn.Conv2d(1, 1, 1)), lambda m: 0.0)
    with pytest.raises(TypeError, match="evaluate must be a function"):
        numbers.layer_sensitivity(toy(), 3.0)
    with pytest.raises(TypeError, match="evaluate must return a number, got str"):
        numbers.layer_sensitivity(toy(), lambda m: "good")
    with pytest.raises(ValueError, match="layer_type must be nn.Linear or nn.LSTM"):
        numbers.layer_sensitivity(toy(), lambda m: 0.0, layer_type=nn.Conv2d)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        numbers.layer_sensitivity("model", lambda m: 0.0)


# ---------------------------------------------------------------------- qparams per call


def test_dynamic_qparams_per_call_match_torch(minilm, sents):
    name = next(n for n, _ in minilm.named_modules() if n.endswith("encoder.layer.2.output.dense"))
    layer = minilm.get_submodule(name)
    batches = [SHORT, sents[:8], sents[8:]]
    inputs = []
    handle = layer.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach().clone()))
    try:
        calls = numbers.dynamic_qparams_per_call(name, minilm, batches)
    finally:
        handle.remove()
    assert len(calls["scale"]) == len(inputs) == 3 and calls["tokens"][0] < calls["tokens"][1]
    for i, x in enumerate(inputs):
        scale, zp = torch._choose_qparams_per_tensor(x, True)
        assert calls["scale"][i] == float(torch.tensor(scale, dtype=torch.float32))
        assert calls["zero_point"][i] == zp and 0 <= zp <= 127
        assert calls["min"][i] == x.min().item() and calls["max"][i] == x.max().item()
    with torch_ao.engine():
        ao = torch.ao.quantization.quantize_dynamic(nn.Sequential(copy.deepcopy(layer)), {nn.Linear})
    assert calls["weight_scale"] == pytest.approx(ao[0].weight().q_scale(), rel=1e-7)
    assert len(set(calls["scale"])) == 3  # one grid per call


def test_dynamic_qparams_per_call_bad_input(minilm):
    with pytest.raises(ValueError, match="layer_name must name an nn.Linear"):
        numbers.dynamic_qparams_per_call("encoder", minilm, [SHORT])
    name = next(n for n, m in minilm.named_modules() if isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match="non-empty list of batches"):
        numbers.dynamic_qparams_per_call(name, minilm, [])
    with pytest.raises(TypeError, match=r"batches\[0\] must be a list of strings"):
        numbers.dynamic_qparams_per_call(name, minilm, ["a sentence"])


# ---------------------------------------------------------------------- reduce_range


def test_saturating_pair_sums_by_hand():
    x = torch.tensor([[255, 255, 1, 2, 255, 255, 127, 127]], dtype=torch.uint8)
    w = torch.tensor([[127, 127, 3, -4, -128, -128, 127, 127]], dtype=torch.int8)
    out = numbers.saturating_pair_sums(x, w)
    assert out.dtype == torch.int16
    assert out.tolist() == [[32767, 3 - 8, -32768, 32258]]  # 64770 and -65280 saturate


def test_seven_bit_activations_never_saturate():
    """Every extreme pair with x in 0..127: the exact sum fits int16, so nothing is clamped."""
    corners = torch.cartesian_prod(torch.tensor([0, 127]), torch.tensor([0, 127]),
                                   torch.tensor([-128, 127]), torch.tensor([-128, 127]))
    x, w = corners[:, :2].reshape(1, -1), corners[:, 2:].reshape(1, -1)
    exact = (x * w).reshape(-1, 2).sum(1)
    assert torch.equal(numbers.saturating_pair_sums(x, w).flatten().long(), exact)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randint(0, 128, (64, 32), generator=g), torch.randint(-128, 128, (64, 32), generator=g)
    assert torch.equal(numbers.saturating_pair_sums(x, w).long(), (x * w).reshape(64, 16, 2).sum(-1))


def test_reduce_range_demo():
    demo = numbers.reduce_range_demo()
    eight, seven = demo["8-bit activations (0..255)"], demo["7-bit activations (0..127)"]
    assert (eight["exact"], eight["int16"], eight["saturated"]) == (64770, 32767, True)
    assert (seven["exact"], seven["int16"], seven["saturated"]) == (32258, 32258, False)
    assert 255 * 127 * 2 == 64770 > 32767 >= 127 * 127 * 2 == 32258


# ---------------------------------------------------------------------- the recipe and the timings


def test_bert_value_folds(minilm):
    folds = numbers.bert_value_folds(minilm)
    assert len(folds) == 6
    for value, (dense,) in folds.items():
        assert value.endswith("attention.self.value") and dense.endswith("attention.output.dense")


def test_held_out_sentences_are_held_out(sents):
    held = kit_minilm.held_out_sentences(32, sents)
    assert len(held) == 32 and not set(held) & set(sents)
    with pytest.raises(ValueError, match="n must be an int in 1"):
        kit_minilm.held_out_sentences(0, sents)


def test_best_minilm_config(minilm, sents):
    calib = kit_minilm.held_out_sentences(32, sents)
    q = numbers.best_minilm_config(minilm, calib)
    kinds = {type(m).__module__ + "." + type(m).__name__ for m in q.modules()}
    assert "torch.ao.nn.quantized.dynamic.modules.linear.Linear" in kinds
    float_linears = [n for n, m in q.named_modules() if type(m) is nn.Linear]
    assert sorted(float_linears) == sorted(
        n for n, _ in minilm.named_modules() if n.endswith(numbers.MINILM_KEEP_FP32))
    quality = kit_minilm.embedding_quality(kit_minilm.encode(minilm, sents), kit_minilm.encode(q, sents))
    assert quality["cosine"] > 0.99
    assert all(type(m) is nn.Linear for m in minilm.modules() if isinstance(m, nn.Linear))  # untouched
    with pytest.raises(ValueError, match="matches 0 modules"):
        numbers.best_minilm_config(minilm, calib, keep_fp32=["encoder.layer.9.output.dense"])
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        numbers.best_minilm_config(minilm, calib, alpha=2.0)


def test_speed_vs_fp32_on_a_toy():
    lin = nn.Linear(64, 64)

    class Wrap(nn.Module):  # speed_vs_fp32 runs model(dict(batch)), as a SentenceTransformer
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, b):
            return self.m(b["x"])

    fp32 = Wrap(lin)
    int8 = Wrap(qlab.to_torch(qlab.quantize_dynamic(lin, {nn.Linear})))
    out = speed.speed_vs_fp32({"int8": int8}, fp32, [{"x": torch.randn(8, 64)}], min_run_time=0.01,
                          rounds=2)
    assert list(out) == ["fp32", "int8"] and out["fp32"]["speedup"] == 1.0
    assert out["int8"]["ms"] > 0 and out["int8"]["speedup_range"][0] <= out["int8"]["speedup"]
    with pytest.raises(ValueError, match="batches is empty"):
        speed.speed_vs_fp32({"int8": int8}, fp32, [])
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        speed.speed_vs_fp32({"int8": int8}, fp32, [{"x": torch.randn(8, 64)}], threads=0)


def test_format_minilm_table():
    rows = [{"configuration": "fp32", "cosine": 1.0, "nn_agreement": 1.0, "speedup": 1.0,
             "speedup_range": (1.0, 1.0)},
            {"configuration": "qlab only", "cosine": 0.99321, "nn_agreement": 0.8359, "speedup": None}]
    table = numbers.format_minilm_table(rows)
    assert "| fp32 | 1.0000 | 100.0 % | 1.00x (1.00–1.00) |" in table
    assert "| qlab only | 0.9932 | 83.6 % | — |" in table


def test_speed_vs_fp32_retakes_pairs_while_the_machine_is_busy(monkeypatch):
    """With max_other_load, a pair timed while other processes were busy is taken again."""
    loads = iter([2.0, 2.0, 0.0, 5.0, 5.0, 5.0])  # "a": quiet at the third try; "b": never
    monkeypatch.setattr(speed, "_other_processes_cores", lambda: lambda: next(loads))

    class Wrap(nn.Module):
        def forward(self, b):
            return b["x"] * 2

    out = speed.speed_vs_fp32({"a": Wrap(), "b": Wrap()}, Wrap(), [{"x": torch.ones(4)}], min_run_time=0.01,
                          rounds=1, max_other_load=0.5, max_tries=3)
    assert (out["a"]["busy_pairs"], out["b"]["busy_pairs"]) == (0, 1)
    assert next(loads, None) is None  # every reading was used: 3 tries each


def test_other_processes_cores_reads_a_number():
    read = speed._other_processes_cores()
    assert read is None or read() >= 0.0
