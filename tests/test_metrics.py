"""Retrieval, zero-shot and chance metrics against hand-computed cases and against LAION-CLAP's own code."""

import math

import pytest
import torch

from clapforge.evaluation import chance_levels, retrieval_metrics, zero_shot_accuracy


def _four_squares(n: int) -> list[int]:
    for a in range(math.isqrt(n) + 1):
        for b in range(a, math.isqrt(n - a * a) + 1):
            for c in range(b, math.isqrt(n - a * a - b * b) + 1):
                d = math.isqrt(n - a * a - b * b - c * c)
                if a * a + b * b + c * c + d * d == n:
                    return [a, b, c, d]
    raise AssertionError(n)


def from_scores(scores: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings whose cosine similarities are exactly scores / 20: (queries (Q, G + 4), gallery (G, G + 4)).

    Gallery items are one-hot; each query row is its integer scores padded with four integers whose squares bring
    the row's squared norm to exactly 400. Every number is an integer in float32, so the norms are exact and equal
    scores stay exactly equal after normalisation (hand-written ties survive).
    """
    rows = [row + _four_squares(400 - sum(s * s for s in row)) for row in scores]
    queries = torch.tensor(rows, dtype=torch.float32)
    gallery = torch.eye(len(scores[0]), len(rows[0]))
    return queries, gallery


def test_retrieval_hand_computed_several_captions_per_clip():
    # 3 clips; captions c0, c1 -> clip 0, c2 -> clip 1, c3, c4 -> clip 2. Scores (caption x clip):
    scores = [
        [9, 5, 1],  # c0: clip 0 scores 9, nothing higher                -> t2a rank 0
        [4, 7, 2],  # c1: clip 0 scores 4, clip 1 higher (7)             -> t2a rank 1
        [3, 2, 8],  # c2: clip 1 scores 2, clips 0 (3) and 2 (8) higher  -> t2a rank 2
        [6, 1, 6],  # c3: clip 2 scores 6, tied with clip 0: not higher  -> t2a rank 0
        [2, 9, 5],  # c4: clip 2 scores 5, clip 1 higher (9)             -> t2a rank 1
    ]
    text, audio = from_scores(scores)
    text_to_audio = torch.tensor([0, 0, 1, 2, 2])
    # Audio->text, one column per clip:
    #   clip 0: [9, 4, 3, 6, 2], own captions c0 (9) and c1 (4): c0 at position 0, c1 at 2 (behind c0, c3);
    #           AP = (1/1 + 2/3) / 2 = 5/6, best rank 0
    #   clip 1: [5, 7, 2, 1, 9], own caption c2 (2): 3 higher -> position 3; AP = (1/4) / 1 = 1/4, best rank 3
    #   clip 2: [1, 2, 8, 6, 5], own c3 (6) at position 1 (c2 above), c4 (5) at 2 (c2 and c3 above);
    #           AP = (1/2 + 2/3) / 2 = 7/12, best rank 1
    metrics = retrieval_metrics(audio, text, text_to_audio, ks=(1, 2, 3))
    expected = {
        "t2a_R@1": 2 / 5,  # ranks [0, 1, 2, 0, 1]
        "t2a_R@2": 4 / 5,
        "t2a_R@3": 1.0,
        "t2a_mAP@10": (1 + 1 / 2 + 1 / 3 + 1 + 1 / 2) / 5,  # = 2/3
        "a2t_R@1": 1 / 3,  # best ranks [0, 3, 1]
        "a2t_R@2": 2 / 3,
        "a2t_R@3": 2 / 3,
        "a2t_mAP@10": (5 / 6 + 1 / 4 + 7 / 12) / 3,  # = 5/9
    }
    assert metrics == pytest.approx(expected, abs=1e-12)
    # Cut-offs: mAP@2 drops every position >= 2 and divides by min(#captions, 2).
    #   t2a: (1 + 1/2 + 0 + 1 + 1/2) / 5 = 0.6; a2t: clip 0 (1/1)/2, clip 1 0, clip 2 (1/2)/2 -> (0.5 + 0.25) / 3
    at2 = retrieval_metrics(audio, text, text_to_audio, ks=(1,), map_k=2)
    assert at2["t2a_mAP@2"] == pytest.approx(0.6) and at2["a2t_mAP@2"] == pytest.approx(0.25)
    # mAP@1 with 2 captions: clip 0 finds c0 at position 0 and divides by min(2, 1) = 1 -> 1; others 0.
    at1 = retrieval_metrics(audio, text, text_to_audio, ks=(1,), map_k=1)
    assert at1["t2a_mAP@1"] == pytest.approx(2 / 5) and at1["a2t_mAP@1"] == pytest.approx(1 / 3)


def test_retrieval_ties_are_optimistic_and_keep_ap_at_most_one():
    scores = [
        [5, 1],  # c0 -> clip 0
        [5, 3],  # c1 -> clip 0
        [3, 3],  # c2 -> clip 1: tied with clip 0, so rank 0
    ]
    text, audio = from_scores(scores)
    metrics = retrieval_metrics(audio, text, torch.tensor([0, 0, 1]), ks=(1,))
    # t2a ranks [0, 0, 0] (c2 tied). a2t clip 0 column [5, 5, 3]: c0 and c1 tie at the top and take positions 0 and 1,
    # AP = (1/1 + 2/2) / 2 = 1 (strict ranks 0 and 0 would give (1/1 + 2/1) / 2 = 1.5). Clip 1 column [1, 3, 3]: c2
    # ties with c1 of clip 0 and ranks ahead of it: position 0, AP 1.
    assert metrics == {"t2a_R@1": 1.0, "t2a_mAP@10": 1.0, "a2t_R@1": 1.0, "a2t_mAP@10": 1.0}
    assert retrieval_metrics(audio, text, torch.tensor([0, 0, 1]), ks=(1,), a2t_map="laion")["a2t_mAP@10"] == 1.0


def test_retrieval_five_captions_sorted_versus_laion_order():
    # 2 clips x 5 captions: c0..c4 -> clip 0, c5..c9 -> clip 1. Every caption's own clip wins t2a (rank 0).
    scores = [
        [4, 0],  # c0
        [9, 1],  # c1
        [7, 2],  # c2
        [6, 3],  # c3
        [5, 4],  # c4
        [8, 9],  # c5
        [3, 8],  # c6
        [2, 7],  # c7
        [1, 6],  # c8
        [0, 5],  # c9
    ]
    text, audio = from_scores(scores)
    text_to_audio = torch.tensor([0] * 5 + [1] * 5)
    # Clip 0's column ranks c1 (9), c5 (8), c2, c3, c4, c0 (4), ...: its captions in caption order c0..c4 sit at
    # positions [5, 0, 2, 3, 4].
    #   sorted (correct): positions 0, 2, 3, 4, 5 -> (1/1 + 2/3 + 3/4 + 4/5 + 5/6) / 5 = 4.05 / 5 = 0.81
    #   LAION (caption order): 1/6 + 2/1 + 3/3 + 4/4 + 5/5 = 31/6 -> / 5 = 31/30 > 1
    # Clip 1's captions c5..c9 are positions 0..4 in caption order: AP 1 both ways.
    sorted_ = retrieval_metrics(audio, text, text_to_audio, ks=(1, 5, 10))
    laion = retrieval_metrics(audio, text, text_to_audio, ks=(1, 5, 10), a2t_map="laion")
    assert sorted_["a2t_mAP@10"] == pytest.approx((0.81 + 1) / 2, abs=1e-12)
    assert laion["a2t_mAP@10"] == pytest.approx((31 / 30 + 1) / 2, abs=1e-12)
    # Everything else is the same both ways.
    laion.pop("a2t_mAP@10"), sorted_.pop("a2t_mAP@10")
    assert laion == sorted_
    assert sorted_["t2a_R@1"] == sorted_["t2a_mAP@10"] == sorted_["a2t_R@1"] == 1.0
    with pytest.raises(ValueError, match="a2t_map"):
        retrieval_metrics(audio, text, text_to_audio, a2t_map="mean")


def test_retrieval_clip_without_caption_is_a_distractor_only():
    scores = [
        [2, 1, 3],  # c0 -> clip 0: clip 2 (never captioned) scores higher -> t2a rank 1
        [1, 4, 0],  # c1 -> clip 1: rank 0
    ]
    text, audio = from_scores(scores)
    metrics = retrieval_metrics(audio, text, torch.tensor([0, 1]), ks=(1, 2))
    # a2t over clips 0 and 1 only: clip 0 column [2, 1] -> c0 position 0; clip 1 column [1, 4] -> c1 position 0.
    assert metrics == {"t2a_R@1": 0.5, "t2a_R@2": 1.0, "t2a_mAP@10": 0.75,
                       "a2t_R@1": 1.0, "a2t_R@2": 1.0, "a2t_mAP@10": 1.0}


def test_retrieval_is_cosine_whatever_the_norms_and_dtype():
    generator = torch.Generator().manual_seed(0)
    audio, text = torch.randn(7, 16, generator=generator), torch.randn(20, 16, generator=generator)
    text_to_audio = torch.randint(0, 7, (20,), generator=generator)
    base = retrieval_metrics(audio, text, text_to_audio)
    scaled = retrieval_metrics(audio * torch.rand(7, 1, generator=generator) * 10, text * 0.01, text_to_audio)
    assert scaled == pytest.approx(base, abs=1e-12)
    assert retrieval_metrics(audio.double(), text.half().float(), text_to_audio).keys() == base.keys()


def test_retrieval_input_errors():
    audio, text = torch.randn(3, 4), torch.randn(4, 4)
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(audio, text, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(audio, text, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        retrieval_metrics(audio, text, torch.tensor([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="embeddings"):
        retrieval_metrics(audio, torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))


def _laion_reference(audio: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """LAION-CLAP `evaluate_clotho_audiocaps` (training/train.py), transcribed: 5 consecutive captions per clip."""
    import numpy as np

    audio, text = torch.nn.functional.normalize(audio, dim=-1), torch.nn.functional.normalize(text, dim=-1)
    logits_per_audio = audio @ text.t()
    logits_per_text = logits_per_audio.t()
    n = audio.shape[0]
    metrics = {}
    pred_text = []
    for d in range(5):
        logit = logits_per_text.reshape(n, 5, n)[:, d, :]
        ranking = torch.argsort(logit, descending=True)
        pred_text.append(torch.where(ranking == torch.arange(n).view(-1, 1))[1].numpy())
    pred_text_concat = np.concatenate(pred_text)
    for k in (1, 5, 10):
        metrics[f"t2a_R@{k}"] = np.mean(pred_text_concat < k)
    metrics["t2a_mAP@10"] = np.mean(np.where(pred_text_concat < 10, 1 / (pred_text_concat + 1), 0.0))
    map_all, pred_audio_all = [], []
    for d in range(n):
        ranking = torch.argsort(logits_per_audio[d, :], descending=True)
        ground_truth = torch.arange(d * 5, d * 5 + 5)[None]
        all_pred = torch.where(torch.stack([ranking] * 5) == ground_truth.view(-1, 1))[1]
        pred_audio_all.append(torch.min(all_pred).numpy())
        all_pred_filter = all_pred[all_pred < 10].numpy()
        map_all.append(np.sum(np.arange(1, len(all_pred_filter) + 1) / (all_pred_filter + 1)) / 5)
    metrics["a2t_mAP@10"] = np.mean(map_all)
    for k in (1, 5, 10):
        metrics[f"a2t_R@{k}"] = np.mean(np.array(pred_audio_all) < k)
    return {k: float(v) for k, v in metrics.items()}


def _sorted_reference_a2t_map(audio: torch.Tensor, text: torch.Tensor, text_to_audio: torch.Tensor) -> float:
    """Average precision at 10 by the textbook loop over each clip's ranking (as WavCaps and GLAP compute it)."""
    sims = torch.nn.functional.normalize(audio, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).t()
    aps = []
    for clip in range(audio.shape[0]):
        relevant = set((text_to_audio == clip).nonzero().flatten().tolist())
        hits, total = 0, 0.0
        for position, caption in enumerate(torch.argsort(sims[clip], descending=True)[:10].tolist()):
            if caption in relevant:
                hits += 1
                total += hits / (position + 1)
        aps.append(total / min(len(relevant), 10))
    return sum(aps) / len(aps)


def test_retrieval_agrees_with_laion_code_and_textbook_ap_on_random_embeddings():
    generator = torch.Generator().manual_seed(1)
    # Correlated pairs, so that ranks spread over the whole top 10 rather than being all bad.
    audio = torch.randn(12, 8, generator=generator)
    text = audio.repeat_interleave(5, 0) + 1.5 * torch.randn(60, 8, generator=generator)
    text_to_audio = torch.arange(12).repeat_interleave(5)
    laion = _laion_reference(audio, text)
    ours_laion = retrieval_metrics(audio, text, text_to_audio, a2t_map="laion")
    ours = retrieval_metrics(audio, text, text_to_audio)
    assert ours_laion == pytest.approx(laion, abs=1e-9)
    assert ours["a2t_mAP@10"] == pytest.approx(_sorted_reference_a2t_map(audio, text, text_to_audio), abs=1e-9)
    assert ours["a2t_mAP@10"] != pytest.approx(laion["a2t_mAP@10"], abs=1e-3)  # the data does show the difference
    # Chunked ranking (tiny chunks) gives the same numbers as one chunk.
    import clapforge.evaluation.metrics as metrics_module

    chunk = metrics_module._CHUNK_ELEMENTS
    metrics_module._CHUNK_ELEMENTS = 7
    try:
        assert retrieval_metrics(audio, text, text_to_audio) == ours
    finally:
        metrics_module._CHUNK_ELEMENTS = chunk


def test_zero_shot_hand_computed_with_ties_and_fewer_classes_than_k():
    scores = [
        [9, 2, 1],  # clip 0, class 0: rank 0
        [5, 4, 3],  # clip 1, class 1: class 0 higher -> rank 1
        [7, 8, 6],  # clip 2, class 2: both others higher -> rank 2
        [3, 3, 1],  # clip 3, class 0: tied with class 1 -> rank 0
    ]
    audio, classes = from_scores(scores)
    targets = torch.tensor([0, 1, 2, 0])
    # K = 3: top5 would count every clip as correct, so it is omitted.
    assert zero_shot_accuracy(audio, classes, targets) == {"top1": 0.5}
    assert zero_shot_accuracy(audio, classes, targets, ks=(1, 2, 3, 5)) == {"top1": 0.5, "top2": 0.75, "top3": 1.0}
    with pytest.raises(ValueError, match="outside"):
        zero_shot_accuracy(audio, classes, torch.tensor([0, 1, 2, 3]))


def test_chance_levels_hand_computed():
    text_to_audio = torch.tensor([0, 0, 1, 2, 2])  # 3 clips with 2, 1, 2 of the 5 captions
    chance = chance_levels(text_to_audio=text_to_audio, n_audio=3, ks=(1, 2, 5), n_classes=3)
    expected = {
        "t2a_R@1": 1 / 3,
        "t2a_R@2": 2 / 3,
        "t2a_R@5": 1.0,  # min(5, 3) / 3
        "t2a_mAP@10": (1 + 1 / 2 + 1 / 3) / 3,  # the clip's rank is uniform on 0..2: 11/18
        # a2t R@1: a clip with c captions has c/5 chance of owning the top caption: (2 + 1 + 2) / 15
        "a2t_R@1": 1 / 3,
        # a2t R@2: 1 - C(5 - c, 2) / C(5, 2): c = 2 -> 1 - 3/10, c = 1 -> 1 - 6/10; mean (0.7 + 0.4 + 0.7) / 3
        "a2t_R@2": 0.6,
        "a2t_R@5": 1.0,
        # a2t mAP@10 (the whole 5-list): c = 1 -> mean of 1/(p + 1) over p = 0..4 = 137/300; c = 2 -> averaged over
        # the 10 position pairs p < q of (1/(p + 1) + 2/(q + 1)) / 2 = 11.85 / 2 / 10 = 237/400
        "a2t_mAP@10": (2 * 237 / 400 + 137 / 300) / 3,  # = 197/360
        "top1": 1 / 3,  # top5 omitted: K = 3
    }
    assert chance == pytest.approx(expected, abs=1e-12)
    assert chance_levels(n_classes=10) == {"top1": 0.1, "top5": 0.5}
    with pytest.raises(ValueError, match="n_audio"):
        chance_levels(text_to_audio=text_to_audio)


def test_chance_levels_match_random_embeddings_on_average():
    # Independent Gaussian embeddings rank uniformly at random, so the metrics average to the chance levels.
    generator = torch.Generator().manual_seed(0)
    text_to_audio = torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 4, 5, 6, 7, 8, 9, 10, 11, 11])  # 12 clips, 20 caps
    trials = 400
    sums: dict[str, float] = {}
    for _ in range(trials):
        metrics = retrieval_metrics(torch.randn(12, 32, generator=generator), torch.randn(20, 32, generator=generator),
                                    text_to_audio)
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value / trials
    chance = chance_levels(text_to_audio=text_to_audio, n_audio=12)
    assert sums.keys() == chance.keys()
    assert sums == pytest.approx(chance, abs=0.03)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_metrics_on_gpu_match_cpu():
    generator = torch.Generator().manual_seed(0)
    audio, text = torch.randn(9, 8, generator=generator), torch.randn(30, 8, generator=generator)
    text_to_audio = torch.randint(0, 9, (30,), generator=generator)
    cpu = retrieval_metrics(audio, text, text_to_audio)
    assert retrieval_metrics(audio.cuda(), text.cuda(), text_to_audio.cuda()) == pytest.approx(cpu, abs=1e-9)
