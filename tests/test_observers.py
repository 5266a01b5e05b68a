"""Observers: parity with torch.ao, brute-force references, properties, bad input, state_dict.

HistogramObserver tolerance. qlab's HistogramObserver repeats torch.ao's float32
arithmetic step by step (same histc/bucketize/bincount histogram, same float32 comparisons
in the quantile walk, same error integral). Measured over the 56 cases below (36 random
distributions x batch sequences x reduce_range/symmetric/int8, 20 real-data cases): the
histograms are bit-identical and the largest difference is 0 in scale (relative) and 0 in
zero point. The test allows 1e-6 relative scale and 0 zero point: a float32 ulp of slack
for a platform where a reduction is summed in another order, and none for the zero point.
"""

import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import TORCH_DTYPE
from torch.ao import quantization as tq

import qlab
from qlab.observers import (
    EntropyObserver,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    _kl_divergences,
    _l2_error,
    kl_divergence_loop,
)

ALL = [
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    HistogramObserver,
    PercentileObserver,
    MSEObserver,
    EntropyObserver,
]
PER_CHANNEL = [MinMaxObserver, MovingAverageMinMaxObserver, PercentileObserver, MSEObserver]
CLIPPING = [HistogramObserver, PercentileObserver, MSEObserver, EntropyObserver]
HIST_SCALE_RTOL, HIST_ZP_ATOL = 1e-6, 0


def small(cls, **kw):
    """Observers with small histograms, so the property tests stay fast."""
    if cls in (PercentileObserver, MSEObserver, EntropyObserver):
        kw.setdefault("bins", 256)
    return cls(**kw)


def batches(seed: int, n: int = 4, shape=(8, 6, 5)) -> list[torch.Tensor]:
    """Batches whose ranges move around, so that the running state really matters."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * (0.5 + i) + 0.3 * i - 0.5 for i in range(n)]


# ------------------------------------------------------------------------------------------
# Parity: MinMax and MovingAverage are exact against torch.ao over a sequence of batches
# ------------------------------------------------------------------------------------------

SCHEMES = [  # (qdtype, symmetric, reduce_range)
    (qlab.uint8, False, False),
    (qlab.uint8, False, True),
    (qlab.uint8, True, False),
    (qlab.int8, True, False),
    (qlab.int8, False, False),
    (qlab.int8, True, True),
]


def torch_twin(ours, qdtype, symmetric, reduce_range, axis):
    per_channel = axis is not None
    if symmetric:
        scheme = torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric
    else:
        scheme = torch.per_channel_affine if per_channel else torch.per_tensor_affine
    kw = dict(dtype=TORCH_DTYPE[qdtype], qscheme=scheme, reduce_range=reduce_range)
    if per_channel:
        kw["ch_axis"] = axis
    if ours is MinMaxObserver:
        return (tq.PerChannelMinMaxObserver if per_channel else tq.MinMaxObserver)(**kw)
    kw["averaging_constant"] = 0.1
    if per_channel:
        return tq.MovingAveragePerChannelMinMaxObserver(**kw)
    return tq.MovingAverageMinMaxObserver(**kw)


@pytest.mark.parametrize("cls", [MinMaxObserver, MovingAverageMinMaxObserver])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("qdtype,symmetric,reduce_range", SCHEMES)
def test_minmax_parity_with_torch(cls, axis, qdtype, symmetric, reduce_range):
    kw = dict(qdtype=qdtype, symmetric=symmetric, reduce_range=reduce_range, axis=axis)
    if cls is MovingAverageMinMaxObserver:
        kw["averaging_constant"] = 0.1
    ours = cls(**kw)
    theirs = torch_twin(cls, qdtype, symmetric, reduce_range, axis)
    for i, x in enumerate(batches(seed=7, n=5)):
        ours(x)
        theirs(x)
        qp = ours.qparams()
        scale, zp = theirs.calculate_qparams()
        assert torch.equal(qp.scale, scale.reshape(qp.scale.shape)), f"batch {i}"
        assert torch.equal(qp.zero_point, zp.to(torch.int64).reshape(qp.scale.shape)), f"batch {i}"


# ------------------------------------------------------------------------------------------
# Parity: HistogramObserver against torch.ao's, over 56 cases
# ------------------------------------------------------------------------------------------


def random_histogram_cases():
    """36 cases: 6 distributions x (1 or 3 batches) x 3 schemes."""
    g = torch.Generator().manual_seed(11)
    dists = {
        "normal": lambda n: torch.randn(n, generator=g),
        "relu": lambda n: torch.relu(torch.randn(n, generator=g)),
        "laplace": lambda n: (
            torch.sign(torch.rand(n, generator=g) - 0.5) * -torch.log(torch.rand(n, generator=g))
        ),
        "uniform": lambda n: torch.rand(n, generator=g) * 6 - 1,
        "outliers": lambda n: torch.cat([torch.randn(n, generator=g), 30 * torch.randn(5, generator=g)]),
        "lognormal": lambda n: torch.exp(torch.randn(n, generator=g)),
    }
    schemes = [(qlab.uint8, False, False), (qlab.uint8, False, True), (qlab.int8, True, False)]
    for name, draw in dists.items():
        for n_batches in (1, 3):
            for scheme in schemes:
                xs = [draw(3000) * (1 + 0.5 * i) + 0.2 * i for i in range(n_batches)]
                yield f"{name}-{n_batches}b-{scheme[0]!r}-sym{scheme[1]}-rr{scheme[2]}", xs, scheme


def real_histogram_cases():
    """20 cases from real data: activations of a small conv net on scikit-learn's digits
    (its conv weights are a fixed PCA-like basis of the images, so the activations are the
    real data's correlations), the raw images, and the lesson checkpoint's activations when
    it exists."""
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16.0
    g = torch.Generator().manual_seed(5)
    conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
    conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
    with torch.no_grad():
        patches = torch.nn.functional.unfold(images[:500], 3, padding=1).transpose(1, 2)
        patches = patches.reshape(-1, 9)
        _, _, v = torch.linalg.svd(patches - patches.mean(0), full_matrices=False)
        conv1.weight.copy_(v[:8].reshape(8, 1, 3, 3))
        conv1.bias.zero_()
        conv2.weight.normal_(0, 0.2, generator=g)
        acts = {}
        for i, start in enumerate(range(0, 1600, 160)):
            batch = images[start : start + 160]
            a1 = conv1(batch)
            acts[f"digits-conv1-{i}"] = a1
            acts[f"digits-relu-conv2-{i}"] = torch.relu(conv2(torch.relu(a1)))
    cases = []
    for i, (name, x) in enumerate(sorted(acts.items())[:18]):
        scheme = [(qlab.uint8, False, True), (qlab.uint8, False, False), (qlab.int8, True, False)][i % 3]
        cases.append((name, [x], scheme))
    cases.append(("digits-pixels-3b", [images[i * 300 : (i + 1) * 300] for i in range(3)],
                  (qlab.uint8, False, True)))  # fmt: skip
    a = [acts[f"digits-conv1-{i}"] for i in range(4)]
    cases.append(("digits-conv1-4b", a, (qlab.uint8, False, True)))
    return cases


def histogram_differences(xs, scheme):
    qdtype, symmetric, reduce_range = scheme
    ours = HistogramObserver(qdtype=qdtype, symmetric=symmetric, reduce_range=reduce_range)
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    theirs = tq.HistogramObserver(dtype=TORCH_DTYPE[qdtype], qscheme=qscheme, reduce_range=reduce_range)
    for x in xs:
        ours(x)
        theirs(x)
    qp = ours.qparams()
    scale, zp = theirs.calculate_qparams()
    scale_diff = abs(qp.scale.item() - scale.item()) / scale.item()
    zp_diff = abs(qp.zero_point.item() - zp.item())
    return scale_diff, zp_diff, torch.equal(ours.histogram, theirs.histogram)


def test_histogram_parity_with_torch():
    cases = list(random_histogram_cases()) + real_histogram_cases()
    assert len(cases) >= 50
    worst_scale = worst_zp = 0.0
    for name, xs, scheme in cases:
        scale_diff, zp_diff, same_hist = histogram_differences(xs, scheme)
        assert same_hist, name
        worst_scale, worst_zp = max(worst_scale, scale_diff), max(worst_zp, zp_diff)
    print(f"HistogramObserver vs torch.ao over {len(cases)} cases: "
          f"max relative scale diff {worst_scale:.3g}, max zero-point diff {worst_zp}")  # fmt: skip
    assert worst_scale <= HIST_SCALE_RTOL and worst_zp <= HIST_ZP_ATOL


# ------------------------------------------------------------------------------------------
# Brute-force references for the observers torch.ao does not have
# ------------------------------------------------------------------------------------------


def test_l2_error_matches_numerical_integration():
    """The closed-form error of HistogramObserver against sampling each bin densely."""
    hist = torch.tensor([0.0, 3, 5, 1, 0, 2, 7, 4])
    lo, hi, dst = torch.tensor(-1.0), torch.tensor(3.0), 4
    bin_width = 0.5
    for start, end in [(0, 7), (1, 6), (2, 5), (3, 3)]:
        cell = bin_width * (end - start + 1) / dst
        k = 20_000  # samples per bin
        t = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        total = 0.0
        for b in range(8):
            x = (b - start + t) * bin_width  # measured from the range's start
            idx = torch.clamp(torch.floor(x / cell), 0, dst - 1)
            total += float(hist[b] / k * ((x - (idx + 0.5) * cell) ** 2).sum())
        assert _l2_error(hist, lo, hi, start, end, dst) == pytest.approx(total, rel=1e-4)


def test_histogram_search_only_accepts_lower_error():
    torch.manual_seed(1)
    obs = HistogramObserver()
    obs(torch.distributions.Laplace(0.0, 1.0).sample((20_000,)))
    start, end = obs._search(obs.histogram, obs.min_val, obs.max_val)
    full = _l2_error(obs.histogram, obs.min_val, obs.max_val, 0, obs.bins - 1, 256)
    chosen = _l2_error(obs.histogram, obs.min_val, obs.max_val, start, end, 256)
    assert (start, end) != (0, obs.bins - 1) and chosen <= full


@pytest.mark.parametrize("p", [90.0, 99.0, 99.9, 100.0])
def test_percentile_against_torch_quantile(p):
    x = torch.randn(20_000) ** 3
    obs = PercentileObserver(percentile=p)
    obs(x)
    width = (x.max() - x.min()).item() / obs.bins
    ordered = x.sort().values
    for q, chosen in zip((1 - p / 100, p / 100), obs.calibrated_range(), strict=True):
        # q * n values lie at or below the chosen value: it sits between the order statistics
        # around rank q * n, give or take the one histogram bin it was interpolated in.
        k = math.ceil(q * len(x))
        below, above = ordered[max(k - 1, 0)].item(), ordered[min(k, len(x) - 1)].item()
        assert below - width - 1e-6 <= chosen.item() <= above + width + 1e-6


def test_percentile_per_channel_is_per_tensor_on_each_channel():
    w = torch.randn(6, 4, 3, 3) * torch.arange(1, 7).reshape(6, 1, 1, 1)
    pc = PercentileObserver(percentile=99.0, axis=0, qdtype=qlab.int8, symmetric=True)
    pc(w)
    lo, hi = pc.calibrated_range()
    for c in range(6):
        pt = PercentileObserver(percentile=99.0, qdtype=qlab.int8, symmetric=True)
        pt(w[c])
        assert torch.equal(torch.stack(pt.calibrated_range()), torch.stack([lo[c], hi[c]]))


@pytest.mark.parametrize("qdtype,symmetric", [(qlab.uint8, False), (qlab.int8, True), (qlab.uint4, False)])
def test_mse_search_against_brute_force(qdtype, symmetric):
    """Every candidate's error, recomputed one by one; the chosen range is the best of them,
    on the histogram and (to within the histogram's approximation) on the raw data."""
    x = torch.cat([torch.randn(5000), torch.tensor([9.0, -7.0])])
    obs = MSEObserver(qdtype=qdtype, symmetric=symmetric, num_candidates=25, bins=128)
    obs(x)
    alphas, errors = obs.search_curve()
    lo, hi = obs.min_val, obs.max_val
    width = (hi - lo) / obs.bins
    points = lo + (torch.arange(obs.bins * 4) + 0.5) * width / 4
    weights = obs.histogram.repeat_interleave(4) / 4
    raw = []
    for a, err in zip(alphas, errors, strict=True):
        qp = qlab.qparams_from_range(a * lo, a * hi, qdtype, symmetric)
        brute = float(((qlab.fake_quantize(points, qp) - points) ** 2 * weights).sum() / len(x))
        assert float(err) == pytest.approx(brute, rel=1e-5, abs=1e-12)
        raw.append(qlab.metrics.mse(x, qlab.fake_quantize(x, qp)))
    # the chosen range is the widest of the candidates with the smallest error
    errs = errors.tolist()
    best = max(i for i, e in enumerate(errs) if e == min(errs))
    chosen_lo, chosen_hi = obs.calibrated_range()
    assert torch.equal(chosen_lo, alphas[best] * lo)
    assert torch.equal(chosen_hi, alphas[best] * hi)
    assert qlab.metrics.mse(x, qlab.fake_quantize(x, obs.qparams())) <= min(raw) * 1.05


def test_kl_divergence_loop_by_hand():
    """hist [0, 2, 2, 0] (bin 0 takes bin 1's count: [2, 2, 2, 0]).
    Keep 4 bins on 2 levels: Q = P, KL = 0. Keep 2 bins on 1 level: P = [2, 2 + 2 + 0],
    Q = [2, 2] (the group's 4 spread over 2 bins), so KL = 1/3 log((1/3)/(1/2)) + 2/3 log((2/3)/(1/2))."""
    hist = [0.0, 2.0, 2.0, 0.0]
    assert kl_divergence_loop(hist, kept=4, levels=2) == pytest.approx(0.0, abs=1e-12)
    expected = 1 / 3 * math.log(2 / 3) + 2 / 3 * math.log(4 / 3)
    assert kl_divergence_loop(hist, kept=2, levels=1) == pytest.approx(expected, rel=1e-12)
    kept, kl = _kl_divergences(torch.tensor(hist), levels=1)
    assert kept.tolist() == [1, 2, 3, 4]
    assert kl[1].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bins,bits", [(48, 4), (300, 5)])
def test_vectorised_kl_equals_the_loop(seed, bins, bits):
    """_kl_divergences (all candidates at once) against kl_divergence_loop, candidate by candidate,
    on histograms with empty bins and far outliers."""
    g = torch.Generator().manual_seed(seed)
    hist = torch.histc(torch.randn(3000, generator=g).abs() ** (1 + seed), bins)
    hist[bins // 2 : bins // 2 + 5] = 0
    levels = 2 ** (bits - 1)
    kept, kl = _kl_divergences(hist, levels)
    loop = [kl_divergence_loop(hist.tolist(), int(k), levels) for k in kept]
    assert kl.tolist() == pytest.approx(loop, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_search_curve_against_the_loop(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3000, generator=g) * (1 + seed)
    x[:4] *= 6
    obs = EntropyObserver(bins=48, qdtype=qlab.qdtype(4, True), symmetric=True)
    obs(x)
    thresholds, kl = obs.search_curve()
    hist = obs.histogram.double().tolist()
    ref = [kl_divergence_loop(hist, k, obs.levels()) for k in range(obs.levels(), obs.bins + 1)]
    assert kl.tolist() == pytest.approx(ref, rel=1e-6, abs=1e-12)
    best = max(i for i, v in enumerate(ref) if v == min(ref))
    lo, hi = obs.calibrated_range()
    t = thresholds[best]
    assert torch.equal(hi, torch.minimum(obs.max_val, t))
    assert torch.equal(lo, torch.maximum(obs.min_val, -t))


def test_entropy_levels():
    relu = EntropyObserver()
    relu(torch.relu(torch.randn(100)))
    signed = EntropyObserver()
    signed(torch.randn(100))
    assert relu.levels() == 256 and signed.levels() == 128
    assert EntropyObserver(qdtype=qlab.int8, symmetric=True).levels() == 128
    kept, kl = _kl_divergences(torch.ones(16), 4)
    assert kept.tolist() == list(range(4, 17)) and torch.isfinite(kl).all()


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
data = st.lists(finite, min_size=1, max_size=200)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data, st.sampled_from(CLIPPING))
def test_clipping_range_never_exceeds_minmax(values, cls):
    x = torch.tensor(values)
    obs, mm = small(cls), MinMaxObserver()
    obs(x)
    mm(x)
    lo, hi = obs.calibrated_range()
    slack = 1e-6 * max(1.0, (mm.max_val - mm.min_val).item())  # float32 round-off of min + k * width
    assert lo >= mm.min_val - slack and hi <= mm.max_val + slack and lo <= hi + slack
    assert obs.qparams().scale <= mm.qparams().scale * (1 + 1e-6)


@settings(max_examples=25, deadline=None)
@given(st.lists(data, min_size=1, max_size=4), st.floats(0.01, 1.0))
def test_moving_average_stays_inside_running_minmax(seq, c):
    ma, mm = MovingAverageMinMaxObserver(averaging_constant=c), MinMaxObserver()
    for values in seq:
        ma(torch.tensor(values))
        mm(torch.tensor(values))
    slack = 1e-6 * (1 + max(mm.max_val.abs(), mm.min_val.abs()))
    lo, hi = ma.calibrated_range()
    assert mm.min_val - slack <= lo <= hi <= mm.max_val + slack
    assert ma.qparams().scale <= mm.qparams().scale * (1 + 1e-6)


def test_moving_average_update_rule():
    obs = MovingAverageMinMaxObserver(averaging_constant=0.25)
    obs(torch.tensor([-1.0, 2.0]))
    obs(torch.tensor([-3.0, 6.0]))
    assert obs.min_val.item() == -1.5 and obs.max_val.item() == 3.0


@pytest.mark.parametrize("cls", ALL)
def test_forward_returns_input_unchanged(cls):
    x = torch.randn(4, 5, requires_grad=True)
    y = small(cls)(x)
    assert y is x


@pytest.mark.parametrize("cls", PER_CHANNEL)
def test_per_channel_equals_per_tensor_per_channel(cls):
    xs = batches(seed=3, n=2, shape=(5, 3, 4))
    pc = small(cls, axis=1, qdtype=qlab.int8, symmetric=True)
    for x in xs:
        pc(x)
    qp = pc.qparams()
    assert qp.scale.shape == (3,) and qp.axis == 1
    for c in range(3):
        pt = small(cls, qdtype=qlab.int8, symmetric=True)
        for x in xs:
            pt(x[:, c])
        assert torch.equal(pt.qparams().scale, qp.scale[c])


def test_clipping_observers_against_outliers():
    """A few outliers: min-max's scale blows up; percentile and entropy hold. MSE and
    histogram minimise the squared error, which a clipped far outlier dominates, so they keep
    most of the range; they still end with no more error than min-max."""
    x = torch.randn(200_000)
    x[:3] = torch.tensor([80.0, -60.0, 70.0])
    mm = MinMaxObserver()
    mm(x)
    mm_mse = qlab.metrics.mse(x, qlab.fake_quantize(x, mm.qparams()))
    for cls in (PercentileObserver, EntropyObserver, MSEObserver, HistogramObserver):
        obs = cls()
        obs(x)
        qp = obs.qparams()
        if cls in (PercentileObserver, EntropyObserver):
            assert qp.scale < mm.qparams().scale / 4, cls.__name__
        else:
            assert qlab.metrics.mse(x, qlab.fake_quantize(x, qp)) <= mm_mse, cls.__name__


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL)
def test_bad_input(cls):
    obs = small(cls)
    with pytest.raises(ValueError, match="seen no data"):
        obs.qparams()
    with pytest.raises(ValueError, match="NaN or Inf"):
        obs(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        obs(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="empty"):
        obs(torch.empty(0))
    with pytest.raises(TypeError, match="float tensors"):
        obs(torch.arange(4))
    assert not obs.has_data()  # the rejected batches left no trace


@pytest.mark.parametrize("cls", PER_CHANNEL)
def test_bad_axis(cls):
    obs = small(cls, axis=3)
    with pytest.raises(ValueError, match="axis=3 does not exist"):
        obs(torch.randn(2, 3))
    obs = small(cls, axis=0)
    obs(torch.randn(3, 4))
    with pytest.raises(ValueError, match="channels"):
        obs(torch.randn(5, 4))
    with pytest.raises(TypeError, match="axis"):
        small(cls, axis=1.0)


@pytest.mark.parametrize("cls", [HistogramObserver, EntropyObserver])
def test_per_tensor_only(cls):
    with pytest.raises(ValueError, match="per-tensor only"):
        cls(axis=0)


def test_bad_settings():
    with pytest.raises(ValueError, match="averaging_constant"):
        MovingAverageMinMaxObserver(averaging_constant=0.0)
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(percentile=101)
    with pytest.raises(ValueError, match="bins"):
        HistogramObserver(bins=1)
    with pytest.raises(ValueError, match="num_candidates"):
        MSEObserver(num_candidates=0)
    with pytest.raises(TypeError, match="qdtype"):
        MinMaxObserver(qdtype=torch.quint8)


def test_constant_and_zero_input():
    for cls in ALL:
        obs = small(cls)
        obs(torch.full((10,), 2.5))
        obs(torch.full((10,), 2.5))
        qp = obs.qparams()
        assert torch.isfinite(qp.scale) and qp.scale > 0, cls.__name__
        zero = small(cls)
        zero(torch.zeros(7))
        assert zero.qparams().scale.item() == qlab.EPS, cls.__name__


# ------------------------------------------------------------------------------------------
# State: state_dict round trip and reset
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("axis", [None, 0])
def test_state_dict_round_trip(cls, axis, tmp_path: Path):
    if axis is not None and cls not in PER_CHANNEL:
        pytest.skip("per-tensor only")
    a = small(cls, axis=axis)
    xs = batches(seed=5, n=3)
    for x in xs[:2]:
        a(x)
    path = tmp_path / "obs.pt"
    torch.save(torch.nn.Sequential(a).state_dict(), path)
    b = torch.nn.Sequential(small(cls, axis=axis))
    b.load_state_dict(torch.load(path, weights_only=True))
    b = b[0]
    assert torch.equal(a.qparams().scale, b.qparams().scale)
    a(xs[2])
    b(xs[2])
    assert torch.equal(a.qparams().scale, b.qparams().scale)
    assert torch.equal(a.qparams().zero_point, b.qparams().zero_point)


@pytest.mark.parametrize("cls", ALL)
def test_reset(cls):
    xs = batches(seed=9, n=2)
    obs, fresh = small(cls), small(cls)
    obs(xs[0] * 10)
    obs.reset()
    with pytest.raises(ValueError, match="seen no data"):
        obs.qparams()
    obs(xs[1])
    fresh(xs[1])
    assert torch.equal(obs.qparams().scale, fresh.qparams().scale)


def test_observer_is_the_base_of_all():
    assert all(issubclass(cls, Observer) for cls in ALL)
