"""Evaluation: retrieval and zero-shot metrics (plain torch functions) and the loop that embeds a stream and scores it.

Training validation (issue 4) and the benchmark commands (issue 5) both go through `evaluate_clap` or, for
embeddings they already hold, through the metric functions directly.
"""

from .evaluate import DEFAULT_PROMPT, embed_audio_batches, embed_texts, evaluate_clap
from .metrics import A2T_MAP_VARIANTS, chance_levels, retrieval_metrics, zero_shot_accuracy

__all__ = [
    "A2T_MAP_VARIANTS",
    "DEFAULT_PROMPT",
    "chance_levels",
    "embed_audio_batches",
    "embed_texts",
    "evaluate_clap",
    "retrieval_metrics",
    "zero_shot_accuracy",
]
