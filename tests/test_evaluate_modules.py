"""The `evaluate` modules load offline from their folders and give exactly the torch metric functions' values."""

import pytest
import torch

from clapforge.evaluation import retrieval_metrics, zero_shot_accuracy
from clapforge.evaluation.modules import MODULES, module_path


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    return tmp_path_factory.mktemp("hf")


@pytest.fixture(scope="module")
def evaluate(hf_home):
    """evaluate, offline, with its module copies and Arrow caches under a temporary HF_HOME.

    evaluate reads these paths once, at import, from the environment; they are set before the import and, in case
    another test imported it first, on its config module too (read at call time). One HF_HOME for the whole module:
    evaluate imports the copied modules as a package (`evaluate_modules`) that Python caches, so the modules cache
    must not move between loads in one process.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(hf_home))
        patch.setenv("HF_EVALUATE_OFFLINE", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        import evaluate

        patch.setattr(evaluate.config, "HF_MODULES_CACHE", hf_home / "modules")
        patch.setattr(evaluate.config, "HF_METRICS_CACHE", str(hf_home / "metrics"))
        patch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
        yield evaluate


def retrieval_case(seed: int = 0, n_clips: int = 7, dim: int = 6):
    generator = torch.Generator().manual_seed(seed)
    counts = [5, 5, 1, 3, 5, 2, 5][:n_clips]
    audio = torch.randn(n_clips, dim, generator=generator)
    # captions near their clip, so ranks are neither perfect nor random
    text = [audio[i] + 1.5 * torch.randn(c, dim, generator=generator) for i, c in enumerate(counts)]
    return audio, text


@pytest.mark.parametrize("variant", ["sorted", "laion"])
def test_clap_retrieval_module_equals_retrieval_metrics(evaluate, hf_home, variant):
    metric = evaluate.load(module_path("clap_retrieval"))
    audio, text = retrieval_case()
    expected = retrieval_metrics(audio, torch.cat(text), torch.tensor([i for i, t in enumerate(text) for _ in t]),
                                 a2t_map=variant)
    # streamed in two batches, as an evaluation loop would add them
    metric.add_batch(predictions=audio[:3].tolist(), references=[t.tolist() for t in text[:3]])
    metric.add_batch(predictions=audio[3:].tolist(), references=[t.tolist() for t in text[3:]])
    result = metric.compute(a2t_map=variant)
    # the module passes float32 through Arrow, exactly what the torch function saw
    assert result == expected
    assert set(result) == {"t2a_R@1", "t2a_R@5", "t2a_R@10", "t2a_mAP@10", "a2t_R@1", "a2t_R@5", "a2t_R@10",
                           "a2t_mAP@10"}
    assert list((hf_home / "modules").rglob("clap_retrieval.py"))  # copied under the temporary HF_HOME


def test_clap_retrieval_module_sorted_and_laion_differ_where_captions_rank_out_of_order(evaluate):
    metric = evaluate.load(module_path("clap_retrieval"), keep_in_memory=True)
    # Clip 0's second caption is its best match and its first ranks third: caption order is not rank order.
    audio = [[1.0, 0.0], [0.0, 1.0]]
    references = [[[0.5, 0.5], [1.0, 0.0]], [[0.6, 0.8], [0.0, 1.0]]]
    kwargs = {"predictions": audio, "references": references, "ks": [1]}
    sorted_map = metric.compute(**kwargs, a2t_map="sorted")["a2t_mAP@10"]
    laion_map = metric.compute(**kwargs, a2t_map="laion")["a2t_mAP@10"]
    # Clip 0 ranks the 4 captions [1, 0] (cos 1), [.5, .5] (.71), [.6, .8] (.6), [0, 1] (0): its own captions sit
    # at positions 1, 0 in caption order. Sorted AP = (1/1 + 2/2) / 2 = 1; LAION's = (1/(1+1) + 2/(0+1)) / 2 = 1.25.
    # Clip 1 ranks [0, 1] (1), [.6, .8] (.8), [.5, .5], [1, 0]: positions 1, 0 again, so the same two values.
    assert sorted_map == pytest.approx(1.0) and laion_map == pytest.approx(1.25)


def test_clap_zero_shot_module_equals_zero_shot_accuracy(evaluate):
    metric = evaluate.load(module_path("clap_zero_shot"), keep_in_memory=True)
    generator = torch.Generator().manual_seed(1)
    audio, classes = torch.randn(40, 8, generator=generator), torch.randn(12, 8, generator=generator)
    targets = torch.randint(0, 12, (40,), generator=generator)
    expected = zero_shot_accuracy(audio, classes, targets, ks=(1, 5))
    # logits as a CLAP model gives them: scaled cosine similarities (any per-class scores work)
    logits = 14.3 * torch.nn.functional.normalize(audio, dim=-1) @ torch.nn.functional.normalize(classes, dim=-1).T
    for rows in (slice(0, 25), slice(25, 40)):
        metric.add_batch(predictions=logits[rows].tolist(), references=targets[rows].tolist())
    assert metric.compute() == expected
    assert 0 < expected["top1"] < expected["top5"] < 1

    hand = metric.compute(predictions=[[0.1, 2.0, -1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 0.0]], references=[1, 2, 0],
                          ks=[1, 2, 5])
    # clip 0 right; clip 1's class is second; clip 2 ties everywhere and counts as right (optimistic); k=5 > K left out
    assert hand == {"top1": pytest.approx(2 / 3), "top2": 1.0}


def test_module_paths():
    assert all(module_path(name).endswith(name) for name in MODULES)
    with pytest.raises(ValueError, match="unknown module"):
        module_path("accuracy")
