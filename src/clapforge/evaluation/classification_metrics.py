"""Supervised classification metrics as plain torch functions: accuracy, multi-label mAP and mAUC.

Shapes: N clips, K classes. Scores are logits or probabilities (any monotone transform gives the same values).

Conventions:
- mAP is the mean over classes of average precision, computed as scikit-learn's `average_precision_score` does it:
  AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, so tied scores form one threshold (no
  optimistic or pessimistic order among ties). LAION's `--lp-metrics map` calls exactly that function.
- mAUC is the mean over classes of the ROC AUC, the Mann-Whitney statistic with ties counted one half (equal to
  `roc_auc_score`).
- A class with no positive clip in the evaluation set has no defined AP or AUC (scikit-learn returns NaN and a
  warning, which would make the mean NaN). Such classes are LEFT OUT of both means and listed by name (or index) in
  `classes_without_positives`; a class whose every clip is positive has an AP (1.0) but no AUC, so it is left out of
  mAUC only and listed in `classes_without_negatives`. `classes_scored_map`/`classes_scored_mauc` say how many
  classes each mean covers. If no class can be scored the mean is None, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy: scores (N, K), targets (N,) class indices."""
    if scores.ndim != 2 or targets.shape != scores.shape[:1]:
        raise ValueError(
            f"expected scores (N, K) and targets (N,), got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    if scores.shape[0] == 0:
        raise ValueError("accuracy of an empty evaluation set")
    return (scores.argmax(dim=1).cpu() == targets.cpu().long()).double().mean().item()


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """AP of one class: scores (N,), positives (N,) bool with at least one True."""
    scores, positives = scores.double().cpu(), positives.bool().cpu()
    n_pos = int(positives.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive")
    order = torch.argsort(scores, descending=True, stable=True)
    scores, hits = scores[order], positives[order].double()
    tp, seen = hits.cumsum(0), torch.arange(1, len(hits) + 1, dtype=torch.float64)
    # The last position of each run of equal scores is a threshold: ties enter the ranking together.
    last = torch.ones(len(scores), dtype=torch.bool)
    last[:-1] = scores[1:] != scores[:-1]
    tp, seen = tp[last], seen[last]
    precision, recall = tp / seen, tp / n_pos
    recall_step = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((recall_step * precision).sum())


def roc_auc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """ROC AUC of one class (Mann-Whitney U / (P N), ties count 1/2): needs at least one positive and one negative."""
    scores, positives = scores.double().cpu(), positives.bool().cpu()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative")
    sorted_scores, order = torch.sort(scores, stable=True)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mid_ranks = ends - (counts.double() - 1) / 2  # 1-based average rank of each tie group
    ranks = torch.empty_like(scores)
    ranks[order] = mid_ranks[inverse]
    u = ranks[positives].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def multilabel_metrics(
    scores: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """mAP and mAUC over classes for scores (N, K) and multi-hot targets (N, K); see the module docstring."""
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"expected scores and targets of one shape (N, K), got {tuple(scores.shape)}, "
                         f"{tuple(targets.shape)}")
    names = list(class_names) if class_names is not None else list(range(scores.shape[1]))
    if len(names) != scores.shape[1]:
        raise ValueError(f"{len(names)} class names for {scores.shape[1]} classes")
    positives = targets.cpu() > 0.5
    aps, aucs, without_pos, without_neg = [], [], [], []
    for k in range(scores.shape[1]):
        column, hits = scores[:, k], positives[:, k]
        if not hits.any():
            without_pos.append(names[k])
            continue
        aps.append(average_precision(column, hits))
        if hits.all():
            without_neg.append(names[k])
            continue
        aucs.append(roc_auc(column, hits))
    return {
        "mAP": sum(aps) / len(aps) if aps else None,
        "mAUC": sum(aucs) / len(aucs) if aucs else None,
        "classes_scored_map": len(aps),
        "classes_scored_mauc": len(aucs),
        "classes_without_positives": without_pos,
        "classes_without_negatives": without_neg,
    }


def classification_metrics(
    scores: torch.Tensor, targets: torch.Tensor, multi_label: bool, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Validation metrics: {"accuracy"} for single-label (targets (N,)), mAP/mAUC (+ bookkeeping) for multi-label."""
    if multi_label:
        return multilabel_metrics(scores, targets, class_names)
    return {"accuracy": accuracy(scores, targets)}


__all__ = ["accuracy", "average_precision", "classification_metrics", "multilabel_metrics", "roc_auc"]
