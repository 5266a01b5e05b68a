"""torch.ao's engine and its notices: the one place the classroom sets or silences them.

    ENGINE            the int8 engine the lessons run and time torch.ao's kernels on: the best this
                      machine has (x86, else fbgemm, else qnnpack), or $QLAB_ENGINE; chosen once, here
    PARITY_ENGINE     the engine qlab's integer path equals bit for bit ("fbgemm"), None where PyTorch
                      has no fbgemm (ARM: Apple silicon and other ARM laptops have qnnpack only)
    X86               True when ENGINE is an x86 engine: x86-only facts (VNNI, reduce_range) apply
    use_engine()      set torch's engine to ENGINE (a lesson's first cell) and say which one it is
    differences()     what the lessons do differently on this engine, one line each (qlab doctor)
    note(text)        print an x86-only fact's counterpart, on a machine whose engine is not x86
    parity_note(a, b) on a machine without fbgemm, print how far qlab's outputs are from torch.ao's
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
import os
import warnings
from collections.abc import Iterator

import torch

from qlab.lab.kit.check import check_choice

#: the engines the classroom uses, best first: x86 (fbgemm, with oneDNN for some shapes), fbgemm
#: (x86 CPUs), qnnpack (ARM CPUs: PyTorch on Apple silicon and other ARM laptops has only this one)
PREFERENCE = ("x86", "fbgemm", "qnnpack")


def choose_engine(asked: str | None = None, supported: list[str] | None = None) -> str:
    """The int8 engine to use: `asked` ($QLAB_ENGINE) if set, else the first of PREFERENCE that
    PyTorch has here. A name PyTorch does not have here is refused with the ones it has."""
    supported = torch.backends.quantized.supported_engines if supported is None else supported
    usable = [name for name in PREFERENCE if name in supported]
    if asked:
        return check_choice("QLAB_ENGINE", asked, usable)
    if not usable:
        raise RuntimeError(f"PyTorch here has none of the int8 engines the lessons use {PREFERENCE} "
                           f"(it has {supported}); install a standard PyTorch build")
    return usable[0]


ENGINE = choose_engine(os.environ.get("QLAB_ENGINE", "").strip() or None)
PARITY_ENGINE = "fbgemm" if "fbgemm" in torch.backends.quantized.supported_engines else None
X86 = ENGINE in ("x86", "fbgemm")

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
def engine(name: str | None = ENGINE) -> Iterator[None]:
    """Run the block on torch.ao's `name` engine ("x86", "fbgemm", "qnnpack"), quietly; the engine
    that was set before is restored afterwards. None (PARITY_ENGINE where there is no fbgemm):
    the block runs on ENGINE."""
    name = ENGINE if name is None else name
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


def use_engine(name: str | None = ENGINE) -> str:
    """Set torch's int8 engine for the lesson (once, in its first cell) and return a line naming it:
    ENGINE, or PARITY_ENGINE for a lesson that compares qlab with torch.ao bit for bit (None there
    means this machine has no fbgemm: ENGINE)."""
    name = ENGINE if name is None else check_choice("engine", name, PREFERENCE)
    torch.backends.quantized.engine = name
    if name != ENGINE:
        why = f"the engine qlab's integer path equals bit for bit; the fastest here is {ENGINE}"
    elif os.environ.get("QLAB_ENGINE", "").strip():
        why = "chosen by $QLAB_ENGINE"
    else:
        why = "the best int8 engine PyTorch has on this machine"
    line = f"int8 engine: {name} ({why})"
    if not X86:
        line += ("; x86-only facts in the lessons (VNNI, reduce_range, bit-exact parity with "
                 "fbgemm) are marked as such, and the lessons say what differs here")
    return line


def differences() -> list[str]:
    """What the lessons do differently on this machine's engine, one line each (empty on x86)."""
    lines = []
    if PARITY_ENGINE is None:
        lines.append("no fbgemm engine: qlab's bit-exact parity with torch.ao (lessons 03-05) is "
                     "promised on fbgemm; here the lessons print how far qlab is from qnnpack's kernels")
    if not X86:
        lines += [
            f"int8 timings run on {ENGINE}'s kernels, not x86's (speed-ups differ; each timing says so)",
            "lesson 04 uses qnnpack's defaults: 8-bit activations (no reduce_range), per-tensor weights",
            "lesson 07's compiled PT2E int8 (X86InductorQuantizer, oneDNN kernels) is x86-only: skipped",
        ]
    return lines


#: what a lesson's speed section prints off x86 (note(SPEED)): its prose was measured on x86's kernels
SPEED = ("the text's speed figures come from x86's int8 kernels (fbgemm and oneDNN, with VNNI); qnnpack's "
         "are other kernels, so read this run's printed ratios, not the text's ranges")
#: what a lesson's accuracy section prints off x86 (note(FIGURES)), where the prose quotes x86's results
FIGURES = ("the text's accuracy figures are x86's (torch.ao's x86 default: 7-bit activations, per-channel "
           "weights, a float bias); the lines printed here come from qnnpack's defaults and may differ")


def note(text: str) -> None:
    """Print `text` on a machine whose int8 engine is not x86's (an ARM laptop: qnnpack), where a
    fact the lesson states for x86 differs; print nothing on x86 (the lesson's text holds there)."""
    if not X86:
        print(f"on this machine ({ENGINE}): {text}")


def parity_note(ours: torch.Tensor, theirs: torch.Tensor, step: float | None = None) -> None:
    """Where the lessons' bit-exact comparisons cannot run on fbgemm (no fbgemm here), print how far
    qlab's outputs are from torch.ao's on this engine: the share that differs and by how much (in
    output steps when `step`, the outputs' scale, is given). Print nothing where fbgemm exists."""
    if PARITY_ENGINE is not None:
        return
    diff = (ours.detach().float() - theirs.detach().float()).abs()
    share = float((diff > 0).float().mean()) if diff.numel() else 0.0
    far = (f"at most {int((diff / step).round().max())} output step(s)" if step
           else f"at most {float(diff.max()):.2g}")
    how = f"{share:.2%} of values differ from torch.ao's {ENGINE} kernels, by {far}" if share else (
        f"no value differs from torch.ao's {ENGINE} kernels")
    print(f"on this machine ({ENGINE}, no fbgemm): {how}; qlab equals torch.ao bit for bit on fbgemm "
          "(x86 CPUs), tested there")


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
