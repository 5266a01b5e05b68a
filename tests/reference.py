"""torch.ao, the reference the parity tests compare qlab with, set up once."""

import contextlib

import torch
import torch.ao.quantization as tq

import qlab

#: qlab's grid -> torch's quantized dtype
TORCH_DTYPE = {qlab.uint8: torch.quint8, qlab.int8: torch.qint8}

#: torch.ao's qconfig that matches qlab.minmax_qconfig: min-max uint8 activations on 0..127
#: (reduce_range), per-channel symmetric int8 weights.
TORCH_QCONFIG = tq.QConfig(
    activation=tq.MinMaxObserver.with_args(reduce_range=True),
    weight=tq.default_per_channel_weight_observer,
)


@contextlib.contextmanager
def engine(name: str):
    """torch's quantized engine set to `name` ("fbgemm", "x86", ...) inside the block."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = old
