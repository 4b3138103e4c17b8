"""Evaluation: retrieval and zero-shot metrics (plain torch functions), `evaluate_clap` that scores a stream of
examples, and the paper's benchmarks (`tasks.py`). Embedding itself is `clapforge.inference`'s.

Training validation and the `eval` command both go through `evaluate_clap` or, for embeddings they already hold,
through the metric functions directly.
"""

from .evaluate import evaluate_clap
from .metrics import A2T_MAP_VARIANTS, chance_levels, retrieval_metrics, zero_shot_accuracy

__all__ = [
    "A2T_MAP_VARIANTS",
    "chance_levels",
    "evaluate_clap",
    "retrieval_metrics",
    "zero_shot_accuracy",
]
