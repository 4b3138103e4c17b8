"""The functional form of the embedding engine, for code that holds a bare model: each call wraps the model in an
`EmbeddingEngine` (`inference.engine`), which does the work. New code uses the engine directly.

Shapes: N clips, N_t texts, B batch, E joint embedding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from .compile import compile_audio_tower
from .engine import CPU_CLIPS_PER_CALL, EmbeddingEngine, evaluating

__all__ = ["CPU_CLIPS_PER_CALL", "compile_audio_tower", "embed_audio_batches", "embed_texts", "evaluating"]


def _precision(autocast_dtype: torch.dtype | None) -> str:
    if autocast_dtype not in (None, torch.bfloat16):
        raise ValueError(f"autocast_dtype must be None or torch.bfloat16, got {autocast_dtype}")
    return "fp32" if autocast_dtype is None else "bf16"


def embed_audio_batches(
    model: torch.nn.Module,
    feature_extractor: Any,
    clips: Iterable[np.ndarray | torch.Tensor],
    batch_size: int = 16,
    sampling_rate: int = 48000,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(N, E) float32 audio embeddings on the model's device: `EmbeddingEngine.embed_audio` at fp32, or bf16 with
    `autocast_dtype=torch.bfloat16`."""
    engine = EmbeddingEngine.wrap(model, feature_extractor, precision=_precision(autocast_dtype))
    return engine.embed_audio(clips, sampling_rate, batch_size)


def embed_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Iterable[str],
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(N_t, E) float32 text embeddings on the model's device: `EmbeddingEngine.embed_text`."""
    return EmbeddingEngine.wrap(model, tokenizer, precision=_precision(autocast_dtype)).embed_text(texts, batch_size)

