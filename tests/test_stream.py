"""The streamed reader: shards and datasets sources, corrupt samples, 2 ranks, DataLoader workers, resume.

Shards are built here with tarfile + torchcodec's AudioEncoder, independently of clapforge.data.shards.
"""

import csv
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tarfile
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from clapforge.data.captions import template_caption
from clapforge.data.stream import SkipCounter, stream_dataset

SR = 48000


def encode(audio: np.ndarray, sr: int = SR, fmt: str = "flac") -> bytes:
    """(T,) or (C, T) float32 -> encoded bytes."""
    from torchcodec.encoders import AudioEncoder

    samples = torch.from_numpy(np.atleast_2d(audio).astype(np.float32))
    return AudioEncoder(samples, sample_rate=sr).to_tensor(fmt).numpy().tobytes()


def sine(seconds: float, freq: float, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def sample(key: str, meta: dict | bytes, seconds: float = 0.25) -> list[tuple[str, bytes]]:
    meta = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return [(f"{key}.flac", encode(sine(seconds, freq_of(key)))), (f"{key}.json", meta)]


def freq_of(key: str) -> float:
    return 200.0 + 10 * (zlib.crc32(key.encode()) % 50)


def make_shards(root: Path, n_shards: int, per_shard: int, captions: int = 3) -> list[str]:
    """root/train/shard-0000i.tar with `per_shard` good samples each; returns the keys."""
    keys = []
    for s in range(n_shards):
        members = []
        for i in range(per_shard):
            key = f"s{s}_{i:03d}"
            keys.append(key)
            members += sample(key, {"text": [f"caption {c} of {key}" for c in range(captions)], "duration": 0.25})
        write_tar(root / "train" / f"shard-{s:05d}.tar", members)
    return keys


def keys_of(examples) -> list[str]:
    return [e["key"] for e in examples]


def collate_keys(batch: list[dict]) -> list[tuple[str, str]]:
    return [(e["key"], e["caption"]) for e in batch]


# The bad samples of the corruption tests, each with the reason it must be counted under.
ZERO_FRAME_WAV = (b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, SR, 2 * SR, 2, 16)
                  + b"data" + struct.pack("<I", 0))


def bad_members(prefix: str) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
    good_meta = json.dumps({"text": "fine"}).encode()
    flac = encode(sine(0.25, 300))
    members = [
        (f"{prefix}garbage.flac", b"this is not audio at all" * 10), (f"{prefix}garbage.json", good_meta),
        (f"{prefix}truncated.flac", flac[:60]), (f"{prefix}truncated.json", good_meta),
        (f"{prefix}zerobytes.flac", b""), (f"{prefix}zerobytes.json", good_meta),
        (f"{prefix}zeroframes.wav", ZERO_FRAME_WAV), (f"{prefix}zeroframes.json", good_meta),
        (f"{prefix}nocaption.flac", flac), (f"{prefix}nocaption.json", json.dumps({"text": [], "tag": []}).encode()),
        (f"{prefix}blank.flac", flac), (f"{prefix}blank.json", json.dumps({"text": "  "}).encode()),
        (f"{prefix}badjson.flac", flac), (f"{prefix}badjson.json", b'{"text": "unterminated'),
        (f"{prefix}notobject.flac", flac), (f"{prefix}notobject.json", b'["a list"]'),
        (f"{prefix}latin1.flac", flac), (f"{prefix}latin1.json", '{"text": "café"}'.encode("latin-1")),
        (f"{prefix}lonely.flac", flac),
        (f"{prefix}orphan.json", good_meta),
    ]
    # zeroframes: a valid container with no frames; FFmpeg reports it as undecodable, shards.decode_audio may call it
    # empty: both are audio reasons, counted together below.
    reasons = {"undecodable_audio+empty_audio": 4, "no_caption": 2, "bad_json": 2, "bad_text": 1,
               "missing_metadata": 1, "missing_audio": 1}
    return members, reasons


def merged(counts: dict[str, int]) -> dict[str, int]:
    counts = dict(counts)
    audio = counts.pop("undecodable_audio", 0) + counts.pop("empty_audio", 0)
    return {**counts, "undecodable_audio+empty_audio": audio} if audio else counts


def test_shards_keys_audio_and_captions(tmp_path):
    members = sample("multi", {"text": ["a dog barks", "a dog howls", "a hound bays"], "tag": ["Dog"]}, seconds=0.5)
    members += sample("single", {"text": "rain on a roof", "duration": 0.5}, seconds=0.5)
    members += sample("labels", {"text": [], "tag": ["Dog", "Cat"]}, seconds=0.5)
    members += sample("tagsonly", {"tag": "Siren"}, seconds=0.5)
    members += sample("augmented", {"text": "a bell", "text_augment_t5": ["a bell rings"]}, seconds=0.5)
    write_tar(tmp_path / "train" / "shard-00000.tar", members)
    write_tar(tmp_path / "train" / "shard-00001.tar", sample("other", {"text": "wind"}, seconds=0.5))
    write_tar(tmp_path / "validation" / "shard-00000.tar", sample("val", {"text": "held out"}))

    examples = {e["key"]: e for e in stream_dataset(tmp_path, shuffle=False)}
    assert list(examples) == ["multi", "single", "labels", "tagsonly", "augmented", "other"]
    for e in examples.values():
        assert set(e) == {"key", "audio", "sampling_rate", "captions", "caption", "labels"}
        assert e["sampling_rate"] == SR and e["audio"].dtype == np.float32 and e["audio"].shape == (SR // 2,)
        assert e["caption"] in e["captions"]
    assert examples["multi"]["captions"] == ["a dog barks", "a dog howls", "a hound bays"]  # tags unused when captioned
    assert examples["multi"]["labels"] == ["Dog"] and examples["single"]["labels"] == []
    assert examples["tagsonly"]["labels"] == ["Siren"]
    assert examples["single"]["captions"] == ["rain on a roof"]
    assert examples["labels"]["captions"] == [template_caption(["Dog", "Cat"])] == ["The sound of Dog and Cat"]
    assert examples["tagsonly"]["captions"] == ["The sound of Siren"]
    assert examples["augmented"]["captions"] == ["a bell"]
    pooled = {e["key"]: e["captions"] for e in stream_dataset(tmp_path, caption_fields=("text", "text_augment_t5"))}
    assert pooled["augmented"] == ["a bell", "a bell rings"] and pooled["single"] == ["rain on a roof"]
    # The decoded waveform is the encoded one (FLAC: lossless up to quantisation).
    np.testing.assert_allclose(examples["single"]["audio"], sine(0.5, freq_of("single")), atol=1e-4)

    # Same shards named other ways: split folder, glob, list, single file.
    assert keys_of(stream_dataset(tmp_path, split="validation", shuffle=False)) == ["val"]
    assert keys_of(stream_dataset(str(tmp_path / "train" / "*.tar"), shuffle=False)) == list(examples)
    assert keys_of(stream_dataset([tmp_path / "train" / "shard-00001.tar"], shuffle=False)) == ["other"]


def test_caption_draw_and_order_follow_seed_and_epoch(tmp_path):
    keys = make_shards(tmp_path, n_shards=3, per_shard=8)
    ds = stream_dataset(tmp_path, seed=1)
    epoch0 = [(e["key"], e["caption"]) for e in ds]
    assert sorted(k for k, _ in epoch0) == sorted(keys)
    assert [k for k, _ in epoch0] != keys  # shuffled
    assert [(e["key"], e["caption"]) for e in stream_dataset(tmp_path, seed=1)] == epoch0  # deterministic
    # The caption depends on (seed, epoch, key) only: not on the order or on shuffling.
    assert dict(epoch0) == {e["key"]: e["caption"] for e in stream_dataset(tmp_path, seed=1, shuffle=False)}
    ds.set_epoch(1)
    epoch1 = [(e["key"], e["caption"]) for e in ds]
    assert sorted(epoch1) != sorted(epoch0)  # other captions drawn
    assert [k for k, _ in epoch1] != [k for k, _ in epoch0] and sorted(k for k, _ in epoch1) == sorted(keys)
    assert epoch1 == [(e["key"], e["caption"]) for e in stream_dataset(tmp_path, seed=1, epoch=1)]
    assert [(e["key"], e["caption"]) for e in stream_dataset(tmp_path, seed=2)] != epoch0


def test_parquet_source_with_embedded_audio(tmp_path):
    import datasets

    rows = {"audio": [], "text": [], "tags": [], "id": []}
    for i in range(6):
        stereo = np.stack([sine(1.0, 440, 44100), sine(1.0, 440, 44100)])  # same content in both channels
        audio = encode(stereo, 44100, "wav") if i % 2 else encode(sine(1.0, 440), SR, "flac")
        rows["audio"].append({"bytes": audio, "path": None})
        rows["text"].append(f"clip {i}" if i < 4 else None)
        rows["tags"].append(["Bell", "Chime"] if i == 4 else [])
        rows["id"].append(f"id{i}")
    features = datasets.Features({"audio": datasets.Audio(), "text": datasets.Value("string"),
                                  "tags": datasets.List(datasets.Value("string")), "id": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "data.parquet")

    counter = SkipCounter()
    columns = {"caption": "text", "labels": "tags", "key": "id"}
    examples = list(stream_dataset(tmp_path / "data.parquet", columns=columns, shuffle=False, skip_counter=counter))
    assert keys_of(examples) == ["id0", "id1", "id2", "id3", "id4"]  # id5: no text and no tags
    assert counter.counts() == {"no_caption": 1}
    assert examples[4]["captions"] == ["The sound of Bell and Chime"]
    reference = sine(1.0, 440)
    for e in examples:
        assert e["audio"].dtype == np.float32 and e["audio"].ndim == 1 and abs(len(e["audio"]) - SR) <= 1
        n = min(len(reference), len(e["audio"])) - 200  # resampler edge effects
        assert np.corrcoef(e["audio"][100:n], reference[100:n])[0, 1] > 0.999


def test_audiofolder_stereo_44k_becomes_48k_mono(tmp_path):
    left, right = sine(1.0, 440, 44100), 0.5 * sine(1.0, 660, 44100)
    (tmp_path / "clips").mkdir()
    rows = []
    for i in range(3):
        (tmp_path / "clips" / f"clip{i}.wav").write_bytes(encode(np.stack([left, right]), 44100, "wav"))
        rows.append({"file_name": f"clips/clip{i}.wav", "caption": f"two tones {i}" if i else "", "label": "Beep"})
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file_name", "caption", "label"])
        writer.writeheader()
        writer.writerows(rows)

    examples = list(stream_dataset(tmp_path, columns={"caption": "caption", "labels": "label"}, shuffle=False))
    assert [Path(e["key"]).name for e in examples] == ["clip0.wav", "clip1.wav", "clip2.wav"]
    assert [e["captions"] for e in examples] == [["The sound of Beep"], ["two tones 1"], ["two tones 2"]]
    expected = (sine(1.0, 440) + 0.5 * sine(1.0, 660)) / 2  # channel mean at 48 kHz
    for e in examples:
        assert e["audio"].shape == (SR,) and e["audio"].dtype == np.float32
        assert np.corrcoef(e["audio"][200:-200], expected[200:-200])[0, 1] > 0.999


def test_corrupt_samples_are_skipped_logged_and_counted(tmp_path, caplog):
    good = make_shards(tmp_path, n_shards=2, per_shard=3)
    members, reasons = bad_members("x")
    # A third shard: good, bad, good interleaved; a fourth one cut in the middle of its third sample.
    write_tar(tmp_path / "train" / "shard-00002.tar",
              sample("g1", {"text": "ok"}) + members + sample("g2", {"text": "ok"}))
    full = tmp_path / "full.tar"
    write_tar(full, sample("t1", {"text": "ok"}) + sample("t2", {"text": "ok"}) + sample("t3", {"text": "ok"}, 2.0))
    data = full.read_bytes()
    (tmp_path / "train" / "shard-00003.tar").write_bytes(data[: int(len(data) * 0.6)])

    counter = SkipCounter()
    with caplog.at_level("WARNING", logger="clapforge.data.stream"):
        examples = list(stream_dataset(tmp_path, skip_counter=counter))  # must not raise
    assert sorted(keys_of(examples)) == sorted(good + ["g1", "g2", "t1", "t2"])
    assert merged(counter.counts()) == {**reasons, "corrupt_shard": 1}
    assert counter.total() == sum(reasons.values()) + 1
    logged = caplog.text
    for key in ("xgarbage", "xtruncated", "xzerobytes", "xnocaption", "xbadjson", "xlatin1", "xlonely", "xorphan"):
        assert f"'{key}' in shard-00002.tar" in logged
    assert "shard-00003.tar" in logged and "corrupt_shard" in logged


def test_skip_counts_survive_dataloader_workers(tmp_path):
    good = make_shards(tmp_path, n_shards=2, per_shard=5)
    for s in (0, 1):  # append bad samples to both shards so that both workers skip some
        path = tmp_path / "train" / f"shard-{s:05d}.tar"
        with tarfile.open(path) as tar:
            old = [(m.name, tar.extractfile(m).read()) for m in tar]
        write_tar(path, old + bad_members(f"w{s}")[0])
    reasons = bad_members("")[1]

    counter = SkipCounter()
    ds = stream_dataset(tmp_path, seed=3, epoch=1, skip_counter=counter)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_keys)
    seen = [pair for batch in loader for pair in batch]
    assert sorted(k for k, _ in seen) == sorted(good)
    assert merged(counter.counts()) == {reason: 2 * n for reason, n in reasons.items()}
    # The workers drew the same captions, in the same per-shard order, as the main process does for epoch 1:
    # set_epoch reaches the generator and the map inside worker processes.
    in_process = [(e["key"], e["caption"]) for e in stream_dataset(tmp_path, seed=3, epoch=1)]
    assert sorted(seen) == sorted(in_process)
    for shard in ("s0_", "s1_"):
        assert [p for p in seen if p[0].startswith(shard)] == [p for p in in_process if p[0].startswith(shard)]


@pytest.mark.parametrize("n_shards", [4, 3])  # +1 below: 5 -> every other example per rank; 4 -> 2 shards each
def test_two_ranks_in_process_see_each_example_once(tmp_path, n_shards):
    keys = make_shards(tmp_path, n_shards=n_shards, per_shard=5)
    write_tar(tmp_path / "train" / f"shard-{n_shards:05d}.tar",
              sample("last", {"text": "ok"}) + bad_members("r")[0])
    keys.append("last")
    n_bad = sum(bad_members("")[1].values())
    for epoch in (0, 1):
        seen, skipped = [], 0
        for rank in (0, 1):
            counter = SkipCounter()
            seen.append(keys_of(stream_dataset(tmp_path, rank=rank, world_size=2, epoch=epoch, skip_counter=counter)))
            skipped += counter.total()
        assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == sorted(keys)
        assert skipped == n_bad  # each skip counted by exactly one rank, also when every rank reads every sample


TWO_RANKS_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from accelerate import Accelerator
    from accelerate.utils import gather_object
    from clapforge.data.stream import SkipCounter, stream_dataset

    accelerator = Accelerator()
    counter = SkipCounter()
    assert accelerator.num_processes == 2 and accelerator.distributed_type.name == "MULTI_CPU"
    keys = []
    for epoch in (0, 1):
        ds = stream_dataset(sys.argv[1], rank=accelerator.process_index, world_size=accelerator.num_processes, seed=5,
                            skip_counter=counter)
        ds.set_epoch(epoch)
        # The trainer's way: the DataLoader is NOT passed to accelerator.prepare (the stream is already this rank's
        # share; preparing it would shard it again).
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2,
                                             collate_fn=lambda batch: [e["key"] for e in batch])
        keys.append([k for batch in loader for k in batch])
    skipped = torch.tensor([counter.total()])
    total_skipped = accelerator.reduce(skipped, reduction="sum").item()
    per_rank = gather_object([keys])
    if accelerator.is_main_process:
        with open(sys.argv[2], "w") as f:
            json.dump({"per_rank": per_rank, "skipped": total_skipped}, f)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_accelerate_launch(tmp_path):
    keys = make_shards(tmp_path / "data", n_shards=4, per_shard=6)
    write_tar(tmp_path / "data" / "train" / "shard-00004.tar", sample("extra", {"text": "ok"}) + bad_members("p")[0])
    keys.append("extra")  # 5 shards over 2 ranks: datasets falls back to every other example
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS_SCRIPT)
    out = tmp_path / "out.json"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(script), str(tmp_path / "data"), str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    for epoch in (0, 1):
        rank0, rank1 = (report["per_rank"][r][epoch] for r in (0, 1))
        assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == sorted(keys)
    assert report["skipped"] == 2 * sum(bad_members("")[1].values())  # 2 epochs


def test_resume_without_buffer_continues_exactly(tmp_path):
    """Guarantee (shuffle on, shuffle_buffer=0, same source/seed/rank/world_size, same epoch set before iterating):
    the examples after a restore are exactly those an uninterrupted run yields after the checkpoint, in order, with
    the same captions, and skips before the checkpoint are not counted again."""
    make_shards(tmp_path, n_shards=3, per_shard=6)
    write_tar(tmp_path / "train" / "shard-00003.tar", sample("b1", {"text": "ok"}) + bad_members("q")[0]
              + sample("b2", {"text": "ok"}))
    full_counter = SkipCounter()
    full = [(e["key"], e["caption"]) for e in stream_dataset(tmp_path, seed=7, epoch=2, skip_counter=full_counter)]

    for k in (1, 7, 13, len(full) - 1):
        before_counter, after_counter = SkipCounter(), SkipCounter()
        ds = stream_dataset(tmp_path, seed=7, epoch=2, skip_counter=before_counter)
        before = []
        for e in ds:
            before.append((e["key"], e["caption"]))
            if len(before) == k:
                state = ds.state_dict()
                break
        state = json.loads(json.dumps(state))  # it must survive serialisation (accelerate pickles it)
        resumed = stream_dataset(tmp_path, seed=7, epoch=2, skip_counter=after_counter)
        resumed.load_state_dict(state)
        after = [(e["key"], e["caption"]) for e in resumed]
        assert before + after == full
        assert before_counter.total() + after_counter.total() == full_counter.total()


def test_resume_with_shuffle_buffer_loses_only_the_buffer(tmp_path):
    """Guarantee with shuffle_buffer=B: no example is repeated, and at most B examples (those in the buffer at the
    checkpoint) are missing from the rest of the epoch."""
    keys = make_shards(tmp_path, n_shards=2, per_shard=10)
    buffer = 4
    ds = stream_dataset(tmp_path, shuffle_buffer=buffer, seed=1)
    before = []
    for e in ds:
        before.append(e["key"])
        if len(before) == 6:
            state = ds.state_dict()
            break
    resumed = stream_dataset(tmp_path, shuffle_buffer=buffer, seed=1)
    resumed.load_state_dict(state)
    after = keys_of(resumed)
    assert not set(before) & set(after) and len(set(after)) == len(after) and set(after) <= set(keys)
    assert len(keys) - buffer <= len(before) + len(after) < len(keys)


def test_unknown_column_and_missing_shards_fail_early(tmp_path):
    with pytest.raises(FileNotFoundError):
        stream_dataset(tmp_path / "nothing-*.tar")
    with pytest.raises(ValueError, match="columns"):
        stream_dataset(tmp_path, columns={"sound": "audio"})
