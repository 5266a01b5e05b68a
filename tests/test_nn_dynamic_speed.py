"""What makes qlab's dynamic path fast, checked without a stopwatch where possible:
the weight's derived tensors are made once, the LSTM prepares its weights once per forward
(not once a step), and the float64 fma needs no round-to-odd on ordinary layers. One timed
check (CPU time, so a busy machine does not disturb it): faster than fp32 at MiniLM's size.
"""

import time

import pytest
import torch
from torch import nn

import qlab
import qlab.nn.dynamic as dynamic


@pytest.fixture
def counted(monkeypatch):
    """Counts calls of the named functions of qlab.nn.dynamic."""
    calls = {}

    def count(name):
        real = getattr(dynamic, name)
        calls[name] = 0

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(dynamic, name, wrapper)

    def start(*names):
        for name in names:
            count(name)
        return calls

    return start


def test_weight_is_prepared_once(counted):
    calls = counted("prepare_weight")
    m = qlab.quantize_dynamic(nn.Linear(32, 16))
    for _ in range(5):
        m(torch.randn(4, 32))
    assert calls["prepare_weight"] == 1


def test_lstm_prepares_each_weight_once_not_each_step(counted):
    calls = counted("prepare_weight", "choose_grid")
    lstm = qlab.quantize_dynamic(nn.LSTM(8, 16, num_layers=2))
    for _ in range(3):
        lstm(torch.randn(20, 4, 8))
    assert calls["prepare_weight"] == 4  # W_ih and W_hh of 2 layers
    assert calls["choose_grid"] == 3 * 2 * (1 + 20)  # a fresh grid per layer input and per step


def test_ordinary_layers_need_no_round_to_odd(counted):
    """float64 holds float32(acc) * m + b exactly for these layers: one rounding is the fma."""
    calls = counted("_fma_round_to_odd")
    torch.manual_seed(0)
    for per_channel in (False, True):
        for k, n in [(384, 384), (384, 1536), (1536, 384)]:
            qlab.quantize_dynamic(nn.Linear(k, n), per_channel=per_channel)(torch.randn(64, k))
        qlab.quantize_dynamic(nn.LSTM(64, 192, num_layers=2), per_channel=per_channel)(torch.randn(16, 8, 64))
    assert calls["_fma_round_to_odd"] == 0


def _cpu_ms(f, rounds=5, reps=5):
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(reps):
            f()
        best = min(best, (time.process_time() - t0) / reps * 1e3)
    return best


def test_faster_than_fp32_at_minilm_size():
    """A MiniLM feed-forward layer (384 -> 1536) on 32 sentences x 25 tokens, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lin = nn.Linear(384, 1536)
        q = qlab.quantize_dynamic(lin)
        x = torch.randn(800, 384)
        with torch.inference_mode():
            fp32, int8 = _cpu_ms(lambda: lin(x)), _cpu_ms(lambda: q(x))
    finally:
        torch.set_num_threads(threads)
    assert int8 < fp32, f"qlab dynamic {int8:.2f} ms, fp32 {fp32:.2f} ms"
