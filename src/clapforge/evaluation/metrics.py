"""Retrieval and zero-shot metrics as plain torch functions, and their chance levels.

Shapes: N_a audio clips, N_t captions, K classes, E joint embedding, C the most captions any clip has.

Conventions shared by every function here:
- Similarity is cosine: embeddings are L2-normalised inside (in float32), so unnormalised inputs and any logit scale
  give the same ranks. Similarities and ranks are computed on the inputs' device, in chunks of queries; the small
  per-query values are averaged on the CPU in float64, and results are Python floats.
- Rank is 0-based and optimistic on ties: an item's rank is the number of items with a strictly higher similarity,
  so a relevant item tied with irrelevant ones counts as ranked ahead of them. R@k is "rank < k". Where a query has
  several relevant items (audio->text), they are placed as in a ranking that breaks ties in favour of relevant
  items and, among a clip's own tied captions, by caption order: a caption's position is (the number of other
  clips' captions scoring strictly higher) + (the number of the clip's own captions scoring strictly higher, or
  equal and earlier). That is its strict-count rank unless it ties with one of its own captions, and it keeps
  average precision <= 1 (two relevant captions tied at rank 0 occupy positions 0 and 1, not both 0). Random
  float embeddings do not tie; ties matter for hand-built cases and for collapsed (e.g. constant) models, where
  the optimistic rule makes scores an upper bound.

Protocol (LAION-CLAP `evaluate_clotho_audiocaps`, after Mei et al.; AudioCaps/Clotho with 5 captions per clip):
- text->audio: every caption is a query with exactly one relevant clip. R@k = fraction of captions whose clip
  ranks < k; mAP@10 = mean of 1/(rank+1) over captions, 0 when rank >= 10 (MRR@10, the DCASE task 6b metric).
- audio->text: every clip is a query whose relevant items are all of its captions. R@k = fraction of clips with
  at least one caption ranked < k; mAP@10 = mean over clips of average precision at 10.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Upper bound on the elements of the boolean comparison tensors built per chunk of queries (~32 MB of bools), so
# that memory stays flat for large galleries.
_CHUNK_ELEMENTS = 1 << 25

A2T_MAP_VARIANTS = ("sorted", "laion")


def retrieval_metrics(
    audio_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_audio: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    map_k: int = 10,
    a2t_map: str = "sorted",
) -> dict[str, float]:
    """Text->audio and audio->text retrieval: `t2a_R@{k}`, `t2a_mAP@{map_k}`, `a2t_R@{k}`, `a2t_mAP@{map_k}`.

    Args:
        audio_embeds: (N_a, E) one embedding per clip.
        text_embeds: (N_t, E) one embedding per caption.
        text_to_audio: (N_t,) integer, the index (into `audio_embeds`) of the clip each caption describes. A clip
            may have any number of captions; a clip with none is still a candidate for text->audio queries but is
            not an audio->text query (its precision is undefined), so audio->text averages over captioned clips.
        ks: the k of R@k.
        map_k: the cut-off of mAP (10 in LAION-CLAP and DCASE).
        a2t_map: how audio->text mAP@k is computed.
            `"sorted"` (default, correct): average precision at k. The clip's captions are taken in rank order;
            each one ranked < k at position p (0-based) adds precision (captions found so far) / (p + 1); the sum
            is divided by min(number of captions, k). At most 1.
            `"laion"`: the value LAION-CLAP's code publishes. Its docstring describes the sorted computation, but
            the code (`torch.where(stack([ranking] * 5) == gt)`) lists the captions' ranks in caption order and
            never sorts them, then sums i / (rank_i + 1) over the captions ranked < k (i = 1, 2, ... in that
            order) and divides by 5. Here the divisor is the clip's caption count, which is LAION's 5 under its
            5-caption protocol. Positions are the ones described above (LAION's argsort breaks ties arbitrarily,
            so only untied cases can be matched exactly). It can exceed 1, e.g. when a clip's later captions rank
            first.

    Returns:
        Python floats keyed `t2a_R@1`, ..., `t2a_mAP@10`, `a2t_R@1`, ..., `a2t_mAP@10`.
    """
    if a2t_map not in A2T_MAP_VARIANTS:
        raise ValueError(f"a2t_map must be one of {A2T_MAP_VARIANTS}, got {a2t_map!r}")
    audio, text = _normalised_pair(audio_embeds, text_embeds)
    n_audio, n_text = audio.shape[0], text.shape[0]
    text_to_audio = _check_targets(text_to_audio, n_text, n_audio, "text_to_audio").to(audio.device)

    out: dict[str, float] = {}
    t2a = _target_ranks(text, audio, text_to_audio).cpu()  # (N_t,)
    for k in ks:
        out[f"t2a_R@{k}"] = _mean(t2a < k)
    out[f"t2a_mAP@{map_k}"] = _mean(_reciprocal_rank_at(t2a, map_k))

    captions, valid = _captions_per_clip(text_to_audio, n_audio)  # (N_a, C) both
    captioned = valid.any(1)  # (N_a,)
    if not captioned.any():
        raise ValueError("no clip has a caption: audio->text retrieval is undefined")
    positions = _caption_positions(audio, text, text_to_audio, captions, valid)  # (N_a, C)
    positions, valid = positions[captioned].cpu(), valid[captioned].cpu()  # (N_a', C) both
    best = positions.min(1).values  # (N_a',) rank of the clip's best caption (padding is n_text, never the min)
    for k in ks:
        out[f"a2t_R@{k}"] = _mean(best < k)
    if a2t_map == "sorted":
        ap = _average_precision_at(positions, valid, map_k)
    else:
        ap = _laion_a2t_average_precision(positions, valid, map_k)
    out[f"a2t_mAP@{map_k}"] = _mean(ap)
    return out


def zero_shot_accuracy(
    audio_embeds: torch.Tensor,
    class_text_embeds: torch.Tensor,
    targets: torch.Tensor,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Zero-shot classification accuracy: `top{k}` = fraction of clips whose class ranks < k among the K prompts.

    Args:
        audio_embeds: (N, E) clip embeddings.
        class_text_embeds: (K, E) one text embedding per class (e.g. of "This is a sound of {label}.").
        targets: (N,) integer class index of each clip.
        ks: the k of top-k. A k larger than K is omitted from the result (every clip would count as correct, so the
            number would only mislead), e.g. K = 3 gives `top1` but no `top5`.

    Ties follow the module's optimistic rule: the true class's rank is the number of classes scoring strictly higher.
    """
    audio, classes = _normalised_pair(audio_embeds, class_text_embeds)
    n_classes = classes.shape[0]
    targets = _check_targets(targets, audio.shape[0], n_classes, "targets").to(audio.device)
    ranks = _target_ranks(audio, classes, targets).cpu()  # (N,)
    return {f"top{k}": _mean(ranks < k) for k in ks if k <= n_classes}


def chance_levels(
    *,
    text_to_audio: torch.Tensor | None = None,
    n_audio: int | None = None,
    n_classes: int | None = None,
    ks: Sequence[int] = (1, 5, 10),
    map_k: int = 10,
    zero_shot_ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Expected metric values of a model that ranks at random, keyed like `retrieval_metrics` / `zero_shot_accuracy`.

    Pass `text_to_audio` (N_t,) and `n_audio` for the retrieval keys, `n_classes` for the `top{k}` keys. Every value
    is exact for a uniformly random ranking without ties (the expectation over all orderings, not an estimate):
    - t2a R@k = min(k, N_a) / N_a; t2a mAP@k = (1 + 1/2 + ... + 1/min(k, N_a)) / N_a.
    - a2t R@k for a clip with c captions among N_t: 1 - C(N_t - c, k) / C(N_t, k) (hypergeometric: none of its
      captions in the top k), averaged over captioned clips.
    - a2t mAP@k (the sorted, correct AP): for a clip with c captions, position p holds a caption with probability
      c/N_t, and given that, the expected number of its captions at positions <= p is 1 + p (c - 1) / (N_t - 1), so
      E[AP@k] = sum_{p < min(k, N_t)} (c / N_t) (1 + p (c - 1) / (N_t - 1)) / (p + 1) / min(c, k); averaged over
      captioned clips. (Not the chance level of LAION's unsorted variant.)
    - top-k = min(k, K) / K, with k > K omitted as in `zero_shot_accuracy`.
    """
    out: dict[str, float] = {}
    if text_to_audio is not None:
        if n_audio is None:
            raise ValueError("chance_levels needs n_audio together with text_to_audio")
        text_to_audio = _check_targets(text_to_audio, text_to_audio.shape[0], n_audio, "text_to_audio")
        n_text = text_to_audio.shape[0]
        for k in ks:
            out[f"t2a_R@{k}"] = min(k, n_audio) / n_audio
        out[f"t2a_mAP@{map_k}"] = sum(1 / (p + 1) for p in range(min(map_k, n_audio))) / n_audio
        counts = [c for c in torch.bincount(text_to_audio.cpu(), minlength=n_audio).tolist() if c > 0]
        for k in ks:
            out[f"a2t_R@{k}"] = sum(1 - _none_in_top(n_text, c, k) for c in counts) / len(counts)
        out[f"a2t_mAP@{map_k}"] = sum(_random_average_precision(n_text, c, map_k) for c in counts) / len(counts)
    if n_classes is not None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        out.update({f"top{k}": k / n_classes for k in zero_shot_ks if k <= n_classes})
    return out


def _normalised_pair(queries: torch.Tensor, gallery: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected (N, E) and (M, E) embeddings, got {tuple(queries.shape)}, {tuple(gallery.shape)}")
    if queries.shape[0] == 0 or gallery.shape[0] == 0:
        raise ValueError(f"empty embeddings: {tuple(queries.shape)} and {tuple(gallery.shape)}")
    # float32 whatever the model's dtype: half-precision cosines tie far more often and would inflate scores.
    queries = F.normalize(queries.float(), dim=-1)
    gallery = F.normalize(gallery.float().to(queries.device), dim=-1)
    return queries, gallery


def _check_targets(targets: torch.Tensor, n: int, n_choices: int, name: str) -> torch.Tensor:
    targets = torch.as_tensor(targets)
    if targets.shape != (n,) or targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of shape ({n},), got {targets.dtype} {list(targets.shape)}")
    if n and (targets.min() < 0 or targets.max() >= n_choices):
        raise ValueError(f"{name} holds indices outside [0, {n_choices})")
    return targets.long()


def _target_ranks(queries: torch.Tensor, gallery: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q,) rank of each query's single relevant gallery item: the number of items scoring strictly higher."""
    step = max(1, _CHUNK_ELEMENTS // gallery.shape[0])
    ranks = []
    for start in range(0, queries.shape[0], step):
        sims = queries[start : start + step] @ gallery.T  # (Q', M)
        target_sims = sims.gather(1, targets[start : start + step, None])  # (Q', 1)
        ranks.append((sims > target_sims).sum(1))  # (Q',)
    return torch.cat(ranks)  # (Q,)


def _mean(values: torch.Tensor) -> float:
    # Per-query values come back to the CPU and are averaged in float64 (MPS has no float64): R@k is then an exact
    # fraction such as 0.15 rather than float32's 0.15000000596, which matters in JSON reports and model cards.
    return values.double().mean().item()


def _reciprocal_rank_at(ranks: torch.Tensor, k: int) -> torch.Tensor:
    return torch.where(ranks < k, 1.0 / (ranks + 1).double(), 0.0)


def _captions_per_clip(text_to_audio: torch.Tensor, n_audio: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N_a, C) caption indices of each clip in caption order, padded with 0, and the (N_a, C) mask of real ones."""
    counts = torch.bincount(text_to_audio, minlength=n_audio)  # (N_a,)
    width = max(int(counts.max()), 1)
    order = torch.sort(text_to_audio, stable=True).indices  # (N_t,) captions grouped by clip, in caption order
    starts = torch.cumsum(counts, 0) - counts  # (N_a,)
    slot = torch.arange(order.numel(), device=order.device) - starts[text_to_audio[order]]  # (N_t,)
    captions = torch.zeros(n_audio, width, dtype=torch.long, device=order.device)
    captions[text_to_audio[order], slot] = order
    valid = torch.arange(width, device=order.device)[None, :] < counts[:, None]  # (N_a, C)
    return captions, valid


def _caption_positions(
    audio: torch.Tensor,
    text: torch.Tensor,
    text_to_audio: torch.Tensor,
    captions: torch.Tensor,
    valid: torch.Tensor,
) -> torch.Tensor:
    """(N_a, C) position of each clip's captions in its audio->text ranking, in caption order (module docstring);
    padding slots hold N_t, past every real position."""
    n_text, width = text.shape[0], captions.shape[1]
    step = max(1, _CHUNK_ELEMENTS // (n_text * width))
    earlier = torch.ones(width, width, dtype=torch.bool, device=audio.device).tril(-1)  # (C, C) [j, j'] = j' < j
    positions = []
    for start in range(0, audio.shape[0], step):
        rows = torch.arange(start, min(start + step, audio.shape[0]), device=audio.device)  # (B,)
        sims = audio[rows] @ text.T  # (B, N_t)
        own = sims.gather(1, captions[rows])  # (B, C)
        other = text_to_audio[None, None, :] != rows[:, None, None]  # (B, 1, N_t)
        ahead = ((sims[:, None, :] > own[:, :, None]) & other).sum(-1)  # (B, C) other clips' captions above
        before = (own[:, None, :] > own[:, :, None]) | ((own[:, None, :] == own[:, :, None]) & earlier)  # (B, C, C)
        positions.append(ahead + (before & valid[rows, None, :]).sum(-1))  # (B, C)
    return torch.cat(positions).masked_fill(~valid, n_text)  # (N_a, C)


def _average_precision_at(positions: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """(N_a,) average precision at k: the captions in rank order, the i-th found (1-based) adds i / (position + 1)."""
    hits = torch.arange(1, positions.shape[1] + 1, device=positions.device)  # (C,) captions found so far
    ordered = positions.sort(1).values  # (N_a, C) padding sorts last
    found = (ordered < k) & (hits <= valid.sum(1, keepdim=True))  # (N_a, C)
    precision = torch.where(found, hits / (ordered + 1).double(), 0.0)  # (N_a, C)
    return precision.sum(1) / valid.sum(1).clamp(max=k)


def _laion_a2t_average_precision(positions: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """(N_a,) LAION-CLAP's published audio->text mAP@k: positions left in caption order (see retrieval_metrics)."""
    kept = (positions < k) & valid  # (N_a, C) the captions LAION keeps, still in caption order
    counter = kept.long().cumsum(1)  # (N_a, C) the "i" LAION pairs with each kept position
    terms = torch.where(kept, counter / (positions + 1).double(), 0.0)  # (N_a, C)
    return terms.sum(1) / valid.sum(1)


def _none_in_top(n: int, c: int, k: int) -> float:
    """P(none of c relevant items among the first k of a random order of n) = C(n - c, k) / C(n, k)."""
    p = 1.0
    for i in range(min(k, n)):
        p *= max(n - c - i, 0) / (n - i)
    return p


def _random_average_precision(n: int, c: int, k: int) -> float:
    """E[AP@k] of a random order of n items with c relevant (derivation in chance_levels)."""
    later = (c - 1) / (n - 1) if n > 1 else 0.0
    return sum((c / n) * (1 + p * later) / (p + 1) for p in range(min(k, n))) / min(c, k)


__all__ = ["A2T_MAP_VARIANTS", "chance_levels", "retrieval_metrics", "zero_shot_accuracy"]
