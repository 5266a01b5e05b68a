"""Issue 16, the core's share: bad or edge-case input to qparams, ops, observers and metrics
gets a clear error (the type, and a message naming the argument and what is allowed), or the
correct result where there is one."""

import io
import math

import numpy as np
import pytest
import torch

import qlab
from qlab import metrics
from qlab.observers import (
    EntropyObserver,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
)
from qlab.qparams import QParams

CLIPPING = [HistogramObserver, PercentileObserver, MSEObserver, EntropyObserver]
ALL = [MinMaxObserver, MovingAverageMinMaxObserver, *CLIPPING]


# -- qparams_from_range: a range whose width overflows float32, eps ----------------------------
def test_range_whose_width_overflows_float32():
    """-3e38..3e38 is 6e38 wide: the scale would be inf and fake_quantize would give NaN."""
    with pytest.raises(ValueError, match=r"min_val=.*max_val=.*too wide.*width must fit float32"):
        qlab.qparams_from_range(-3e38, 3e38)
    with pytest.raises(ValueError, match=r"too wide.*must fit float32"):
        qlab.qparams_from_range(torch.tensor([-1.0, -3e38]), torch.tensor([1.0, 3e38]))


def test_symmetric_range_near_float32_max_works():
    qp = qlab.qparams_from_range(-3e38, 3e38, qlab.int8, symmetric=True)  # 3e38 / 127.5
    x = torch.tensor([-3e38, 0.0, 1e38, 3e38])
    y = qlab.fake_quantize(x, qp)
    assert torch.isfinite(y).all()
    assert (y - x).abs().max() <= qp.scale / 2 * (1 + 1e-5)  # 1 / scale is rounded to float32


def test_symmetric_range_whose_lowest_level_overflows_float32():
    """-128 * (3.4e38 / 127.5) is beyond float32: the grid's lowest level would dequantize to -inf."""
    with pytest.raises(ValueError, match=r"grid levels .* every level must fit float32"):
        qlab.qparams_from_range(-3.4e38, 3.4e38, qlab.int8, symmetric=True)


@pytest.mark.parametrize("name", ["min_val", "max_val"])
def test_float64_range_beyond_float32(name):
    """±1e300 is finite in float64 but inf after the cast to float32."""
    big = {"min_val": torch.tensor(-1e300, dtype=torch.float64),
           "max_val": torch.tensor(1e300, dtype=torch.float64)}  # fmt: skip
    args = {"min_val": -1.0, "max_val": 1.0, name: big[name]}
    with pytest.raises(ValueError, match=rf"{name}=.*1e\+300 does not fit float32"):
        qlab.qparams_from_range(**args)


@pytest.mark.parametrize("eps", [0, 0.0, -1, float("nan"), float("inf"), 1e-50, 1e300])
def test_eps_must_be_a_finite_positive_float32(eps):
    """eps=0 gave scale 0 and NaN outputs; -1 gave 0; nan gave nan; 1e-50 is 0 in float32."""
    with pytest.raises(ValueError, match=r"eps must be a finite float > 0 that float32 can hold"):
        qlab.qparams_from_range(0.0, 0.0, eps=eps)
    with pytest.raises(ValueError, match=r"eps must be a finite float > 0"):
        MinMaxObserver(eps=eps)


@pytest.mark.parametrize("eps", ["1e-7", None, True, torch.tensor(1e-7)])
def test_eps_must_be_a_number(eps):
    with pytest.raises(TypeError, match="eps must be a float"):
        qlab.qparams_from_range(0.0, 1.0, eps=eps)


def test_small_positive_eps_is_used():
    qp = qlab.qparams_from_range(0.0, 0.0, eps=1e-3)
    assert qp.scale.item() == pytest.approx(1e-3)


# -- a hand-built QParams -----------------------------------------------------------------------
def test_qparams_from_plain_numbers():
    """QParams(0.1, 0, ...) used to raise AttributeError; numbers become 0-d tensors."""
    qp = QParams(0.1, 3, qlab.uint8, 0, 255)
    assert qp.scale.dtype == torch.float32 and qp.scale.dim() == 0
    assert qp.zero_point.dtype == torch.int64 and qp.zero_point.item() == 3
    assert qlab.quantize(torch.tensor([0.0, 0.1]), qp).tolist() == [3, 4]


def test_qparams_converts_integer_and_float_dtypes():
    qp = QParams(torch.tensor([0.1, 0.2], dtype=torch.float64), torch.tensor([0, 1], dtype=torch.int32),
                 qlab.int8, -128, 127, axis=0)  # fmt: skip
    assert qp.scale.dtype == torch.float32 and qp.zero_point.dtype == torch.int64


@pytest.mark.parametrize("zp", [300, -1, torch.tensor([0, 256])])
def test_qparams_zero_point_outside_the_grid(zp):
    """A zero point off the grid made every output saturate."""
    scale = torch.ones(2) if isinstance(zp, torch.Tensor) else 0.1
    with pytest.raises(ValueError, match=r"zero_point must lie on the grid \[qmin, qmax\] = \[0, 255\]"):
        QParams(scale, zp, qlab.uint8, 0, 255, axis=0 if isinstance(zp, torch.Tensor) else None)


@pytest.mark.parametrize("scale", [-0.1, 0.0, float("nan"), float("inf"), torch.tensor([0.1, -0.1])])
def test_qparams_scale_must_be_positive_and_finite(scale):
    """A negative scale flipped the sign of every output."""
    zp = torch.zeros(2, dtype=torch.int64) if isinstance(scale, torch.Tensor) else 0
    axis = 0 if isinstance(scale, torch.Tensor) else None
    with pytest.raises(ValueError, match="scale must be > 0 and finite"):
        QParams(scale, zp, qlab.int8, -128, 127, axis)


def test_qparams_levels_must_fit_float32():
    with pytest.raises(ValueError, match=r"grid levels .* must fit float32"):
        QParams(1e37, 0, qlab.uint8, 0, 255)


@pytest.mark.parametrize("qmin,qmax", [(-128, 1000), (-200, 127), (0, 255), (5, 5), (7, 3)])
def test_qparams_grid_must_lie_inside_qdtype(qmin, qmax):
    """qmax=1000 in int8 wrapped around to -24 in storage."""
    match = r"\[qmin, qmax\] = .* must have qmin < qmax and lie inside the int8"
    with pytest.raises(ValueError, match=match):
        QParams(0.1, 0 if qmin <= 0 <= qmax else qmin, qlab.int8, qmin, qmax)


@pytest.mark.parametrize("qmin,qmax", [(0.0, 255), (0, "255"), (False, 255)])
def test_qparams_grid_must_be_ints(qmin, qmax):
    with pytest.raises(TypeError, match="qmin and qmax must be ints"):
        QParams(0.1, 0, qlab.uint8, qmin, qmax)


def test_qparams_scale_must_be_0d_or_1d():
    """A 2-d scale was treated as per-tensor while its repr said <4 channels>."""
    with pytest.raises(ValueError, match=r"scale must be 0-d \(per-tensor\) or 1-d.*got shape \(2, 2\)"):
        QParams(torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.int64), qlab.int8, -128, 127)
    with pytest.raises(ValueError, match=r"one value per channel, got shape \(0,\)"):
        QParams(torch.ones(0), torch.zeros(0, dtype=torch.int64), qlab.int8, -128, 127, 0)


def test_qparams_scale_and_zero_point_same_shape():
    match = r"scale and zero_point must have the same shape, got \(3,\) and \(\)"
    with pytest.raises(ValueError, match=match):
        QParams(torch.ones(3), 0, qlab.int8, -128, 127, axis=0)


@pytest.mark.parametrize("axis", ["0", 0.0, True])
def test_qparams_axis_must_be_an_int(axis):
    with pytest.raises(TypeError, match="axis must be None .per-tensor. or an int"):
        QParams(torch.ones(3), torch.zeros(3, dtype=torch.int64), qlab.int8, -128, 127, axis)
    with pytest.raises(TypeError, match="axis must be None .per-tensor. or an int"):
        qlab.qparams_from_range(-torch.ones(3), torch.ones(3), axis=axis)


def test_qparams_per_tensor_takes_no_axis():
    with pytest.raises(ValueError, match="axis=1 needs a 1-d .per-channel. scale"):
        QParams(0.1, 0, qlab.int8, -128, 127, axis=1)


@pytest.mark.parametrize(
    "scale,zp,match",
    [
        ("0.1", 0, "scale must be a number or a float tensor, got str"),
        (True, 0, "scale must be a number or a float tensor, got bool"),
        (torch.tensor(1), 0, "scale must be a number or a float tensor, got dtype torch.int64"),
        (0.1, 0.5, "zero_point must be an int or an integer tensor, got float"),
        (0.1, torch.tensor(0.0), "zero_point must be an int or an integer tensor, got dtype torch.float32"),
        (0.1, torch.tensor(True), "zero_point must be an int or an integer tensor, got dtype torch.bool"),
    ],
)
def test_qparams_field_types(scale, zp, match):
    with pytest.raises(TypeError, match=match):
        QParams(scale, zp, qlab.uint8, 0, 255)


def test_qparams_qdtype_must_be_a_qdtype():
    with pytest.raises(TypeError, match="qdtype must be a qlab QDType"):
        QParams(0.1, 0, torch.quint8, 0, 255)


# -- ops ------------------------------------------------------------------------------------------
def test_dequantize_codes_outside_the_grid():
    """200 on an int4 grid gave 26.8."""
    qp = qlab.qparams_from_range(-1.0, 1.0, qlab.int4)
    match = r"codes from 0 to 200, outside the grid \[qmin, qmax\] = \[-8, 7\]"
    with pytest.raises(ValueError, match=match):
        qlab.dequantize(torch.tensor([0, 200]), qp)


def test_dequantize_empty_codes():
    qp = qlab.qparams_from_range(-1.0, 1.0, qlab.int4)
    assert qlab.dequantize(torch.empty(0, dtype=torch.int8), qp).shape == (0,)


def test_dequantize_rejects_bool():
    with pytest.raises(TypeError, match="q must be an integer tensor .from qlab.quantize., got torch.bool"):
        qlab.dequantize(torch.tensor([True, False]), qlab.qparams_from_range(-1.0, 1.0))


@pytest.mark.parametrize("qp", [None, (0.1, 0), 0.1])
def test_dequantize_wants_qparams(qp):
    """dequantize(q, None) raised AttributeError."""
    with pytest.raises(TypeError, match=r"qp must be QParams \(from qlab.qparams_from_range\)"):
        qlab.dequantize(torch.tensor([1, 2]), qp)


@pytest.mark.parametrize("axis", ["0", 0.0, 1.5, True])
def test_axis_must_be_an_int(axis):
    qp = qlab.qparams_from_range(-torch.ones(3), torch.ones(3))
    x = torch.ones(3, 4)
    for fn, arg in ((qlab.quantize, x), (qlab.fake_quantize, x), (qlab.dequantize, qlab.quantize(x, qp))):
        with pytest.raises(TypeError, match="axis must be None or an int"):
            fn(arg, qp, axis=axis)


def test_quantize_float64_beyond_float32_saturates():
    """1e300 is beyond every grid: it lands on the end of the grid, as any value beyond the range."""
    qp = qlab.qparams_from_range(-1.0, 1.0)
    x = torch.tensor([-1e300, 1e300, 0.5], dtype=torch.float64)
    assert qlab.quantize(x, qp).tolist() == [0, 255, qlab.quantize(torch.tensor([0.5]), qp).item()]
    y = qlab.fake_quantize(x, qp)
    assert y.dtype == torch.float64 and torch.isfinite(y).all()


def test_fake_quantize_output_that_overflows_float16():
    """The grid level nearest 65504 is 65882 here, beyond float16's largest value."""
    qp = qlab.qparams_from_range(-1e5, 1e5, qlab.int8, symmetric=True)
    with pytest.raises(ValueError, match=r"output overflows torch.float16.*65504.*pass x as float32"):
        qlab.fake_quantize(torch.tensor([65504.0], dtype=torch.float16), qp)
    y = qlab.fake_quantize(torch.tensor([65504.0]), qp)  # fine in float32
    assert torch.isfinite(y).all()


# -- observers: state_dict ------------------------------------------------------------------------
def saved(obs, x=None):
    """obs's state_dict after one batch, through torch.save / torch.load(weights_only=True)."""
    obs(torch.randn(4, 3) if x is None else x)
    buf = io.BytesIO()
    torch.save(obs.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_per_channel_state_into_per_tensor_observer():
    """It used to load, and the per-tensor observer then returned per-channel qparams."""
    state = saved(MinMaxObserver(axis=0))
    match = r"MinMaxObserver\(axis=0\) into MinMaxObserver\(axis=None\).*same class, axis and bins"
    with pytest.raises(ValueError, match=match):
        MinMaxObserver().load_state_dict(state)


def test_axis_0_state_into_axis_1_observer():
    state = saved(PercentileObserver(axis=0, bins=64), torch.randn(3, 3))
    match = r"PercentileObserver\(axis=0, bins=64\) into PercentileObserver\(axis=1, bins=64\)"
    with pytest.raises(ValueError, match=match):
        PercentileObserver(axis=1, bins=64).load_state_dict(state)


def test_64_bin_histogram_into_2048_bin_observer():
    """It used to load and give zero point 255."""
    state = saved(HistogramObserver(bins=64))
    match = r"HistogramObserver\(axis=None, bins=64\) into HistogramObserver\(axis=None, bins=2048\)"
    with pytest.raises(ValueError, match=match):
        HistogramObserver().load_state_dict(state)


def test_entropy_state_into_percentile_observer():
    """Same buffers, different meaning: EntropyObserver histograms |x| over [0, max|x|]."""
    state = saved(EntropyObserver(bins=64))
    with pytest.raises(ValueError, match=r"EntropyObserver\(axis=None, bins=64\) into PercentileObserver"):
        PercentileObserver(bins=64).load_state_dict(state)


def test_state_shape_mismatch_fails_at_load():
    """A hand-edited state whose shapes disagree failed only later, in qparams(), with a reshape error."""
    state = saved(PercentileObserver(axis=0, bins=64), torch.randn(3, 5))
    state["histogram"] = torch.zeros(4, 64)
    match = r"cannot load buffers of shapes .*'histogram': \(4, 64\).*'histogram': \(3, 64\)"
    with pytest.raises(ValueError, match=match):
        PercentileObserver(axis=0, bins=64).load_state_dict(state)
    state = saved(MinMaxObserver())
    state["min_val"] = torch.zeros(3)
    state["max_val"] = torch.ones(3)
    match = r"into MinMaxObserver\(axis=None\): its min_val and max_val are 0-d"
    with pytest.raises(ValueError, match=match):
        MinMaxObserver().load_state_dict(state)


def test_state_error_names_the_submodule():
    state = torch.nn.Sequential(MinMaxObserver(axis=0)).state_dict()
    with pytest.raises(ValueError, match=r"^0: cannot load the state of MinMaxObserver\(axis=0\)"):
        torch.nn.Sequential(MinMaxObserver()).load_state_dict(state)


def test_state_with_the_same_settings_loads():
    a = PercentileObserver(axis=1, bins=64, percentile=99.0)
    state = saved(a, torch.randn(5, 3))
    b = PercentileObserver(axis=1, bins=64, percentile=99.0)
    b.load_state_dict(state)
    assert torch.equal(a.qparams().scale, b.qparams().scale)
    assert state["_extra_state"] == {"observer": "PercentileObserver", "axis": 1, "bins": 64}


# -- observers: values near and beyond float32's limit -----------------------------------------------
def test_percentile_observer_at_1e35():
    """torch.histc overflowed: the range came out as (-1e36, -9.99e35)."""
    x = torch.linspace(-1e35, 1e35, 10_001)
    obs = PercentileObserver(percentile=99.0)
    obs(x)
    lo, hi = obs.calibrated_range()
    width = 2e35 / obs.bins
    assert lo.item() == pytest.approx(-0.98e35, abs=width) and hi.item() == pytest.approx(0.98e35, abs=width)
    full = PercentileObserver(percentile=100.0)
    full(x)
    assert [v.item() for v in full.calibrated_range()] == [x.min().item(), x.max().item()]


@pytest.mark.parametrize("cls", CLIPPING)
def test_clipping_observers_scale_with_the_data(cls):
    """x and x * 2**100 choose the same range up to the factor 2**100 (exact in float)."""
    x = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    small, big = cls(bins=256), cls(bins=256)
    small(x)
    big(x * 2.0**100)
    for a, b in zip(small.calibrated_range(), big.calibrated_range(), strict=True):
        assert b.item() == a.item() * 2.0**100


@pytest.mark.parametrize("cls", ALL)
def test_observers_at_3e38(cls):
    """±3e38: the symmetric int8 grid works; the affine grid would need a 6e38-wide range, which
    used to give scale = inf (MinMax, Entropy) or "contains NaN or Inf" (Histogram, MSE)."""
    x = torch.tensor([-3e38, 1.0, 3e38])
    sym = cls(qdtype=qlab.int8, symmetric=True)
    sym(x)
    assert torch.isfinite(sym.qparams().scale).all()
    affine = cls()
    affine(x)
    with pytest.raises(ValueError, match=r"min_val=.*max_val=.*too wide.*width must fit float32"):
        affine.qparams()


@pytest.mark.parametrize("cls", ALL)
def test_observers_float64_beyond_float32(cls):
    """A finite 1e300 was reported as "-inf"."""
    obs = cls()
    with pytest.raises(ValueError, match=r"float64 values up to \|x\| = 1e\+300, beyond float32"):
        obs(torch.tensor([1e300, 2.0], dtype=torch.float64))
    assert not obs.has_data()


def test_moving_average_across_float32():
    """min + c * (batch_min - min) overflows when min = -3e38 and batch_min = 3e38."""
    obs = MovingAverageMinMaxObserver(averaging_constant=0.5)
    obs(torch.tensor([-3e38]))
    obs(torch.tensor([3e38]))
    assert obs.min_val.item() == 0.0 and obs.max_val.item() == 0.0


def test_calibrated_range_without_data():
    with pytest.raises(ValueError, match=r"seen no data yet; call it on calibration batches"):
        MinMaxObserver().calibrated_range()


# -- metrics ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [metrics.mse, metrics.sqnr, metrics.cosine])
def test_metrics_on_empty_tensors(fn):
    """sqnr(empty, empty) was inf and mse nan."""
    with pytest.raises(ValueError, match="x and y are empty; an error needs at least one value"):
        fn(torch.empty(0), torch.empty(0))


@pytest.mark.parametrize("fn", [metrics.mse, metrics.sqnr, metrics.cosine])
def test_metrics_accept_arrays_and_lists(fn):
    x, y = [1.0, -2.0, 3.0], [1.1, -2.0, 2.5]
    expected = fn(torch.tensor(x), torch.tensor(y))
    assert fn(np.array(x), np.array(y)) == pytest.approx(expected, rel=1e-6)
    assert fn(x, y) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("bad", ["abc", None, {"a": 1}, [[1.0, 2.0], [3.0]]])
def test_metrics_refuse_what_is_not_numbers(bad):
    with pytest.raises(TypeError, match="x must be a tensor, numpy array or list of numbers"):
        metrics.sqnr(bad, torch.ones(2))


def test_metrics_shape_mismatch_and_nan():
    with pytest.raises(ValueError, match=r"x and y must have the same shape, got \(2, 3\) and \(6,\)"):
        metrics.mse(torch.ones(2, 3), torch.ones(6))
    with pytest.raises(ValueError, match="x and y must be finite"):
        metrics.sqnr(torch.tensor([1.0, math.nan]), torch.ones(2))


def test_entropy_observer_on_one_subnormal_value_gives_a_range():
    """Found by hypothesis: T = kept * max|x| / bins underflowed to 0 below min_val."""
    obs = qlab.observers.EntropyObserver(qdtype=qlab.uint8)
    obs(torch.tensor([8.407790785948902e-45]))
    lo, hi = obs.calibrated_range()
    assert lo <= hi
    assert obs.qparams().scale == qlab.EPS
