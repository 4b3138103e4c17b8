"""`clapforge prepare`: folder and `datasets` sources, the manifest, dedupe, and resume after a kill."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from clapforge import atomic
from clapforge.data import prepare as prepare_module
from clapforge.data.prepare import prepare
from clapforge.data.prepare_inputs import make_key
from clapforge.data.prepare_pool import TEST_SLEEP_ENV
from clapforge.data.shards import SAMPLE_RATE, decode_audio, encode_flac
from conftest import tone


def write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write (T,) or (C, T) float audio in the format named by the extension, with FFmpeg through torchcodec."""
    import torch
    from torchcodec.encoders import AudioEncoder

    path.parent.mkdir(parents=True, exist_ok=True)
    samples = torch.from_numpy(np.atleast_2d(audio).astype(np.float32))  # (C, T)
    AudioEncoder(samples, sample_rate=sample_rate).to_file(str(path))


def read_shards(split_dir: Path) -> dict[str, dict]:
    """{key: {"flac": bytes, "json": dict, "shard": name}} over every tar; fails on a key seen twice."""
    samples: dict[str, dict] = {}
    for shard in sorted(split_dir.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                entry = samples.setdefault(key, {"shard": shard.name})
                assert ext not in entry, f"{key}.{ext} appears twice"
                data = tar.extractfile(member).read()
                entry[ext] = json.loads(data) if ext == "json" else data
    return samples


def snapshot(out: Path) -> dict:
    """Everything a run produces, by content: shard members, sizes.json, manifest.json."""
    split_dir = out / "train"
    tars = {}
    for shard in sorted(split_dir.glob("*.tar")):
        with tarfile.open(shard) as tar:
            tars[shard.name] = [(m.name, hashlib.sha1(tar.extractfile(m).read()).hexdigest()) for m in tar]
    return {"tars": tars, "sizes": json.loads((split_dir / "sizes.json").read_text()),
            "manifest": json.loads((out / "manifest.json").read_text()),
            "leftovers": sorted(p.name for p in out.rglob("*.tmp"))}


def file_ids(split_dir: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in split_dir.glob("*.tar")}


# ---------------------------------------------------------------------------------------------------- folder mode

GOOD = {  # name -> (seconds, sample rate, channels, file format via the extension)
    "a.wav": (1.0, 22050, 1),
    "sub/b.flac": (0.7, 44100, 2),
    "c.ogg": (0.8, 16000, 1),
    "d.mp3": (0.6, 32000, 2),
    "e.wav": (0.5, 48000, 2),
}


@pytest.fixture()
def messy_folder(tmp_path) -> Path:
    src = tmp_path / "src"
    for i, (name, (seconds, rate, channels)) in enumerate(GOOD.items()):
        audio = np.stack([tone(seconds, freq=220.0 * (i + 1) + 50 * c, sr=rate, seed=i + c) for c in range(channels)])
        write_audio(src / name, audio, rate)
    # a.wav's 16-bit samples in another container: decodes to identical PCM, so it is a duplicate of a.wav.
    (src / "dup.flac").write_bytes(encode_flac(decode_audio(src / "a.wav", sample_rate=22050), sample_rate=22050))
    write_audio(src / "nocap.wav", tone(0.3, freq=999.0, sr=8000, seed=9)[None], 8000)
    (src / "bad.wav").write_bytes(b"RIFF....WAVEfmt not really a wav file" * 20)
    (src / "empty.ogg").write_bytes(b"")
    (src / "notes.txt").write_text("not audio, not in the table: ignored")
    return src


ROWS = [  # (file, captions, labels); b has two rows and a list, e has labels only
    ("a.wav", ["a tone"], []),
    ("sub/b.flac", ["x", "y"], []),
    ("sub/b.flac", ["z"], []),
    ("c.ogg", ["low hum"], ["hum"]),
    ("d.mp3", ["beep"], []),
    ("e.wav", [], ["dog", "bark"]),
    ("dup.flac", ["same as a"], []),
    ("bad.wav", ["corrupt"], []),
    ("empty.ogg", ["nothing"], []),
    ("missing.wav", ["not on disk"], []),
]


def write_table(path: Path, fmt: str) -> None:
    if fmt == "csv":
        import csv

        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "caption", "labels"])
            for name, captions, labels in ROWS:
                cell = json.dumps(captions) if len(captions) > 1 else "".join(captions)
                writer.writerow([name, cell, ",".join(labels)])
    else:  # JSONL with renamed columns and native lists
        with open(path, "w") as f:
            for name, captions, labels in ROWS:
                f.write(json.dumps({"path": name, "text": captions, "tags": labels}) + "\n")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_prepare_folder_manifest_and_shards(messy_folder, tmp_path, fmt):
    from clapforge.data.captions import template_caption

    table = tmp_path / f"captions.{fmt}"
    write_table(table, fmt)
    columns = {} if fmt == "csv" else {"file_column": "path", "caption_column": "text", "label_column": "tags"}
    out = tmp_path / "out"
    # The CSV run goes through the process pool, the JSONL one runs inline.
    manifest = prepare(messy_folder, out, captions=table, shard_size_mb=0.1, workers=2 if fmt == "csv" else 1,
                       progress=False, **columns)

    reasons = {entry["source"]: entry["reason"] for entry in manifest["skipped"]}
    assert reasons.pop("bad.wav").startswith("unreadable: audio file ")
    assert reasons == {"dup.flac": f"duplicate of {make_key('a.wav')}", "empty.ogg": "empty audio",
                       "missing.wav": "missing file", "nocap.wav": "missing caption and labels"}
    assert manifest["clips"] == manifest["splits"]["train"]["clips"] == len(GOOD)

    samples = read_shards(out / "train")
    assert set(samples) == {make_key(name) for name in GOOD}
    sizes = json.loads((out / "train" / "sizes.json").read_text())
    assert len(sizes) > 1 and sum(sizes.values()) == len(GOOD)  # 0.1 MB shards: the clips span several
    assert sizes == {shard: sum(s["shard"] == shard for s in samples.values()) for shard in sizes}
    total_seconds = 0.0
    for name, (seconds, _, _) in GOOD.items():
        sample = samples[make_key(name)]
        from torchcodec.decoders import AudioDecoder

        metadata = AudioDecoder(sample["flac"]).metadata
        assert (metadata.codec, metadata.sample_rate, metadata.num_channels) == ("flac", SAMPLE_RATE, 1)
        audio = decode_audio(sample["flac"])
        assert sample["json"]["duration"] == len(audio) / SAMPLE_RATE
        assert abs(len(audio) / SAMPLE_RATE - seconds) < 0.06  # mp3/ogg add a few ms of codec padding
        assert sample["json"]["original_filename"] == name
        total_seconds += len(audio) / SAMPLE_RATE
    assert manifest["hours"] == pytest.approx(total_seconds / 3600)
    assert samples[make_key("sub/b.flac")]["json"]["text"] == ["x", "y", "z"]
    assert samples[make_key("c.ogg")]["json"]["tag"] == ["hum"]
    assert samples[make_key("e.wav")]["json"]["text"] == [template_caption(["dog", "bark"])]
    assert samples[make_key("e.wav")]["json"]["tag"] == ["dog", "bark"]
    # Resampled and downmixed by the same decoder the stream uses: the 48 kHz wav survives bit-exactly at 16 bits.
    e_source = decode_audio(messy_folder / "e.wav")
    np.testing.assert_allclose(decode_audio(samples[make_key("e.wav")]["flac"]), e_source, atol=1 / 32768)
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_prepare_cli_and_clear_errors(messy_folder, tmp_path):
    from clapforge.cli import main

    write_table(messy_folder / "metadata.csv", "csv")  # found without --captions
    out = tmp_path / "out"
    assert main(["prepare", str(messy_folder), str(out), "--workers", "1", "--no-progress", "--split", "test"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["test"]["clips"] == len(GOOD) and manifest["created_by"] == "clapforge prepare"
    # A rerun with other options must not mix into the finished output.
    with pytest.raises(ValueError, match=r"different \['max_bytes'\]"):
        prepare(messy_folder, out, split="test", shard_size_mb=1, workers=1, progress=False)
    with pytest.raises(ValueError, match="no 'file' column"):
        prepare(messy_folder, tmp_path / "o2", file_column="file", workers=1, progress=False)
    with pytest.raises(FileNotFoundError, match="source folder"):
        prepare(tmp_path / "nope", tmp_path / "o3", workers=1, progress=False)


# ---------------------------------------------------------------------------------------------------- datasets mode


def test_prepare_audiofolder_dataset(tmp_path):
    src = tmp_path / "af"
    for i in range(3):
        write_audio(src / f"clip{i}.wav", tone(0.4, freq=300.0 + 100 * i, sr=16000, seed=i)[None], 16000)
    (src / "metadata.csv").write_text('file_name,caption,labels\nclip0.wav,first,\nclip1.wav,,"cat,meow"\n'
                                      'clip2.wav,,\n')
    manifest = prepare(src, tmp_path / "out", dataset=True, workers=1, progress=False)
    assert manifest["clips"] == 2
    assert [(e["source"], e["reason"]) for e in manifest["skipped"]] == [("clip2.wav#2", "missing caption and labels")]
    samples = read_shards(tmp_path / "out" / "train")
    texts = sorted(tuple(s["json"]["text"]) for s in samples.values())
    assert texts == [("The sound of cat and meow",), ("first",)]
    for sample in samples.values():
        assert len(decode_audio(sample["flac"])) == int(0.4 * SAMPLE_RATE)


def test_prepare_parquet_with_class_labels(tmp_path):
    import datasets

    clips = [tone(0.3, freq=400.0 + 50 * i, seed=i) for i in range(3)]
    audio = [{"bytes": encode_flac(clip), "path": f"c{i}.flac"} for i, clip in enumerate(clips)]
    audio.append({"bytes": b"garbage" * 50, "path": "broken.flac"})
    features = datasets.Features({"sound": datasets.Audio(), "label": datasets.ClassLabel(names=["dog", "rain"])})
    table = datasets.Dataset.from_dict({"sound": audio, "label": [0, 1, 1, 0]}, features=features)
    table.to_parquet(str(tmp_path / "data.parquet"))

    manifest = prepare(str(tmp_path / "data.parquet"), tmp_path / "out", dataset=True, audio_column="sound",
                       label_column="label", workers=1, progress=False)
    assert manifest["clips"] == 3
    [skipped] = manifest["skipped"]
    assert skipped["source"] == "broken.flac#3" and skipped["reason"].startswith("unreadable:")
    samples = read_shards(tmp_path / "out" / "train")
    by_source = {s["json"]["original_filename"]: s for s in samples.values()}
    assert [by_source[f"c{i}.flac#{i}"]["json"]["tag"] for i in range(3)] == [["dog"], ["rain"], ["rain"]]
    for i, clip in enumerate(clips):
        np.testing.assert_allclose(decode_audio(by_source[f"c{i}.flac#{i}"]["flac"]), clip, atol=1 / 32768)


# ---------------------------------------------------------------------------------------------------- resume

N_RESUME = 24


@pytest.fixture()
def many_files(tmp_path) -> tuple[Path, float]:
    """24 short distinct clips (plus a late duplicate of the first) and a shard size holding about 4 clips."""
    src = tmp_path / "many"
    rows = ["file_name,caption"]
    for i in range(N_RESUME):
        write_audio(src / f"f{i:02d}.wav", tone(0.25, freq=200.0 + 37 * i, sr=16000, seed=i)[None], 16000)
        rows.append(f"f{i:02d}.wav,clip {i}")
    write_audio(src / "zz_dup.wav", tone(0.25, freq=200.0, sr=16000, seed=0)[None], 16000)
    rows.append("zz_dup.wav,again")
    (src / "metadata.csv").write_text("\n".join(rows) + "\n")
    clip_bytes = len(encode_flac(decode_audio(src / "f00.wav"))) + 2048
    return src, (4 * clip_bytes + 1024) / 2**20


def reference_run(src: Path, tmp_path: Path, shard_size: float) -> dict:
    out = tmp_path / "reference"
    prepare(src, out, shard_size_mb=shard_size, workers=1, progress=False)
    reference = snapshot(out)
    assert len(reference["tars"]) >= 5 and not reference["leftovers"]
    assert {"source": "zz_dup.wav", "reason": f"duplicate of {make_key('f00.wav')}", "split": "train"} in \
        reference["manifest"]["skipped"]
    return reference


def test_resume_after_sigkill(many_files, tmp_path):
    src, shard_size = many_files
    reference = reference_run(src, tmp_path, shard_size)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "clapforge", "prepare", str(src), str(out), "--workers", "1",
               "--shard-size", str(shard_size), "--no-progress"]
    process = subprocess.Popen(command, env={**os.environ, TEST_SLEEP_ENV: "0.15"}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:
        while not (out / "train" / "shard-00001.tar").exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "prepare never wrote its second shard"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = file_ids(out / "train")
    assert 2 <= len(finished) < len(reference["tars"]), "the kill should land in the middle of the job"

    prepare(src, out, shard_size_mb=shard_size, workers=1, progress=False)
    result = snapshot(out)
    assert result == reference  # same keys in the same shards, each once, none lost, no .tmp
    after = file_ids(out / "train")
    assert {name: after[name] for name in finished} == finished  # finished shards were not rewritten


def test_resume_after_crash_between_journal_and_rename(many_files, tmp_path, monkeypatch):
    src, shard_size = many_files
    reference = reference_run(src, tmp_path, shard_size)
    out = tmp_path / "out"
    real_replace = os.replace

    def crash_on_third_shard(source, target):
        if Path(target).name == "shard-00002.tar":
            raise KeyboardInterrupt("simulated kill after the journal record, before the shard's rename")
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", crash_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, out, shard_size_mb=shard_size, workers=1, progress=False)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert sorted(file_ids(out / "train")) == ["shard-00000.tar", "shard-00001.tar"]
    assert (out / ".prepare" / "train" / "shard-00002.json").exists()  # the uncommitted record a kill would leave
    finished = file_ids(out / "train")

    prepare(src, out, shard_size_mb=shard_size, workers=1, progress=False)
    result = snapshot(out)
    assert result == reference
    assert {name: file_ids(out / "train")[name] for name in finished} == finished


def test_resume_after_crash_before_sizes_and_manifest(many_files, tmp_path, monkeypatch):
    src, shard_size = many_files
    reference = reference_run(src, tmp_path, shard_size)
    out = tmp_path / "out"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill after the last shard, before sizes.json and manifest.json")

    monkeypatch.setattr(prepare_module, "_finalize", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, out, shard_size_mb=shard_size, workers=1, progress=False)
    monkeypatch.undo()
    assert not (out / "train" / "sizes.json").exists() and not (out / "manifest.json").exists()
    finished = file_ids(out / "train")
    assert len(finished) == len(reference["tars"])

    for _ in range(2):  # finishing, then a rerun of a finished job: nothing is rewritten either time
        prepare(src, out, shard_size_mb=shard_size, workers=1, progress=False)
        result = snapshot(out)
        assert result == reference
        assert file_ids(out / "train") == finished
