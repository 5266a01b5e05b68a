"""PyTorch as on an Apple-silicon or other ARM laptop: qnnpack is its only int8 engine.

Put this folder on PYTHONPATH (`make test-qnnpack` does) and every Python process started with it,
Jupyter kernels included, sees torch.backends.quantized.supported_engines == ["none", "qnnpack"],
starts on qnnpack, and raises torch's own error when told to use any other engine, exactly as
PyTorch does on ARM ("quantized engine X86 is not supported"). The kernels themselves are this
machine's: qnnpack's are what they would be on ARM; what this does not show is ARM's speed.
"""

import torch

_ARM_ENGINES = (0, 2)  # c10's QEngine ids: none, qnnpack (torch/backends/quantized/__init__.py)
_NAMES = {0: "NoQEngine", 1: "FBGEMM", 2: "QNNPACK", 3: "ONEDNN", 4: "X86"}
_set_qengine = torch._C._set_qengine


def _set_arm_qengine(qengine: int) -> None:
    if qengine not in _ARM_ENGINES:
        raise RuntimeError(f"quantized engine {_NAMES.get(qengine, qengine)} is not supported")
    _set_qengine(qengine)


torch._C._supported_qengines = lambda: list(_ARM_ENGINES)
torch._C._set_qengine = _set_arm_qengine
_set_qengine(2)
