"""Supervised classification (issue 7): the classifier class, its metrics, its training objective and bad labels."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForAudioClassification, pipeline

import clapforge
from clapforge.evaluation.classification_metrics import accuracy, classification_metrics, multilabel_metrics
from clapforge.modeling_clap.modeling_laion_clap import contrastive_loss
from clapforge.modeling_clap.modeling_laion_clap_classification import LaionClapForAudioClassification
from clapforge.training.classification import LabelError, do_mixup, label_targets
from clapforge.training.recipe import load_recipe
from clapforge.training.train import train
from conftest import make_tokenizer, tone

RECIPE = Path(__file__).parents[1] / "recipes" / "synth-linear-probe.yaml"

# The lines clapforge/__init__.py is to carry (until then the tests register in-process themselves).


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from clapforge.data.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("cls") / "corpus"
    # 30% validation: 45 clips, 3 per class, so that accuracies differ by more than one clip's worth of noise.
    synthesize_corpus(out, 150, seed=0, workers=2, progress=False, validation_fraction=0.3)
    return out


# ---------------------------------------------------------------------------------------------------- metrics


def test_accuracy_hand_computed():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.0, 0.0, 1.0]])
    assert accuracy(scores, torch.tensor([0, 1, 2, 2])) == 0.75
    assert classification_metrics(scores, torch.tensor([1, 1, 2, 0]), multi_label=False) == {"accuracy": 0.25}


def test_map_mauc_hand_computed_and_absent_class():
    # Class 0: positives at ranks 1 and 3 of 4 -> AP = (1/1 + 2/3) / 2 = 5/6; AUC: pairs (pos > neg):
    #   0.9 > 0.5, 0.9 > 0.1, 0.4 < 0.5, 0.4 > 0.1 -> 3/4.
    # Class 1: a tie between the positive (0.6) and a negative (0.6): AP = precision at the tied threshold = 1/2
    #   (scikit-learn's rule); AUC = (2 wins + 0.5 tie) / 3 = 5/6.
    # Class 2: no positive anywhere -> left out, listed. Class 3: every clip positive -> AP 1, no AUC, listed.
    scores = torch.tensor([[0.9, 0.6, 0.3, 0.1], [0.5, 0.6, 0.2, 0.2], [0.4, 0.2, 0.1, 0.3], [0.1, 0.1, 0.9, 0.4]])
    targets = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 1], [0, 0, 0, 1]])
    result = multilabel_metrics(scores, targets, ["a", "b", "never", "always"])
    assert result["mAP"] == pytest.approx((5 / 6 + 1 / 2 + 1.0) / 3)
    assert result["mAUC"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert result["classes_without_positives"] == ["never"]
    assert result["classes_without_negatives"] == ["always"]
    assert (result["classes_scored_map"], result["classes_scored_mauc"]) == (3, 2)
    nothing = multilabel_metrics(scores, torch.zeros(4, 4), ["a", "b", "c", "d"])
    assert nothing["mAP"] is None and nothing["mAUC"] is None  # documented: None, never NaN


def test_metrics_match_scikit_learn_with_ties():
    sklearn = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40, 5), generator=generator).float()  # many ties
    targets = (torch.rand(40, 5, generator=generator) < 0.3).long()
    result = multilabel_metrics(scores, targets)
    assert result["mAP"] == pytest.approx(sklearn.average_precision_score(targets.numpy(), scores.numpy()))
    assert result["mAUC"] == pytest.approx(sklearn.roc_auc_score(targets.numpy(), scores.numpy()))


# --------------------------------------------------------------------------------------------------- bad input


def test_unknown_and_missing_labels_name_the_sample():
    label2id = {"dog": 0, "cat": 1}
    with pytest.raises(LabelError, match=r"'clip-7'.*'cow'"):
        label_targets(["clip-1", "clip-7"], [["dog"], ["cow"]], label2id, multi_label=False, first_label_only=False)
    with pytest.raises(LabelError, match=r"'clip-3' has no label"):
        label_targets(["clip-3"], [[]], label2id, multi_label=False, first_label_only=False)
    with pytest.raises(LabelError, match=r"'clip-4'.*'bird'"):
        label_targets(["clip-4"], [["dog", "bird"]], label2id, multi_label=True, first_label_only=False)
    with pytest.raises(LabelError, match=r"'clip-5' has 2 labels"):
        label_targets(["clip-5"], [["dog", "cat"]], label2id, multi_label=False, first_label_only=False)
    multi = label_targets(["a", "b"], [["dog", "cat"], []], label2id, multi_label=True, first_label_only=False)
    assert multi.tolist() == [[1.0, 1.0], [0.0, 0.0]]  # no label is a valid all-negative multi-label sample


def test_unknown_label_in_data_stops_training_with_its_key(corpus, tmp_path):
    recipe = load_recipe(RECIPE, [f"data.train={corpus}", "data.validation=null", f"output_dir={tmp_path}",
                                  "classification.labels=[steady_tone, beeping]", "train.max_steps=1"])
    with pytest.raises(LabelError, match=r"sample 'train-\d+' has label"):
        train(recipe)


def test_mixup_reverses_the_batch():
    x = torch.tensor([[1.0], [2.0], [4.0]])
    assert do_mixup(x, torch.tensor([1.0, 0.5, 0.25])).flatten().tolist() == [1.0, 2.0, 0.25 * 4 + 0.75 * 1]


# ------------------------------------------------------------------------------------------- linear probe


def _features(corpus: Path, split: str, classes: list[str]) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    from clapforge.data.stream import stream_dataset

    examples = list(stream_dataset(corpus, split=split, shuffle=False))
    features = clapforge.create_feature_extractor("test-tiny")([e["audio"] for e in examples], sampling_rate=48000)
    return examples, features["input_features"], torch.tensor([classes.index(e["labels"][0]) for e in examples])


def _linear_probe(model, classes, x_train, y_train, x_val, y_val) -> float:
    """LAION's frozen-encoder probe, fitted full-batch on features computed once (the encoder is frozen anyway)."""
    classifier = LaionClapForAudioClassification.from_clap(model, labels=classes).eval()
    with torch.no_grad():
        f_train, f_val = classifier.get_audio_features(x_train), classifier.get_audio_features(x_val)
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    head = torch.nn.Linear(f_train.shape[1], len(classes))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(head((f_train - mean) / std), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (head((f_val - mean) / std).argmax(1) == y_val).double().mean().item()


def test_probe_on_briefly_trained_clap_beats_random_encoder(corpus):
    torch.manual_seed(0)
    classes = json.loads((corpus / "labels.json").read_text())["classes"]
    train_examples, x_train, y_train = _features(corpus, "train", classes)
    _, x_val, y_val = _features(corpus, "validation", classes)
    tokenizer = make_tokenizer(vocab_size=1000)
    model = clapforge.create_model("test-tiny")
    random_state = {k: v.clone() for k, v in model.state_dict().items()}
    # Brief contrastive training (40 steps of 16 pairs) on precomputed log-mel: the model's own forward and loss.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        idx = torch.randperm(len(train_examples), generator=generator)[:16]
        text = tokenizer([train_examples[i]["caption"] for i in idx], padding=True, truncation=True, max_length=64,
                         return_tensors="pt")
        out = model(**text, input_features=x_train[idx])
        loss = contrastive_loss(out.audio_embeds, out.text_embeds, model.logit_scale_a)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = _linear_probe(model, classes, x_train, y_train, x_val, y_val)
    model.load_state_dict(random_state)
    random = _linear_probe(model, classes, x_train, y_train, x_val, y_val)
    print(f"linear probe accuracy on {len(y_val)} validation clips, {len(classes)} classes: "
          f"briefly trained CLAP {trained:.3f}, random encoder {random:.3f}")
    assert trained >= random + 0.08


# ------------------------------------------------------------------- train() objective, Hub loading, pipeline


def test_train_classification_exports_a_classifier_that_loads_without_clapforge(corpus, tmp_path):
    clap_dir = tmp_path / "clap"
    clapforge.create_model("test-tiny").save_pretrained(clap_dir)
    out = tmp_path / "probe"
    metrics = train(load_recipe(RECIPE, [f"data.train={corpus}", f"data.validation={corpus}", f"output_dir={out}",
                                         f"init.model={clap_dir}", "train.max_steps=3", "classification.mixup=true",
                                         "data.max_validation_clips=8"]))
    assert set(metrics) == {"accuracy"} and 0.0 <= metrics["accuracy"] <= 1.0
    folder = out / "hub"
    assert (folder / "modeling_laion_clap_classification.py").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForAudioClassification"].endswith("LaionClapForAudioClassification")
    assert config["problem_type"] == "single_label_classification" and len(config["id2label"]) == 15

    model = AutoModelForAudioClassification.from_pretrained(folder).eval()
    fe = clapforge.create_feature_extractor("test-tiny")
    audio = tone(2.0, 660.0)
    with torch.no_grad():
        logits = model(**fe(audio, sampling_rate=48000)).logits
    np.save(tmp_path / "audio.npy", audio)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["clapforge"] = None
        import numpy as np, torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification
        try:
            import clapforge  # noqa
            raise SystemExit("clapforge importable")
        except ImportError:
            pass
        model = AutoModelForAudioClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        fe = AutoFeatureExtractor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        with torch.no_grad():
            logits = model(**fe(np.load({str(tmp_path / "audio.npy")!r}), sampling_rate=48000)).logits
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), logits)

    classify = pipeline("audio-classification", model=model, feature_extractor=fe)
    top = classify({"raw": audio, "sampling_rate": 48000}, top_k=3)
    expected = logits.softmax(-1)[0].topk(3)
    assert [r["label"] for r in top] == [model.config.id2label[int(i)] for i in expected.indices]
    assert [r["score"] for r in top] == pytest.approx(expected.values.tolist(), abs=1e-5)
