"""Window mode: a long file cut into consecutive windows of the model's clip length (10 s), each embedded as a clip.

Shapes: M windows, E joint embedding, K top results.
"""

from __future__ import annotations

import numpy as np
import torch


def split_windows(
    audio: np.ndarray, window: int, sample_rate: int
) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """Consecutive windows of `window` samples (the last one may be shorter) and their (start, end) in seconds.

    Each window is a view of `audio`; the feature extractor fills a short last window as it fills any short clip.
    """
    starts = range(0, max(len(audio), 1), window)
    clips = [audio[s : s + window] for s in starts]
    bounds = [(s / sample_rate, min(s + window, len(audio)) / sample_rate) for s in starts]
    return clips, bounds


def best_window_per_file(
    scores: torch.Tensor, window_rows: torch.Tensor, n_files: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each file, its best window score and that window's position in the flat window list.

    `scores` (M,) and `window_rows` (M,); returns (N,) scores (-inf for a file without windows) and (N,) indices.
    """
    best = torch.full((n_files,), -torch.inf, dtype=scores.dtype)
    best.scatter_reduce_(0, window_rows, scores, reduce="amax")
    # Among a file's windows, the first one reaching its maximum (ties go to the earlier window).
    is_best = scores == best[window_rows]
    position = torch.arange(scores.shape[0])
    first = torch.full((n_files,), scores.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, window_rows[is_best], position[is_best], reduce="amin")
    return best, first
