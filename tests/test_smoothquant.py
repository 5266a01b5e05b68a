"""qlab.smoothquant: s_j = max|X_j|^α / max|W_:,j|^(1-α) keeps every float output and flattens
the activations' channel maxima; folds where the producer feeds only the smoothed Linears;
clear errors for α outside [0, 1], no calibration data, bad folds."""

import math

import pytest
import torch
from torch import nn

import qlab
from qlab import smoothquant as sq


class Block(nn.Module):
    """A pre-LN transformer-like block: ln feeds only q, k, v (foldable); the MLP's second Linear
    reads a GELU output (not foldable)."""

    def __init__(self, d=16, h=48):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        y = self.ln(x)
        att = torch.softmax(self.q(y) @ self.k(y).transpose(-1, -2) / 4, dim=-1) @ self.v(y)
        x = x + att
        return x + self.down(torch.nn.functional.gelu(self.up(x)))


def outlier_batches(d=16, n=4, seed=0):
    """Inputs whose channels 3 and 11 are 30x larger than the rest, as BERT's outlier dims."""
    g = torch.Generator().manual_seed(seed)
    gain = torch.ones(d)
    gain[[3, 11]] = 30.0
    return [torch.randn(2, 10, d, generator=g) * gain for _ in range(n)]


@pytest.fixture
def block():
    torch.manual_seed(0)
    b = Block().eval()
    with torch.no_grad():  # make the LayerNorm output carry the outliers too
        b.ln.weight[[3, 11]] = 25.0
    return b


# ---------------------------------------------------------------------- smooth_scales


def test_smooth_scales_is_the_formula():
    a = torch.tensor([1.0, 8.0, 0.5, 4.0])
    w = torch.tensor([[0.5, -0.1, 0.2, 1.0], [-2.0, 0.05, 0.1, -0.5]])
    alpha = 0.7
    expected = torch.tensor([a[j].item() ** alpha / w[:, j].abs().max().item() ** (1 - alpha)
                             for j in range(4)])  # fmt: skip
    torch.testing.assert_close(sq.smooth_scales(a, w, alpha), expected)


def test_shared_input_takes_the_max_over_all_weights():
    a = torch.rand(8) + 0.1
    ws = [torch.randn(4, 8), torch.randn(6, 8) * 3, torch.randn(2, 8)]
    torch.testing.assert_close(sq.smooth_scales(a, ws, 0.5), sq.smooth_scales(a, torch.cat(ws), 0.5))


def test_alpha_one_flattens_the_activations_and_alpha_zero_the_weights():
    a = torch.tensor([0.5, 20.0, 1.0, 3.0])
    w = torch.randn(5, 4)
    torch.testing.assert_close(a / sq.smooth_scales(a, w, 1.0), torch.ones(4))
    torch.testing.assert_close((w * sq.smooth_scales(a, w, 0.0)).abs().amax(0), torch.ones(4))


def test_a_silent_channel_gets_a_finite_scale():
    s = sq.smooth_scales(torch.tensor([0.0, 1.0]), torch.tensor([[0.0, 1.0]]), 0.5)
    assert torch.isfinite(s).all() and (s > 0).all()


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan, math.inf])
def test_alpha_outside_zero_one_is_refused(alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        sq.smooth_scales(torch.ones(4), torch.ones(2, 4), alpha)


@pytest.mark.parametrize("alpha", ["0.5", None, True, torch.tensor(0.5)])
def test_alpha_must_be_a_number(alpha):
    with pytest.raises(TypeError, match="alpha must be a number"):
        sq.smooth_scales(torch.ones(4), torch.ones(2, 4), alpha)


def test_smooth_scales_bad_shapes():
    with pytest.raises(ValueError, match="weight has 5 input channels but act_absmax has 4"):
        sq.smooth_scales(torch.ones(4), torch.ones(2, 5), 0.5)
    with pytest.raises(TypeError, match="act_absmax must be a 1-d tensor"):
        sq.smooth_scales(torch.ones(2, 4), torch.ones(2, 4), 0.5)
    with pytest.raises(TypeError, match="weight must be a 2-d"):
        sq.smooth_scales(torch.ones(4), torch.ones(4), 0.5)
    with pytest.raises(ValueError, match="finite maxima >= 0"):
        sq.smooth_scales(torch.tensor([1.0, -1.0]), torch.ones(2, 2), 0.5)


# ---------------------------------------------------------------------- the pieces


def test_smooth_linear_keeps_the_output():
    torch.manual_seed(1)
    lin, x = nn.Linear(8, 5), torch.randn(3, 8) * torch.linspace(0.1, 10, 8)
    s = sq.smooth_scales(x.abs().amax(0), lin.weight, 0.6)
    smoothed = sq.smooth_linear(lin, s)
    torch.testing.assert_close(smoothed(x), lin(x), rtol=1e-5, atol=1e-5)
    assert type(smoothed.linear) is nn.Linear and isinstance(smoothed.smooth, sq.ChannelScale)
    torch.testing.assert_close(smoothed.smooth(x), x / s)


@pytest.mark.parametrize("producer", [nn.LayerNorm(6), nn.Linear(4, 6)])
def test_fold_divides_the_producers_output_channels(producer):
    torch.manual_seed(2)
    with torch.no_grad():
        producer.bias.normal_()
    x = torch.randn(3, producer.weight.shape[-1] if isinstance(producer, nn.Linear) else 6)
    before = producer(x)
    s = torch.rand(6) + 0.5
    sq.fold_inverse_scale(producer, s)
    torch.testing.assert_close(producer(x), before / s, rtol=1e-5, atol=1e-6)


def test_fold_refuses_other_modules():
    with pytest.raises(TypeError, match="nn.LayerNorm or an nn.Linear, got GELU"):
        sq.fold_inverse_scale(nn.GELU(), torch.ones(3))


def test_outlier_ratio():
    assert sq.outlier_ratio(torch.tensor([1.0, 1.0, 10.0])) == pytest.approx(10.0)


# ---------------------------------------------------------------------- smooth_quant on a model


def test_input_channel_absmax_is_the_max_over_every_batch(block):
    batches = outlier_batches()
    expected = torch.stack([b.abs().reshape(-1, 16).amax(0) for b in batches]).amax(0)
    assert torch.equal(sq.input_channel_absmax(nn.Linear(16, 2), batches)[""], expected)
    got = sq.input_channel_absmax(block, batches)
    assert set(got) == {"q", "k", "v", "up", "down"}
    assert got["down"].shape == (48,) and torch.equal(got["q"], got["v"])
    with torch.no_grad():
        ln_out = torch.stack([block.ln(b).abs().reshape(-1, 16).amax(0) for b in batches]).amax(0)
    assert torch.equal(got["q"], ln_out)  # q reads the LayerNorm's output


def test_smoothed_block_gives_the_same_outputs_and_flatter_inputs(block):
    batches = outlier_batches()
    folds = {"ln": ["q", "k", "v"]}
    smoothed = sq.smooth_quant(block, batches, 0.8, folds=folds)
    x = outlier_batches(seed=1)[0]
    with torch.no_grad():
        torch.testing.assert_close(smoothed(x), block(x), rtol=1e-4, atol=1e-4)
    # the folded Linears stay plain nn.Linear; the others get an explicit 1/s before them
    assert all(type(getattr(smoothed, n)) is nn.Linear for n in "qkv")
    assert all(isinstance(getattr(smoothed, n), nn.Sequential) for n in ("up", "down"))
    assert not torch.equal(smoothed.ln.weight, block.ln.weight)
    before = sq.input_channel_absmax(block, batches)
    after = sq.input_channel_absmax(smoothed, batches)  # x/s, as the smoothed Linears see it
    for name in ("q", "up"):
        inner = name if name in after else f"{name}.linear"
        assert sq.outlier_ratio(after[inner]) < sq.outlier_ratio(before[name]) / 3
    assert sq.outlier_ratio(before["q"]) > 10


def test_smooth_quant_leaves_the_original_alone_unless_inplace(block):
    state = {k: v.clone() for k, v in block.state_dict().items()}
    sq.smooth_quant(block, outlier_batches(), 0.5, folds={"ln": ["q", "k", "v"]})
    assert all(torch.equal(v, block.state_dict()[k]) for k, v in state.items())
    out = sq.smooth_quant(block, outlier_batches(), 0.5, inplace=True)
    assert out is block and isinstance(block.up, nn.Sequential)


def test_one_measurement_serves_several_alphas(block):
    batches = outlier_batches()
    absmax = sq.input_channel_absmax(block, batches)
    a = sq.smooth_quant(block, None, 0.6, act_absmax=absmax)
    b = sq.smooth_quant(block, batches, 0.6)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_a_model_that_is_one_linear():
    lin = nn.Linear(16, 4)
    x = outlier_batches()[0]
    smoothed = sq.smooth_quant(lin, [x], 0.5)
    assert isinstance(smoothed, nn.Sequential)
    torch.testing.assert_close(smoothed(x), lin(x), rtol=1e-5, atol=1e-5)


def test_smoothed_model_still_quantizes_with_qlab_and_torch(block):
    """The smoothed Linears are plain nn.Linear inside: quantize_dynamic swaps them as usual."""
    smoothed = sq.smooth_quant(block, outlier_batches(), 0.8, folds={"ln": ["q", "k", "v"]})
    q = qlab.quantize_dynamic(smoothed, {nn.Linear}, per_channel=True)
    assert sum(isinstance(m, qlab.nn.DynamicQuantLinear) for m in q.modules()) == 5
    x = outlier_batches(seed=2)[0]
    with torch.no_grad():
        torch.testing.assert_close(qlab.to_torch(q)(x), q(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("calibration", [[], (), iter([])])
def test_no_calibration_data_is_refused(block, calibration):
    with pytest.raises(ValueError, match="calibration is empty"):
        sq.smooth_quant(block, calibration, 0.5)
    with pytest.raises(ValueError, match="calibration is empty"):
        sq.input_channel_absmax(block, calibration)


def test_bad_input_to_smooth_quant(block):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        sq.smooth_quant(block, outlier_batches(), 1.2)
    with pytest.raises(TypeError, match="calibration must be a list of batches"):
        sq.smooth_quant(block, 3, 0.5)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        sq.smooth_quant("model", outlier_batches(), 0.5)
    with pytest.raises(ValueError, match="no Linear to calibrate"):
        sq.input_channel_absmax(nn.Sequential(nn.ReLU()), outlier_batches())
    with pytest.raises(ValueError, match="folds names modules the model does not have: .'nope'"):
        sq.smooth_quant(block, outlier_batches(), 0.5, folds={"nope": ["q"]})
    with pytest.raises(ValueError, match="must list nn.Linear modules"):
        sq.smooth_quant(block, outlier_batches(), 0.5, folds={"ln": ["ln"]})
    with pytest.raises(ValueError, match="act_absmax is empty"):
        sq.smooth_quant(block, None, 0.5, act_absmax={})


# ---------------------------------------------------------------------- on MiniLM


def test_smoothed_minilm_keeps_its_embeddings_and_flattens_every_linear_input():
    from qlab.lab.kit import minilm
    from qlab.lab.kit.data import sentences
    from qlab.lab.kit.models import load_minilm
    from qlab.lab.lessons.l03_dynamic_quantization import numbers

    model = load_minilm().eval()
    sents = sentences(24)
    batches = minilm.minilm_batches(model, sents[:16])
    folds = numbers.bert_value_folds(model)  # value -> attention.output.dense: 1/s folded into value
    smoothed = sq.smooth_quant(model, batches, 0.8, folds=folds)
    torch.testing.assert_close(minilm.encode(smoothed, sents), minilm.encode(model, sents), rtol=0, atol=2e-5)
    before = sq.input_channel_absmax(model, batches)
    after = {n.removesuffix(".linear"): a for n, a in sq.input_channel_absmax(smoothed, batches).items()}
    assert set(after) == set(before)
    ratios = {n: (sq.outlier_ratio(before[n]), sq.outlier_ratio(after[n])) for n in before}
    assert all(a < b for b, a in ratios.values()), ratios
    worst_before = max(b for b, _ in ratios.values())
    worst_after = max(a for _, a in ratios.values())
    assert worst_before > 15 and worst_after < 5
    # the folded Linears stay plain nn.Linear (no extra module), the rest get a ChannelScale
    scales = [n for n, m in smoothed.named_modules() if isinstance(m, sq.ChannelScale)]
    assert len(scales) == len(before) - len(folds)
