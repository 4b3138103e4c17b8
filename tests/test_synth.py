"""The built-in synthetic corpus (`clapforge synth`): plan, captions, audio, shards, and that it is learnable."""

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from clapforge.cli import main
from clapforge.data.shards import SAMPLE_RATE, decode_audio, read_sizes
from clapforge.data.synth import (
    ADJECTIVES,
    LABELS,
    NOUNS,
    PHRASES,
    SPLITS,
    ZERO_SHOT_PROMPT,
    phrasing_set,
    plan_corpus,
    render_spec,
    synthesize_corpus,
)
from clapforge.data.synth_sounds import EVENT_TYPES

EVENTS = list(EVENT_TYPES)


@pytest.fixture(scope="module")
def big_plan():
    """Metadata only: cheap even for thousands of clips."""
    return plan_corpus(3000, seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "corpus"
    manifest = synthesize_corpus(out, 45, seed=3, workers=1, shard_bytes=2**20, progress=False)
    return out, manifest


@pytest.fixture(scope="module")
def rendered():
    """300 planned clips rendered, capped at 3 s so that the module stays fast."""
    specs = plan_corpus(300, seed=7)
    return [(spec, render_spec(dataclasses.replace(spec, duration=min(spec.duration, 3.0)))) for spec in specs]


def _shard_digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.tar"))}


def _read_corpus(out: Path) -> dict[str, tuple[bytes, dict]]:
    """{key: (flac bytes, json)} over every split, read with tarfile."""
    import tarfile

    samples: dict[str, dict] = {}
    for shard in sorted(out.rglob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return {key: (parts["flac"], json.loads(parts["json"])) for key, parts in samples.items()}


# --- plan -------------------------------------------------------------------------------------------------------


def test_plan_covers_every_event_in_every_split_balanced(big_plan):
    sizes = {split: sum(s.split == split for s in big_plan) for split in SPLITS}
    assert sizes == {"train": 2400, "validation": 300, "test": 300}
    assert len(EVENTS) >= 12
    for split in SPLITS:
        counts = [sum(s.split == split and s.main.event == e for s in big_plan) for e in EVENTS]
        assert max(counts) - min(counts) <= 1 and min(counts) > 0, (split, counts)
    keys = [s.key for s in big_plan]
    assert len(set(keys)) == len(keys) and not any("." in k or "/" in k for k in keys)


def test_durations_span_1_to_30_s_mostly_short(big_plan):
    durations = np.array([s.duration for s in big_plan])
    assert durations.min() >= 1.0 and durations.max() <= 30.0
    assert durations.min() < 1.1 and durations.max() > 25.0
    assert 0.05 < np.mean(durations > 10.0) < 0.2  # long clips exist (fusion) but most are short (corpus size)
    assert 3.0 < durations.mean() < 6.0
    assert all(round(d * SAMPLE_RATE) == pytest.approx(d * SAMPLE_RATE, abs=1e-6) for d in durations[:50])


def test_attributes_match_the_drawn_parameters(big_plan):
    for spec in big_plan:
        kind = EVENT_TYPES[spec.main.event]
        assert (spec.pitch != "") == (kind.pitch_hz is not None)
        if spec.pitch:
            low, high = kind.pitch_hz[spec.pitch]
            assert low <= spec.main.f0 <= high
        if spec.speed:
            low, high = kind.rate_hz[spec.speed]
            assert low <= spec.main.rate <= high
            assert spec.duration * spec.main.rate >= 1.5  # speed is only named when it can be heard
        assert spec.length == ("short" if spec.duration <= 2.5 else "long" if spec.duration >= 10 else "")
        assert spec.background is None or spec.background.event != spec.main.event
    backgrounds = np.mean([s.background is not None for s in big_plan])
    assert 0.2 < backgrounds < 0.4
    for kind in EVENT_TYPES.values():  # the two values of an attribute never overlap
        for ranges in (kind.pitch_hz, kind.rate_hz):
            if ranges:
                assert list(ranges.values())[0][1] * 1.5 < list(ranges.values())[1][0]


# --- captions ---------------------------------------------------------------------------------------------------


def test_test_phrasings_are_disjoint_from_train_phrasings(big_plan):
    train, test = phrasing_set("train"), phrasing_set("test")
    assert train and test and not train & test
    # The generator really draws test captions from the held-out pool: no training attribute word appears.
    train_words = {w for values in ADJECTIVES.values() for e in values.values() for w in e["train"]}
    train_phrases = {p for values in PHRASES.values() for e in values.values() for p in e["train"]}
    for spec in big_plan:
        for caption in spec.captions:
            words = set(caption.lower().split())
            if spec.split == "test":
                assert not words & train_words, caption
                assert not any(caption.endswith(p) or p + " " in caption for p in train_phrases), caption
            if spec.split != "test":
                test_words = {w for values in ADJECTIVES.values() for e in values.values() for w in e["test"]}
                assert not words & test_words, caption


def test_captions_name_the_attributes_actually_used(big_plan):
    def words_of(table, name, value, pool):
        return table[name][value][pool]

    for spec in big_plan[::7]:
        pool = "test" if spec.split == "test" else "train"
        assert 1 <= len(spec.captions) <= 5
        first = spec.captions[0].lower()  # the complete caption names every attribute
        assert any(n.split(" ", 1)[-1] in first for n in NOUNS[spec.main.event][pool]), first
        for name, value in (("loudness", spec.loudness), ("pitch", spec.pitch)):
            if value:
                assert any(re.search(rf"\b{w}\b", first) for w in words_of(ADJECTIVES, name, value, pool)), first
                other = next(v for v in ADJECTIVES[name] if v != value)
                assert not any(re.search(rf"\b{w}\b(?!-)", first) for w in words_of(ADJECTIVES, name, other, pool))
        for name, value in (("speed", spec.speed), ("length", spec.length)):
            if value:
                assert any(p.lower() in first for p in words_of(PHRASES, name, value, pool)), first
        if spec.background is not None:
            assert any(n.split(" ", 1)[-1] in first for n in NOUNS[spec.background.event][pool]), first


def test_zero_shot_labels_are_not_caption_phrasings(corpus, big_plan):
    out, _ = corpus
    labels = json.loads((out / "labels.json").read_text())
    assert labels["classes"] == EVENTS and set(labels["labels"]) == set(EVENTS)
    assert labels["prompt"] == ZERO_SHOT_PROMPT
    nouns = {n for entry in NOUNS.values() for pool in entry.values() for n in pool}
    assert not set(LABELS.values()) & nouns
    prompts = {ZERO_SHOT_PROMPT.format(label=label).lower() for label in LABELS.values()}
    captions = [c.lower() for s in big_plan for c in s.captions]
    assert not any(c in prompts or c.startswith("this is a sound") for c in captions)
    # ... but the label's head word is something the training captions teach.
    train_text = " ".join(c.lower() for s in big_plan if s.split == "train" for c in s.captions)
    for label in LABELS.values():
        assert label.split()[-1][:5] in train_text, label


# --- audio ------------------------------------------------------------------------------------------------------


def test_audio_is_finite_unclipped_and_peak_normalised(rendered):
    for spec, audio in rendered:
        assert audio.dtype == np.float32 and np.isfinite(audio).all()
        assert np.abs(audio).max() == pytest.approx(spec.peak, rel=1e-4) and spec.peak < 1.0


def test_loudness_classes_differ_in_rms(rendered):
    def rms_db(audio):
        return 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))

    for event in EVENTS:
        loud = [rms_db(a) for s, a in rendered if s.main.event == event and s.loudness == "loud"]
        quiet = [rms_db(a) for s, a in rendered if s.main.event == event and s.loudness == "quiet"]
        assert loud and quiet, event
        assert np.mean(loud) - np.mean(quiet) > 10.0, event


def test_high_pitch_tones_peak_above_low_ones(rendered):
    def peak_hz(audio):
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0])))
        return np.fft.rfftfreq(audio.shape[0], 1 / SAMPLE_RATE)[spectrum.argmax()]

    for event in ("steady_tone", "beeping", "buzz"):
        clips = [(s, a) for s, a in rendered if s.main.event == event and s.background is None]
        low = [peak_hz(a) for s, a in clips if s.pitch == "low"]
        high = [peak_hz(a) for s, a in clips if s.pitch == "high"]
        assert low and high, event
        assert max(low) < min(high), (event, low, high)
        for spec, audio in clips:
            assert peak_hz(audio) == pytest.approx(spec.main.f0, rel=0.02)


def test_classes_are_separable_by_a_trivial_feature(rendered):
    """Protects `make demo`: 1-nearest-neighbour on pooled log-mel statistics must be far above chance (1/15)."""
    import clapforge

    # The preset's mel front end on 3 s windows (the clips here are at most 3 s; 10 s would be mostly padding).
    extractor = clapforge.create_feature_extractor("htsat-tiny", max_length_s=3)
    mel = extractor([a for _, a in rendered], sampling_rate=SAMPLE_RATE)["input_features"][:, 0].numpy()  # (B, T, F)
    features = []
    for (_, audio), m in zip(rendered, mel, strict=True):
        m = m[: audio.shape[0] // extractor.hop_length]  # drop the repeat padding
        m = m - m.mean()  # loudness-invariant: the class must not be guessed from the level
        features.append(np.concatenate([m.mean(0), m.std(0), np.abs(np.diff(m, axis=0)).mean(0)]))
    features = np.array(features)
    labels = np.array([EVENTS.index(s.main.event) for s, _ in rendered])
    train = np.array([s.split == "train" for s, _ in rendered])
    mu, sd = features[train].mean(0), features[train].std(0) + 1e-6
    x = (features - mu) / sd
    distances = ((x[~train][:, None] - x[train][None]) ** 2).sum(-1)
    accuracy = np.mean(labels[train][distances.argmin(1)] == labels[~train])
    assert accuracy > 0.5, accuracy  # chance is 0.067; measured about 0.75


# --- corpus on disk ---------------------------------------------------------------------------------------------


def test_corpus_layout_and_manifest(corpus):
    out, manifest = corpus
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["created_by"] == "clapforge synth" and manifest["skipped"] == []
    assert {s: manifest["splits"][s]["clips"] for s in SPLITS} == {"train": 37, "validation": 4, "test": 4}
    assert manifest["splits"]["test"]["phrasing"] == "test" and manifest["splits"]["validation"]["phrasing"] == "train"
    assert set(manifest["phrasings"]["test"]).isdisjoint(manifest["phrasings"]["train"])
    samples = _read_corpus(out)
    assert len(samples) == 45
    for split in SPLITS:
        sizes = read_sizes(out / split)
        assert sum(sizes.values()) == manifest["splits"][split]["clips"]
        assert sorted(sizes) == sorted(p.name for p in (out / split).glob("*.tar"))
    assert len(read_sizes(out / "train")) > 1  # 1 MiB shards: the writer rolled over
    hours = sum(meta["duration"] for _, meta in samples.values()) / 3600
    assert manifest["hours"] == pytest.approx(hours, abs=1e-4)


def test_decoded_audio_matches_the_json(corpus):
    out, _ = corpus
    for key, (flac, meta) in list(_read_corpus(out).items())[:8]:
        audio = decode_audio(flac)
        assert audio.shape[0] == round(meta["duration"] * SAMPLE_RATE), key
        assert np.isfinite(audio).all() and np.abs(audio).max() == pytest.approx(meta["peak"], abs=1e-3)
        assert meta["tag"][0] == meta["event"] and len(meta["tag"]) == 1 + bool(meta["background"])
        assert isinstance(meta["text"], list) and 1 <= len(meta["text"]) <= 5


def test_same_seed_same_bytes_any_workers_other_seed_differs(corpus, tmp_path):
    out, manifest = corpus
    again = synthesize_corpus(tmp_path / "again", 45, seed=3, workers=2, shard_bytes=2**20, progress=False)
    assert again == manifest
    assert _shard_digests(tmp_path / "again") == _shard_digests(out)  # identical shards, hence identical audio

    other = synthesize_corpus(tmp_path / "other", 45, seed=4, workers=1, shard_bytes=2**20, progress=False)
    assert other["hours"] != manifest["hours"]
    first, second = _read_corpus(out), _read_corpus(tmp_path / "other")
    for key in ("train-000000", "validation-000000", "test-000000"):
        assert first[key][1]["text"] != second[key][1]["text"]
        a, b = decode_audio(first[key][0]), decode_audio(second[key][0])
        assert a.shape != b.shape or not np.array_equal(a, b)


def test_shards_stream_through_datasets_webdataset(corpus):
    import datasets

    out, _ = corpus
    files = {split: sorted(str(p) for p in (out / split).glob("*.tar")) for split in SPLITS}
    streamed = datasets.load_dataset("webdataset", data_files=files, streaming=True)
    seen = 0
    for split in SPLITS:
        for example in streamed[split]:
            meta = example["json"]
            assert meta["split"] == split and example["__key__"].startswith(split)
            audio = example["flac"]
            assert audio["sampling_rate"] == SAMPLE_RATE
            assert audio["array"].shape[-1] == round(meta["duration"] * SAMPLE_RATE)
            assert isinstance(meta["text"][0], str) and meta["tag"][0] in EVENTS
            seen += 1
    assert seen == 45


def test_cli_writes_and_refuses_to_mix_corpora(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--clips", "6", "--seed", "1", "--workers", "1", "--no-progress"]) == 0
    assert "6 clips" in capsys.readouterr().out
    assert (out / "labels.json").exists() and sum(read_sizes(out / "train").values()) == 4
    assert main(["synth", str(out), "--clips", "3", "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", str(out), "--clips", "3", "--workers", "1", "--no-progress", "--overwrite"]) == 0
    assert sum(sum(read_sizes(out / split).values()) for split in SPLITS) == 3


def test_bad_arguments_fail_with_a_message():
    with pytest.raises(ValueError, match="clips"):
        plan_corpus(0)
    with pytest.raises(ValueError, match="training clips"):
        plan_corpus(10, validation_fraction=0.6, test_fraction=0.6)
