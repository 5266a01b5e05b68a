"""torch.ao's engine and its notices: the one place the classroom sets or silences them.

    ENGINE            the engine the lessons run and time torch.ao's int8 kernels on ("x86")
    PARITY_ENGINE     the engine qlab's float-bias rule equals bit for bit ("fbgemm", lesson 04)
    quiet()           a block with torch.ao's expected notices silenced (NOTICES)
    engine(name)      a block run on one of torch.ao's engines, quietly; the old engine restored
    quiet_logs()      silence log lines not meant for students (torchao's import notice, dynamo)

Why silence anything: torch.ao's eager quantization is deprecated upstream in favour of torchao,
and it is still the reference qlab is checked against (and its x86 kernels the fast int8 path),
so its deprecation notices are expected here. Only those are silenced, and only inside a block.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import torch

ENGINE = "x86"  # torch.ao's int8 kernels on x86 CPUs (fbgemm, with onednn for some shapes)
PARITY_ENGINE = "fbgemm"  # the kernels qlab's float-bias rule equals bit for bit

#: the notices torch.ao (and inductor, compiling its int8 graphs) gives here: expected, not for students
NOTICES = (
    {"message": ".*quantiz.*deprecated"},
    {"message": ".*torch.ao.*deprecated"},
    {"category": DeprecationWarning, "module": "torch.ao"},
    {"category": DeprecationWarning, "message": ".*(quantiz|observer|qconfig|fuse)"},
    {"message": "Please use quant_min and quant_max"},
    {"message": ".*reduce_range will be deprecated"},
    # torch.ao converting a FloatFunctional that never ran (a MobileNetV2 block without a skip)
    {"message": "must run observer before calling calculate_qparams"},
    # inductor lowering torch.ao / PT2E int8 convolutions copies a tensor with torch.tensor(tensor)
    # (torch/_inductor/mkldnn_lowerings.py): a notice for torch's own developers, not for students
    {"message": "To copy construct from a tensor", "module": "torch._inductor"},
)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Run the block with the expected notices (NOTICES) silenced; nothing else."""
    with warnings.catch_warnings():
        for notice in NOTICES:
            warnings.filterwarnings("ignore", **notice)
        yield


@contextlib.contextmanager
def engine(name: str = ENGINE) -> Iterator[None]:
    """Run the block on torch.ao's `name` engine ("x86", "fbgemm", "qnnpack"), quietly; the engine
    that was set before is restored afterwards."""
    if name not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"torch has no {name!r} quantized engine here (it has "
                           f"{torch.backends.quantized.supported_engines})")
    old = torch.backends.quantized.engine
    with quiet():
        torch.backends.quantized.engine = name
        try:
            yield
        finally:
            torch.backends.quantized.engine = old


def quiet_logs() -> None:
    """Silence log lines that are not for students: torch's "No CUDA runtime is found" (printed on
    the first compile on a CPU-only machine) and the notice torchao's import logs about how it
    registers an Enum with torch.compile (both loggers set to ERROR); and dynamo's warnings (its
    level set to ERROR with torch._logging.set_logs), which here are about torch.ao's quantized
    tensors it cannot trace ("quantized nyi in meta tensors", graph breaks at Tensor.item()):
    lesson 07 says so in its text."""
    for name in ("torch.utils.cpp_extension", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch._logging.set_logs(dynamo=logging.ERROR)
