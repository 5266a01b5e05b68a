"""MiniLM (all-MiniLM-L6-v2) as a sentence encoder, for lessons 03, 06 and 07.

    encode(model, sentences)              mean-pooled, normalised sentence embeddings
    embedding_quality(ref, emb)           cosine to the fp32 embeddings, and neighbour agreement
    nearest_neighbours(emb)               each sentence's nearest other (by cosine)
    minilm_batches(model, sentences)      tokenized batches, for timing and calibration
    held_out_sentences(n, exclude)        n sentences kept apart from `exclude` (calibration vs scoring)"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .check import check_int
from .data import sentences
from .torch_ao import engine


def check_model(model) -> None:
    if not isinstance(model, nn.Module) or not callable(getattr(model, "encode", None)):
        raise TypeError("model must be a sentence encoder (an nn.Module with .encode, e.g. "
                        f"qlab.lab.kit.models.load_minilm()), got {type(model).__name__}")


def check_sentences(sentences, name: str = "sentences") -> list[str]:
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(sentences).__name__}")
    if not sentences or not all(isinstance(s, str) for s in sentences):
        raise ValueError(f"{name} must be a non-empty list of strings")
    return list(sentences)


def check_batch_size(batch_size) -> int:
    check_int("batch_size", batch_size, 1, what="an int >= 1")
    return batch_size


def encode(model, sentences: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Sentence embeddings [n, 384] (unit length for MiniLM): model.encode under inference_mode.

    Deterministic: sentence-transformers sorts the sentences by length and cuts batches of
    batch_size, so the same list always gives the same batches (and, for a dynamic int8 model,
    the same activation grids).
    """
    check_model(model)
    sentences = check_sentences(sentences)
    with torch.inference_mode(), engine():
        out = model.encode(sentences, batch_size=check_batch_size(batch_size),
                           convert_to_tensor=True, show_progress_bar=False)
    return out.float().cpu().clone()


def check_embeddings(e, name: str) -> torch.Tensor:
    if not isinstance(e, torch.Tensor) or e.dim() != 2 or not e.is_floating_point():
        got = f"shape {tuple(e.shape)}" if isinstance(e, torch.Tensor) else type(e).__name__
        raise TypeError(f"{name} must be a float tensor [n, dim], got {got}")
    if e.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 sentences (a nearest neighbour), got {e.shape[0]}")
    if not torch.isfinite(e).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return e.float()


def nearest_neighbours(embeddings: torch.Tensor) -> torch.Tensor:
    """For each sentence i, argmax_{j != i} cos(e_i, e_j): its closest other sentence."""
    e = torch.nn.functional.normalize(check_embeddings(embeddings, "embeddings"), dim=1)
    sim = e @ e.T
    sim.fill_diagonal_(-float("inf"))
    return sim.argmax(dim=1)


def embedding_quality(reference: torch.Tensor, embeddings: torch.Tensor) -> dict[str, float]:
    """How close int8 embeddings are to the fp32 ones, sentence by sentence:

        cosine       = mean_i cos(ref_i, emb_i)
        nn_agreement = share of i whose nearest other sentence (by cosine) is the same in both
    """
    ref, emb = check_embeddings(reference, "reference"), check_embeddings(embeddings, "embeddings")
    if ref.shape != emb.shape:
        raise ValueError(f"reference and embeddings must have the same shape, got "
                         f"{tuple(ref.shape)} and {tuple(emb.shape)}")
    cos = torch.nn.functional.cosine_similarity(ref, emb, dim=1).mean().item()
    agree = (nearest_neighbours(ref) == nearest_neighbours(emb)).float().mean().item()
    return {"cosine": cos, "nn_agreement": agree}


def minilm_batches(model, sentences: Sequence[str], batch_size: int = 32) -> list[dict]:
    """The sentences tokenized into batches of batch_size, each ready for model(batch): for
    calibration (SmoothQuant) and for timing the model without the tokenizer."""
    check_model(model)
    sentences, batch_size = check_sentences(sentences), check_batch_size(batch_size)
    prep = model.preprocess if hasattr(model, "preprocess") else model.tokenize
    return [prep(sentences[i:i + batch_size]) for i in range(0, len(sentences), batch_size)]


def held_out_sentences(n: int, exclude: Sequence[str]) -> list[str]:
    """The first n corpus sentences that are not in `exclude`: calibration data kept apart from
    the sentences a configuration is scored on."""
    excluded = set(exclude)
    rest = [s for s in sentences(None) if s not in excluded]
    check_int("n", n, 1, len(rest), what=f"an int in 1..{len(rest)}")
    return rest[:n]
