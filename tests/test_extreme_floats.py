"""Random extreme floats through the core: finite output, or a clear error.

Values from ±1e-38 to ±3e38 (and beyond float32, up to ±1e300, in float64 tensors), as float32,
float16, bfloat16 or float64 tensors, go through qparams_from_range -> quantize -> dequantize
(and fake_quantize) and through every observer. Each call either gives finite numbers that
satisfy the usual bounds, or raises a ValueError whose message says which float range was
exceeded and what must fit it. Nothing comes back NaN or inf.
"""

import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qlab
from qlab.observers import (
    EntropyObserver,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
)

# What a clear error about extreme values says: what did not fit, and that it must fit.
CLEAR = re.compile(
    r"width must fit float32"  # qparams_from_range: max - min overflows float32
    r"|every level must fit float32"  # QParams: a grid level (q - zp) * scale overflows float32
    r"|does not fit float32"  # qparams_from_range: a float64 bound beyond float32
    r"|beyond float32 .* must fit it"  # observers: float64 data beyond float32
    r"|output overflows torch\.(float16|bfloat16)"  # fake_quantize: a level beyond the input dtype
)
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
GRIDS = [qlab.uint8, qlab.int8, qlab.int4, qlab.qdtype(2, False), qlab.int16]
OBSERVERS = [
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    HistogramObserver,
    PercentileObserver,
    MSEObserver,
    EntropyObserver,
]
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOP = float(torch.tensor(3e38))  # 3e38 as float32 holds it


def log_uniform(lo_exp: int, hi_exp: int, top: float):
    """|v| spread evenly over the decades 10**lo_exp .. top, either sign."""
    mag = st.builds(lambda e, m: min(m * 10.0**e, top), st.integers(lo_exp, hi_exp), st.floats(1.0, 9.99))
    return st.builds(lambda s, v: s * v, st.sampled_from([-1.0, 1.0]), mag)


FLOAT32_EXTREMES = st.one_of(
    st.just(0.0),
    log_uniform(-38, 38, TOP),
    st.floats(-TOP, TOP, width=32),  # hypothesis favours the edges: 3e38, tiny, subnormal
)
FLOAT64_EXTREMES = st.one_of(FLOAT32_EXTREMES, log_uniform(-300, 300, 1e300))


@st.composite
def extreme_tensor(draw, max_size: int = 20) -> torch.Tensor:
    """A 1-d tensor of extreme values in a random float dtype (clamped to the dtype's range)."""
    dtype = draw(st.sampled_from(DTYPES))
    values = st.lists(FLOAT64_EXTREMES if dtype == torch.float64 else FLOAT32_EXTREMES,
                      min_size=1, max_size=max_size)  # fmt: skip
    top = torch.finfo(dtype).max
    return torch.tensor(draw(values), dtype=torch.float64).clamp(-top, top).to(dtype)


def assert_clear(err: Exception) -> None:
    assert isinstance(err, ValueError) and CLEAR.search(str(err)), repr(err)


@settings(max_examples=100, **FAST)
@given(extreme_tensor(), st.sampled_from(GRIDS), st.booleans())
def test_qparams_quantize_dequantize(x, grid, symmetric):
    try:
        qp = qlab.qparams_from_range(x.min(), x.max(), grid, symmetric=symmetric)
    except ValueError as err:
        assert_clear(err)
        return
    assert bool(torch.isfinite(qp.scale)) and qp.scale > 0
    q = qlab.quantize(x, qp)
    assert qp.qmin <= int(q.min()) and int(q.max()) <= qp.qmax
    x_hat = qlab.dequantize(q, qp)
    assert torch.isfinite(x_hat).all()
    # inside the range: at most half a step off (float32 rounding of 1 / scale adds a little)
    x32 = x.to(torch.float32)
    tol = qp.scale * 0.51 + 1e-6 * x32.abs()
    assert ((x_hat - x32).abs() <= tol).all(), (qp, x, x_hat)
    try:
        y = qlab.fake_quantize(x, qp)
    except ValueError as err:
        assert_clear(err)
        return
    assert y.dtype == x.dtype and torch.isfinite(y).all()


def observer(cls, **kw):
    if cls is not MinMaxObserver and cls is not MovingAverageMinMaxObserver:
        kw["bins"] = 64  # small histograms keep the searches quick
    return cls(**kw)


@settings(max_examples=60, **FAST)
@given(
    st.sampled_from(OBSERVERS),
    st.lists(extreme_tensor(max_size=10), min_size=1, max_size=3),
    st.sampled_from([(qlab.uint8, False), (qlab.int8, True), (qlab.uint8, True), (qlab.int4, False)]),
)
def test_observers(cls, batches, scheme):
    qdtype, symmetric = scheme
    obs = observer(cls, qdtype=qdtype, symmetric=symmetric)
    seen = []
    for x in batches:
        try:
            obs(x)
        except ValueError as err:  # float64 data beyond float32: refused, and not recorded
            assert_clear(err)
            assert x.dtype == torch.float64
            continue
        seen.append(x.to(torch.float32))
    if not seen:
        assert not obs.has_data()
        return
    everything = torch.cat(seen)
    lo, hi = obs.calibrated_range()
    assert math.isfinite(lo.item()) and math.isfinite(hi.item())
    # a clipping observer's range lies inside min-max (give or take float32 round-off)
    slack = 1e-5 * everything.abs().max().item()
    assert everything.min().item() - slack <= lo.item() <= hi.item() + slack
    assert hi.item() <= everything.max().item() + slack
    try:
        qp = obs.qparams()
    except ValueError as err:
        assert_clear(err)
        return
    assert bool(torch.isfinite(qp.scale)) and qp.scale > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_each_dtype_at_its_limits(dtype):
    """The largest and the smallest normal value of each dtype, with 0, through every observer."""
    info = torch.finfo(dtype)
    top = min(info.max, TOP)
    x = torch.tensor([-top, -info.tiny, 0.0, info.tiny, top], dtype=torch.float64).to(dtype)
    for cls in OBSERVERS:
        obs = observer(cls, qdtype=qlab.int8, symmetric=True)
        obs(x)
        assert torch.isfinite(obs.qparams().scale), cls.__name__
