"""Issue 7 on the layouts users have: ESC-50 folds and FSD50K written by the tests, read by the readers, and the
recipes of recipes/ run on them through `train()` (the real classification objective, a few steps)."""

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

import clapforge
from clapforge.data.labelled import read_esc50_folds, read_fsd50k, stream_labelled
from clapforge.training.recipe import load_recipe
from clapforge.training.train import train
from conftest import write_csv, write_wav

RECIPES = Path(__file__).parents[1] / "recipes"
ESC_CLASSES = ["dog", "rooster", "rain"]  # targets 0, 1, 2
FSD_VOCABULARY = ["Bark", "Dog", "Rain", "Siren"]


@pytest.fixture(scope="module")
def esc50(tmp_path_factory) -> Path:
    """3 classes x 3 folds, two clips per class and fold (18 clips); one clip of fold 1 is corrupt."""
    root = tmp_path_factory.mktemp("ESC-50-master")
    rows = []
    for fold in (1, 2, 3):
        for target, category in enumerate(ESC_CLASSES):
            for take in "AB":
                name = f"{fold}-{100 + target}-{take}-{target}.wav"
                write_wav(root / "audio" / name, seed=target, seconds=0.5)
                rows.append([name, fold, target, category, "False", 100 + target, take])
    (root / "audio" / "1-100-A-0.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
              rows)
    return root


@pytest.fixture(scope="module")
def fsd50k(tmp_path_factory) -> Path:
    """dev.csv (8 train rows, 2 val rows) and eval.csv (3 rows), multi-label, with the release's vocabulary.csv."""
    root = tmp_path_factory.mktemp("FSD50K")
    truth = root / "FSD50K.ground_truth"
    dev = [(100 + i, "Bark,Dog" if i % 2 else "Rain", "train" if i < 8 else "val") for i in range(10)]
    evaluation = [(900, "Siren"), (901, "Bark,Dog"), (902, "Rain,Siren")]
    write_csv(truth / "dev.csv", ["fname", "labels", "mids", "split"], [[f, lab, "/m/x", s] for f, lab, s in dev])
    write_csv(truth / "eval.csv", ["fname", "labels", "mids"], [[f, lab, "/m/x"] for f, lab in evaluation])
    with open(truth / "vocabulary.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([[i, name, f"/m/{i}"] for i, name in enumerate(FSD_VOCABULARY)])
    for fname, labels, *_ in dev:
        write_wav(root / "FSD50K.dev_audio" / f"{fname}.wav", seed=len(labels), seconds=0.5)
    for fname, labels in evaluation:
        write_wav(root / "FSD50K.eval_audio" / f"{fname}.wav", seed=len(labels), seconds=0.5)
    return root


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clap") / "test-tiny"
    clapforge.create_model("test-tiny").save_pretrained(folder)
    return folder


def test_esc50_reader_reads_the_folds_asked_for(esc50):
    files = read_esc50_folds(esc50, "1,3")
    assert files.class_names == ESC_CLASSES
    assert len(files.keys) == 12 and {Path(p).name[0] for p in files.paths} == {"1", "3"}
    assert Counter(label for labels in files.labels for label in labels) == {c: 4 for c in ESC_CLASSES}
    assert all(Path(p).is_file() for p in files.paths)
    assert {Path(p).name[0] for p in read_esc50_folds(esc50, [2]).paths} == {"2"}  # folds as a list of ints too
    with pytest.raises(ValueError, match=r"has folds \[1, 2, 3\], not \[5\]"):
        read_esc50_folds(esc50, "5")


def test_fsd50k_reader_splits_multi_labels_and_vocabulary(fsd50k):
    train_files, val, evaluation = (read_fsd50k(fsd50k, s) for s in ("train", "val", "eval"))
    assert train_files.class_names == FSD_VOCABULARY  # vocabulary.csv order, not sorted or first-seen
    assert train_files.keys == [str(100 + i) for i in range(8)] and val.keys == ["108", "109"]
    assert train_files.labels[:2] == [["Rain"], ["Bark", "Dog"]]
    assert evaluation.labels == [["Siren"], ["Bark", "Dog"], ["Rain", "Siren"]]
    assert evaluation.paths[0] == str(fsd50k / "FSD50K.eval_audio" / "900.wav")
    with pytest.raises(ValueError, match="train, val"):
        read_fsd50k(fsd50k, "test")
    with pytest.raises(FileNotFoundError, match="dev.csv"):
        read_fsd50k(fsd50k / "FSD50K.dev_audio", "train")


def test_balanced_sampling_evens_out_a_rare_class(esc50, tmp_path):
    """FSD50K-style imbalance (9 clips of one class, 1 of another): balanced draws both about equally."""
    root = tmp_path / "FSD50K"
    rows = [(i, "Rain" if i else "Siren", "train") for i in range(10)]
    write_csv(root / "FSD50K.ground_truth" / "dev.csv", ["fname", "labels", "mids", "split"],
              [[f, lab, "/m/x", s] for f, lab, s in rows])
    for fname, *_ in rows:
        write_wav(root / "FSD50K.dev_audio" / f"{fname}.wav", seed=fname, seconds=0.2)

    def siren_share(balanced: bool, seed: int) -> float:
        stream = stream_labelled("fsd50k", str(root), "train", shuffle=False, seed=seed, balanced=balanced)
        labels = [e["labels"][0] for e in stream]
        assert len(labels) == 10  # an epoch draws as many clips as the list holds
        return labels.count("Siren") / len(labels)

    plain = [siren_share(False, seed) for seed in range(5)]
    balanced = [siren_share(True, seed) for seed in range(5)]
    print(f"share of the rare class per epoch: plain {plain}, balanced {balanced}")
    assert plain == [0.1] * 5
    assert 0.3 <= sum(balanced) / len(balanced) <= 0.7  # expected 0.5: 50 draws, weights 1/9 x 9 against 1/1 x 1
    with pytest.raises(ValueError, match="file-list reader"):
        stream_labelled("stream", str(root), "train", balanced=True)


def test_esc50_linear_probe_recipe_runs_on_the_layout(esc50, clap_dir, tmp_path, caplog):
    out = tmp_path / "probe"
    recipe = load_recipe(RECIPES / "esc50-linear-probe.yaml", [
        "preset=test-tiny", f"init.model={clap_dir}", f"data.train={esc50}", f"data.validation={esc50}",
        "data.train_split=1,2", "data.validation_split=3", f"output_dir={out}", "train.max_steps=3",
        "train.batch_size=4", "train.warmup_steps=1", "eval.every=0", "checkpoint.every=0", "log_with=null",
    ])
    with caplog.at_level(logging.WARNING):
        metrics = train(recipe)
    assert set(metrics) == {"accuracy"} and 0.0 <= metrics["accuracy"] <= 1.0
    assert "1-100-A-0" in caplog.text and "skipped sample" in caplog.text  # the corrupt clip, named
    config = json.loads((out / "hub" / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(3)] == ESC_CLASSES
    assert config["problem_type"] == "single_label_classification"


def test_fsd50k_finetune_recipe_runs_on_the_layout(fsd50k, clap_dir, tmp_path):
    out = tmp_path / "finetune"
    recipe = load_recipe(RECIPES / "fsd50k-finetune.yaml", [
        "preset=test-tiny", f"init.model={clap_dir}", f"data.train={fsd50k}", f"data.validation={fsd50k}",
        f"output_dir={out}", "train.max_steps=3", "train.batch_size=4", "train.warmup_steps=1",
        "classification.balanced=true", "eval.every=0", "checkpoint.every=0", "log_with=null",
    ])
    metrics = train(recipe)
    assert {"mAP", "mAUC"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("mAP", "mAUC"))
    config = json.loads((out / "hub" / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(4)] == FSD_VOCABULARY
    assert config["problem_type"] == "multi_label_classification"
