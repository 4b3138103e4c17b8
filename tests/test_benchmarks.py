"""`clapforge eval`: readers for each benchmark layout, the protocols, the reports, on tiny fixtures the tests write.

Every layout is written here (a fake ESC-50, UrbanSound8K, a parquet and an audiofolder `datasets` source, AudioCaps
and Clotho) with short 16 kHz wav clips. Scores of a random test-tiny model are checked against the same embeddings
computed directly and scored by hand-called metric functions; one retrieval case with embeddings the test controls
is checked against values worked out by hand, in both audio->text mAP variants.
"""

import argparse
import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml

import clapforge
from clapforge import LaionClapModel, LaionClapProcessor, cli
from clapforge.commands import evaluate as eval_command
from clapforge.data.benchmark_sets import load_benchmark
from clapforge.data.shards import decode_audio
from clapforge.evaluation import retrieval_metrics, zero_shot_accuracy
from clapforge.evaluation.tasks import markdown_table
from conftest import make_tokenizer, randomize_, wav_bytes, write_csv, write_wav

ESC_CLASSES = ["dog", "chirping_birds", "door_wood_knock", "rain", "siren", "church_bells"]
US8K_CLASSES = ["air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
                "gun_shot", "jackhammer", "siren", "street_music"]


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "tiny-clap"
    torch.manual_seed(0)
    randomize_(clapforge.create_model("test-tiny")).save_pretrained(folder)
    LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), make_tokenizer()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    """6 classes x 2 folds, one clip per class and fold: 12 clips."""
    root = tmp_path_factory.mktemp("ESC-50-master")
    rows = []
    for fold, (target, category) in itertools.product((1, 2), enumerate(ESC_CLASSES)):
        name = f"{fold}-{100 + target}-A-0.wav"
        write_wav(root / "audio" / name, seed=10 * fold + target)
        rows.append([name, fold, target, category, "False", 100 + target, "A"])
    write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
              rows)
    return root


@pytest.fixture(scope="module")
def us8k(tmp_path_factory):
    """10 classes over 3 folds, 12 rows: one file is corrupt and one is listed but absent."""
    root = tmp_path_factory.mktemp("UrbanSound8K")
    rows = []
    for i in range(12):
        class_id, fold = i % 10, i % 3 + 1
        name = f"{1000 + i}-0-0-{i}.wav"
        rows.append([name, 1000 + i, 0.0, 0.3, 1, fold, class_id, US8K_CLASSES[class_id]])
        path = root / "audio" / f"fold{fold}" / name
        if i == 4:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio")
        elif i != 8:  # row 8's file is missing
            write_wav(path, seed=i)
    write_csv(root / "metadata" / "UrbanSound8K.csv",
              ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], rows)
    return root


AUDIOCAPS_IDS = ["aaaaaaaaaaa", "b-bbbbbbbbb", "c_ccccccccc", "ddddddddddd", "eeeeeeeeeee"]


@pytest.fixture(scope="module")
def audiocaps(tmp_path_factory):
    """5 clips x 5 captions; files named <id>, Y<id>, <id>_<start>, <audiocap_id>; the last clip has no file."""
    root = tmp_path_factory.mktemp("audiocaps")
    rows, cap_id = [], 100
    for i, ytid in enumerate(AUDIOCAPS_IDS):
        for j in range(5):
            rows.append([cap_id, ytid, 30, f"clip {i} caption {j} a dog barks"])
            cap_id += 1
    write_csv(root / "test.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], rows)
    audio = root / "audio" / "test"
    write_wav(audio / "aaaaaaaaaaa.wav", seed=1)
    write_wav(audio / "Yb-bbbbbbbbb.wav", seed=2)
    write_wav(audio / "sub" / "c_ccccccccc_30.000_40.000.wav", seed=3)
    write_wav(audio / "117.wav", seed=4)  # an audiocap_id of clip 3 (ids 115..119)
    return root


@pytest.fixture(scope="module")
def clotho(tmp_path_factory):
    """3 clips x 5 captions, names with spaces, in evaluation/."""
    root = tmp_path_factory.mktemp("clotho")
    rows = []
    for i in range(3):
        name = f"clip number {i}.wav"
        write_wav(root / "evaluation" / name, seed=20 + i)
        rows.append([name, *(f"sound {i} described by caption {j}" for j in range(5))])
    write_csv(root / "clotho_captions_evaluation.csv", ["file_name", *(f"caption_{j}" for j in range(1, 6))], rows)
    return root


@pytest.fixture()
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    return tmp_path / "datasets_cache"


def make_parquet(folder: Path) -> Path:
    """8 rows, audio bytes embedded, a ClassLabel `label` whose names use underscores and spaces."""
    import datasets

    names = ["dog_bark", "rain", "siren", "bell ringing"]
    data = {"audio": [{"bytes": wav_bytes(0.3, 300.0 + 50 * i, i), "path": f"row{i}.wav"} for i in range(8)],
            "label": [i % 4 for i in range(8)]}
    features = datasets.Features({"audio": datasets.Audio(decode=False), "label": datasets.ClassLabel(names=names)})
    path = folder / "vggsound_like" / "test.parquet"
    path.parent.mkdir(parents=True)
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(path))
    return path


# ---------------------------------------------------------------------------------------------------- readers


def test_esc50_reader_all_clips_class_names_and_folds(esc50):
    bench = load_benchmark("esc50", esc50)
    assert len(bench.clips) == 12 and bench.folds == [1, 2] and bench.kind == "zero-shot"
    assert bench.class_names == ["dog", "chirping birds", "door wood knock", "rain", "siren", "church bells"]
    first = bench.clips[1]
    assert first.label == "chirping birds" and Path(first.audio) == esc50 / "audio" / "1-101-A-0.wav"
    fold2 = load_benchmark("esc50", esc50, fold=2)
    assert len(fold2.clips) == 6 and {c.fold for c in fold2.clips} == {2} and fold2.class_names == bench.class_names
    with pytest.raises(ValueError, match="folds"):
        load_benchmark("esc50", esc50, fold=3)
    with pytest.raises(FileNotFoundError, match="esc50.csv"):
        load_benchmark("esc50", esc50 / "audio")


def test_urbansound8k_reader(us8k):
    bench = load_benchmark("us8k", us8k)
    assert bench.task == "urbansound8k" and len(bench.clips) == 12 and bench.folds == [1, 2, 3]
    assert bench.class_names == [name.replace("_", " ") for name in US8K_CLASSES]
    assert bench.clips[5].audio == str(us8k / "audio" / "fold3" / "1005-0-0-5.wav")
    assert bench.clips[5].label == "engine idling"
    assert len(load_benchmark("urbansound8k", us8k, fold=1).clips) == 4


def test_audiocaps_reader_groups_five_captions_and_finds_each_file_layout(audiocaps):
    bench = load_benchmark("audiocaps", audiocaps)
    assert bench.kind == "retrieval" and bench.split == "test" and [c.key for c in bench.clips] == AUDIOCAPS_IDS
    assert all(len(c.captions) == 5 for c in bench.clips)
    assert bench.clips[0].captions == [f"clip 0 caption {j} a dog barks" for j in range(5)]  # file order kept
    names = [Path(c.audio).name if c.audio else None for c in bench.clips]
    assert names == ["aaaaaaaaaaa.wav", "Yb-bbbbbbbbb.wav", "c_ccccccccc_30.000_40.000.wav", "117.wav", None]
    assert "eeeeeeeeeee" in bench.clips[4].missing
    # the CSV itself is accepted too
    assert len(load_benchmark("audiocaps", audiocaps / "test.csv").clips) == 5


def test_clotho_reader(clotho):
    bench = load_benchmark("clotho", clotho)
    assert [c.key for c in bench.clips] == [f"clip number {i}.wav" for i in range(3)]
    for i, clip in enumerate(bench.clips):
        assert clip.captions == [f"sound {i} described by caption {j}" for j in range(5)]
    assert all(Path(c.audio).is_file() for c in bench.clips)
    with pytest.raises(FileNotFoundError, match="clotho_captions_validation.csv"):
        load_benchmark("clotho", clotho, split="validation")


def test_datasets_source_readers_parquet_and_audiofolder(tmp_path, datasets_cache):
    bench = load_benchmark("zero-shot", make_parquet(tmp_path))
    assert bench.class_names == ["dog_bark", "rain", "siren", "bell ringing"]  # ClassLabel names as they are
    assert len(bench.clips) == 8 and bench.clips[5].label == "rain" and bench.split == "train"

    for i, label in enumerate(["cat", "cat", "airplane", "water drops"]):
        write_wav(tmp_path / "folder" / label / f"{i}.wav", seed=i)
    folder = load_benchmark("zero-shot", tmp_path / "folder")
    assert folder.class_names == ["airplane", "cat", "water drops"]
    assert sorted(c.label for c in folder.clips) == ["airplane", "cat", "cat", "water drops"]
    with pytest.raises(ValueError, match="label column 'category'"):
        load_benchmark("zero-shot", tmp_path / "folder", label_column="category")


# ---------------------------------------------------------------------------------------------------- protocol


def direct_audio_embeds(model, processor, paths) -> torch.Tensor:
    audio = [decode_audio(p) for p in paths]
    with torch.no_grad():
        features = processor(audio=audio, sampling_rate=48000)
        return model.get_audio_embeds(features["input_features"], features["is_longer"])


def direct_text_embeds(model, processor, texts) -> torch.Tensor:
    with torch.no_grad():
        tokens = processor(text=texts)
        return model.get_text_embeds(tokens["input_ids"], tokens["attention_mask"])


def load_saved(model_dir):
    return LaionClapModel.from_pretrained(model_dir).eval(), LaionClapProcessor.from_pretrained(model_dir)


def run_cli(*args) -> int:
    return cli.main(["eval", *map(str, args), "--no-progress", "--num-workers", "0", "--batch-size", "32"])


def test_eval_esc50_equals_direct_embeddings_and_metric_functions(model_dir, esc50, tmp_path, capsys):
    out = tmp_path / "esc50.json"
    assert run_cli(model_dir, "--task", "esc50", "--data", esc50, "--out", out) == 0
    results = json.loads(out.read_text())

    model, processor = load_saved(model_dir)
    bench = load_benchmark("esc50", esc50)
    audio = direct_audio_embeds(model, processor, [c.audio for c in bench.clips])
    classes = direct_text_embeds(model, processor, [f"This is a sound of {n}." for n in bench.class_names])
    targets = torch.tensor([bench.class_names.index(c.label) for c in bench.clips])
    expected = zero_shot_accuracy(audio, classes, targets, ks=(1, 5))
    assert results["metrics"] == {"zero_shot_top1": expected["top1"], "zero_shot_top5": expected["top5"]}
    for fold in (1, 2):
        rows = [i for i, c in enumerate(bench.clips) if c.fold == fold]
        per_fold = zero_shot_accuracy(audio[rows], classes, targets[rows], ks=(1,))
        assert results["per_fold"][str(fold)]["zero_shot_top1"] == per_fold["top1"]
    assert results["n"] == {"listed": 12, "clips": 12, "skipped": 0, "classes": 6}
    assert results["task"] == "esc50" and results["model"] == "tiny-clap" and results["data"] == str(esc50)
    assert results["protocol"]["prompts"] == ["This is a sound of {label}."]
    assert results["chance"] == {"zero_shot_top1": 1 / 6, "zero_shot_top5": 5 / 6}

    # paper-style table: models as rows, datasets as columns, in %
    table = out.with_suffix(".md").read_text()
    assert f"| tiny-clap | {100 * expected['top1']:.1f} |" in table and "| Model | ESC-50 |" in table
    assert table == capsys.readouterr().out.split("wrote ")[0]
    # model-index: the scores (not chance levels or counts) under zero-shot audio classification
    index = yaml.safe_load(out.with_suffix(".model-index.yaml").read_text())["model-index"]
    (entry,) = index[0]["results"]
    assert entry["task"]["type"] == "zero-shot-audio-classification" and entry["dataset"]["name"] == "ESC-50"
    assert {m["type"]: m["value"] for m in entry["metrics"]} == results["metrics"]


def test_eval_fold_and_prompt_ensemble(model_dir, esc50, tmp_path):
    out = tmp_path / "fold1.json"
    prompts = ["This is a sound of {label}.", "{} can be heard"]
    assert run_cli(model_dir, "--task", "esc50", "--data", esc50, "--fold", 1, "--out", out,
                   *itertools.chain.from_iterable(("--prompt", p) for p in prompts)) == 0
    results = json.loads(out.read_text())
    assert results["n"]["clips"] == 6 and results["fold"] == 1 and "per_fold" not in results

    model, processor = load_saved(model_dir)
    bench = load_benchmark("esc50", esc50, fold=1)
    audio = direct_audio_embeds(model, processor, [c.audio for c in bench.clips])
    per_prompt = [torch.nn.functional.normalize(direct_text_embeds(
        model, processor, [p.replace("{label}", n).replace("{}", n) for n in bench.class_names]), dim=-1)
        for p in prompts]
    classes = torch.stack(per_prompt).mean(0)
    targets = torch.tensor([bench.class_names.index(c.label) for c in bench.clips])
    assert results["metrics"]["zero_shot_top1"] == zero_shot_accuracy(audio, classes, targets)["top1"]
    assert results["protocol"]["prompts"] == prompts and "mean" in results["protocol"]["prompt_ensemble"]
    assert "ESC-50 fold 1" in out.with_suffix(".md").read_text()
    assert run_cli(model_dir, "--task", "esc50", "--data", esc50, "--prompt", "no placeholder") == 2


def test_unreadable_and_missing_files_are_skipped_and_counted(model_dir, us8k, tmp_path):
    out = tmp_path / "us8k.json"
    assert cli.main(["eval", str(model_dir), "--task", "urbansound8k", "--data", str(us8k), "--out", str(out),
                     "--no-progress", "--num-workers", "2", "--batch-size", "3"]) == 0
    results = json.loads(out.read_text())
    assert results["n"] == {"listed": 12, "clips": 10, "skipped": 2, "classes": 10}
    skipped = {s["key"]: s["reason"] for s in results["skipped"]}
    assert set(skipped) == {"1004-0-0-4.wav", "1008-0-0-8.wav"}
    assert "could not be decoded" in skipped["1004-0-0-4.wav"] and "does not exist" in skipped["1008-0-0-8.wav"]

    model, processor = load_saved(model_dir)
    bench = load_benchmark("urbansound8k", us8k)
    good = [c for i, c in enumerate(bench.clips) if i not in (4, 8)]
    audio = direct_audio_embeds(model, processor, [c.audio for c in good])
    classes = direct_text_embeds(model, processor, [f"This is a sound of {n}." for n in bench.class_names])
    targets = torch.tensor([bench.class_names.index(c.label) for c in good])
    expected = zero_shot_accuracy(audio, classes, targets)
    assert results["metrics"]["zero_shot_top1"] == pytest.approx(expected["top1"])
    assert results["metrics"]["zero_shot_top5"] == pytest.approx(expected["top5"])
    assert "10 clips, 10 classes, 2 skipped" in out.with_suffix(".md").read_text()


def test_eval_datasets_source_with_workers(model_dir, tmp_path, datasets_cache):
    source = make_parquet(tmp_path)
    out = tmp_path / "vgg.json"
    assert cli.main(["eval", str(model_dir), "--task", "zero-shot", "--data", str(source), "--out", str(out),
                     "--no-progress", "--num-workers", "2", "--batch-size", "8"]) == 0
    results = json.loads(out.read_text())
    assert results["n"]["clips"] == 8 and results["protocol"]["class_names"][0] == "dog_bark"

    model, processor = load_saved(model_dir)
    bench = load_benchmark("zero-shot", source)
    audio = direct_audio_embeds(model, processor, [wav_bytes(0.3, 300.0 + 50 * i, i)
                                                   for i in range(8)])
    classes = direct_text_embeds(model, processor, [f"This is a sound of {n}." for n in bench.class_names])
    expected = zero_shot_accuracy(audio, classes, torch.tensor([i % 4 for i in range(8)]), ks=(1,))
    assert results["metrics"]["zero_shot_top1"] == pytest.approx(expected["top1"])
    assert "zero_shot_top5" not in results["metrics"]  # 4 classes: top-5 is meaningless and omitted


def test_eval_clotho_equals_direct_embeddings_and_metric_functions(model_dir, clotho, tmp_path):
    out = tmp_path / "clotho.json"
    assert run_cli(model_dir, "--task", "clotho", "--data", clotho, "--out", out, "--map-variant", "laion") == 0
    results = json.loads(out.read_text())
    model, processor = load_saved(model_dir)
    bench = load_benchmark("clotho", clotho)
    audio = direct_audio_embeds(model, processor, [c.audio for c in bench.clips])
    text = direct_text_embeds(model, processor, [t for c in bench.clips for t in c.captions])
    text_to_audio = torch.arange(3).repeat_interleave(5)
    assert results["metrics"] == pytest.approx(retrieval_metrics(audio, text, text_to_audio, a2t_map="laion"))
    sorted_map = retrieval_metrics(audio, text, text_to_audio)["a2t_mAP@10"]
    assert results["protocol"]["a2t_map_other"] == {"sorted": pytest.approx(sorted_map)}
    assert results["n"] == {"listed": 3, "clips": 3, "skipped": 0, "captions": 15}
    assert results["protocol"]["a2t_map"] == "laion" and results["protocol"]["captions_per_clip"] == 5


def test_eval_audiocaps_reports_missing_clips(model_dir, audiocaps, tmp_path):
    out = tmp_path / "ac.json"
    assert run_cli(model_dir, "--task", "audiocaps", "--data", audiocaps, "--out", out) == 0
    results = json.loads(out.read_text())
    assert results["n"] == {"listed": 5, "clips": 4, "skipped": 1, "captions": 20}
    assert results["skipped"][0]["key"] == "eeeeeeeeeee" and "no audio file" in results["skipped"][0]["reason"]

    model, processor = load_saved(model_dir)
    clips = load_benchmark("audiocaps", audiocaps).clips[:4]
    audio = direct_audio_embeds(model, processor, [c.audio for c in clips])
    text = direct_text_embeds(model, processor, [t for c in clips for t in c.captions])
    assert results["metrics"] == pytest.approx(retrieval_metrics(audio, text, torch.arange(4).repeat_interleave(5)))


# ---------------------------------------------------------------------------------------------------- exact values

# Similarity of caption i (rows; clip 0 owns captions 0-4, clip 1 5-9, clip 2 10-14) to clip j (columns), given as
# the caption's position in clip j's audio->text ranking (0 = most similar); similarity = (20 - position) / 100.
POSITIONS = [
    (3, 0, 10), (0, 9, 11), (1, 10, 0), (12, 1, 2), (7, 11, 8),  # clip 0: own positions 3, 0, 1, 12, 7
    (13, 2, 1), (14, 4, 7), (2, 5, 3), (10, 7, 4), (11, 8, 5),  # clip 1: own positions 2, 4, 5, 7, 8
    (8, 12, 6), (4, 13, 9), (5, 3, 13), (9, 6, 14), (6, 14, 12),  # clip 2: own positions 6, 9, 13, 14, 12
]


def controlled_embeddings(monkeypatch, captions: list[str]) -> None:
    """Make every LaionClapModel return chosen embeddings: audio in clip order, text by caption.

    Audio j is the unit vector e_j of R^4; caption i is (s_i0, s_i1, s_i2, r_i) with s_ij = (20 - position) / 100 and
    r_i filling the norm to 1, so cosine(caption i, clip j) = s_ij exactly and no two captions tie for any clip.
    """
    tokenizer = make_tokenizer()
    sims = torch.tensor([[(20 - p) / 100 for p in row] for row in POSITIONS], dtype=torch.float64)
    text = torch.cat([sims, (1 - sims.pow(2).sum(1, keepdim=True)).sqrt()], 1).float()  # (15, 4)
    by_caption = dict(zip(captions, text, strict=True))
    counter = itertools.count()

    def audio_embeds(self, input_features, is_longer=None):
        return torch.eye(4)[[next(counter) for _ in range(input_features.shape[0])]]

    def text_embeds(self, input_ids, attention_mask=None, token_type_ids=None):
        return torch.stack([by_caption[t] for t in tokenizer.batch_decode(input_ids, skip_special_tokens=True)])

    monkeypatch.setattr(LaionClapModel, "get_audio_embeds", audio_embeds)
    monkeypatch.setattr(LaionClapModel, "get_text_embeds", text_embeds)


def test_retrieval_values_worked_out_by_hand_and_the_two_map_variants(model_dir, clotho, tmp_path, monkeypatch):
    captions = [t for c in load_benchmark("clotho", clotho).clips for t in c.captions]
    results = {}
    for variant in ("sorted", "laion"):
        controlled_embeddings(monkeypatch, captions)
        out = tmp_path / f"{variant}.json"
        assert run_cli(model_dir, "--task", "clotho", "--data", clotho, "--out", out, "--map-variant", variant,
                       "--model-name", f"hand-{variant}") == 0
        results[variant] = json.loads(out.read_text())

    # text->audio: caption i's rank = the clips it is more similar to than its own, from POSITIONS:
    # ranks 1,0,1,2,0 | 1,0,2,1,1 | 0,1,2,2,1 -> four 0s, seven 1s, four 2s.
    t2a = {"t2a_R@1": 4 / 15, "t2a_R@5": 1.0, "t2a_R@10": 1.0, "t2a_mAP@10": (4 + 7 / 2 + 4 / 3) / 15}
    # audio->text: best own positions 0, 2, 6 -> R@1 1/3, R@5 2/3, R@10 1.
    # Sorted AP@10 (captions in rank order, i-th found at position p adds i / (p + 1), divided by 5):
    #   clip 0 at 0,1,3,7 (12 is past 10): (1 + 2/2 + 3/4 + 4/8) / 5 = 0.65
    #   clip 1 at 2,4,5,7,8: (1/3 + 2/5 + 3/6 + 4/8 + 5/9) / 5;  clip 2 at 6,9: (1/7 + 2/10) / 5
    # LAION's variant takes clip 0's positions in caption order 3,0,1,(12),7: (1/4 + 2/1 + 3/2 + 4/8) / 5 = 0.85;
    # clips 1 and 2 are already in rank order, so they agree.
    clip1 = (1 / 3 + 2 / 5 + 3 / 6 + 4 / 8 + 5 / 9) / 5
    clip2 = (1 / 7 + 2 / 10) / 5
    a2t = {"a2t_R@1": 1 / 3, "a2t_R@5": 2 / 3, "a2t_R@10": 1.0}
    assert results["sorted"]["metrics"] == pytest.approx({**t2a, **a2t, "a2t_mAP@10": (0.65 + clip1 + clip2) / 3})
    assert results["laion"]["metrics"] == pytest.approx({**t2a, **a2t, "a2t_mAP@10": (0.85 + clip1 + clip2) / 3})
    assert results["sorted"]["protocol"]["a2t_map_other"]["laion"] == pytest.approx((0.85 + clip1 + clip2) / 3)

    # the paper-style table: one row per model, T→A then A→T columns, in %
    table = markdown_table([results["sorted"], results["laion"]])
    assert "| Model | T→A R@1 | T→A R@5 | T→A R@10 | T→A mAP@10 | A→T R@1 | A→T R@5 | A→T R@10 | A→T mAP@10 |" in table
    assert "| hand-sorted | 26.7 | 100.0 | 100.0 | 58.9 | 33.3 | 66.7 | 100.0 | 39.2 |" in table
    assert "| hand-laion | 26.7 | 100.0 | 100.0 | 58.9 | 33.3 | 66.7 | 100.0 | 45.9 |" in table
    assert table.startswith("Clotho evaluation retrieval (%)")
    # model-index: every score under audio-text retrieval, against Clotho's evaluation split
    index = yaml.safe_load((tmp_path / "sorted.model-index.yaml").read_text())["model-index"]
    (entry,) = index[0]["results"]
    assert entry["task"]["type"] == "audio-text-retrieval"
    assert entry["dataset"] == {"name": "Clotho", "type": "clotho", "split": "evaluation"}
    metrics = {m["type"]: m["value"] for m in entry["metrics"]}
    assert metrics == pytest.approx(results["sorted"]["metrics"]) and metrics["t2a_R@1"] == pytest.approx(4 / 15)
    # LAION's mAP is named as such in the model-index, never as the correct one
    index = yaml.safe_load((tmp_path / "laion.model-index.yaml").read_text())["model-index"]
    metrics = {m["type"]: m["value"] for m in index[0]["results"][0]["metrics"]}
    assert "a2t_mAP@10" not in metrics and metrics["a2t_mAP@10_laion"] == pytest.approx((0.85 + clip1 + clip2) / 3)


def test_markdown_table_combines_models_and_datasets():
    def zs(model, dataset, top1, fold=None):
        return {"model": model, "kind": "zero-shot", "dataset": dataset, "fold": fold, "split": None,
                "metrics": {"zero_shot_top1": top1, "zero_shot_top5": 1.0},
                "n": {"clips": 10, "classes": 5, "skipped": 0}, "protocol": {"prompts": ["{label}"]}}

    table = markdown_table([zs("a", "ESC-50", 0.5), zs("a", "US8K", 0.25), zs("b", "ESC-50", 0.125)])
    assert "| Model | ESC-50 | US8K |" in table
    assert "| a | 50.0 | 25.0 |" in table and "| b | 12.5 | – |" in table


def test_register_adds_the_eval_command(model_dir, clotho):
    parser = argparse.ArgumentParser()
    eval_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", str(model_dir), "--task", "clotho", "--data", str(clotho)])
    assert args.run is eval_command.run and args.map_variant == "sorted" and args.prompts is None
