"""Shard primitives: FLAC round trip, decode errors, ShardWriter rollover and atomicity, sizes.json."""

import io
import json
import tarfile
import wave

import numpy as np
import pytest

from clapforge.atomic import atomic_write_json
from clapforge.data.shards import (
    SAMPLE_RATE,
    EmptyAudioError,
    ShardWriter,
    decode_audio,
    encode_flac,
    read_sizes,
    write_sizes,
)
from conftest import tone


def test_flac_round_trip_is_lossless_at_16_bits():
    audio = tone(0.5, freq=440.0)
    flac = encode_flac(audio)
    assert flac[:4] == b"fLaC"
    decoded = decode_audio(flac)
    assert decoded.dtype == np.float32 and decoded.shape == audio.shape
    np.testing.assert_allclose(decoded, audio, atol=1 / 32768)
    # Snapped to the 16-bit grid on encoding, so a second round trip is exact.
    np.testing.assert_array_equal(decode_audio(encode_flac(decoded)), decoded)


def test_decode_resamples_and_downmixes(tmp_path):
    import torch
    from torchcodec.encoders import AudioEncoder

    left, right = tone(1.0, freq=300.0, sr=16000), tone(1.0, freq=500.0, sr=16000, seed=1)
    path = tmp_path / "stereo.wav"
    AudioEncoder(torch.from_numpy(np.stack([left, right])), sample_rate=16000).to_file(str(path))
    decoded = decode_audio(path)
    assert decoded.shape == (3 * 16000,)
    assert decode_audio(path, sample_rate=16000).shape == (16000,)
    np.testing.assert_allclose(decode_audio(path, sample_rate=16000), (left + right) / 2, atol=2e-4)


def _empty_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
    return buffer.getvalue()


def test_decode_errors_name_the_reason(tmp_path):
    with pytest.raises(ValueError, match="could not be decoded as audio"):
        decode_audio(b"this is not audio at all" * 10)
    with pytest.raises(EmptyAudioError, match="empty"):
        decode_audio(b"")
    (tmp_path / "empty.flac").write_bytes(b"")
    with pytest.raises(EmptyAudioError, match=r"empty\.flac is empty"):
        decode_audio(tmp_path / "empty.flac")
    with pytest.raises(EmptyAudioError, match="no audio samples"):
        decode_audio(_empty_wav())
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        decode_audio(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="non-empty"):
        encode_flac(np.zeros(0, dtype=np.float32))


def _samples(n: int) -> list[tuple[str, np.ndarray, bytes]]:
    clips = [tone(0.2 + 0.05 * i, freq=200.0 + 100 * i, seed=i) for i in range(n)]
    return [(f"clip_{i:03d}", clip, encode_flac(clip)) for i, clip in enumerate(clips)]


def test_shard_writer_rolls_over_and_reads_back_with_datasets(tmp_path):
    import datasets

    samples = _samples(5)
    max_bytes = 2 * max(len(flac) for _, _, flac in samples) + 4096  # room for two samples per shard
    with ShardWriter(tmp_path, max_bytes=max_bytes) as writer:
        for key, clip, flac in samples:
            writer.write(key, flac, {"text": [f"caption {key}"], "tag": ["x"], "duration": len(clip) / SAMPLE_RATE})
    assert writer.written == {"shard-00000.tar": 2, "shard-00001.tar": 2, "shard-00002.tar": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == list(writer.written)  # no .tmp left
    assert all((tmp_path / name).stat().st_size <= max_bytes for name in writer.written)

    stream = datasets.load_dataset("webdataset", data_files={"train": str(tmp_path / "*.tar")}, split="train",
                                   streaming=True)
    assert stream.num_shards == 3
    rows = list(stream)
    assert [row["__key__"] for row in rows] == [key for key, _, _ in samples]
    for row, (key, clip, _) in zip(rows, samples, strict=True):
        assert row["json"]["text"] == [f"caption {key}"] and row["json"]["tag"] == ["x"]
        assert row["flac"]["sampling_rate"] == SAMPLE_RATE
        np.testing.assert_allclose(row["flac"]["array"], clip, atol=1 / 32768)


def test_shard_writer_start_index_prefix_and_oversized_sample(tmp_path):
    (key, _, flac), = _samples(1)
    writer = ShardWriter(tmp_path, prefix="val", max_bytes=100, start_index=7)
    writer.write(key, flac, {"text": "one"})
    writer.write("second", flac, {"text": "two"})
    # A sample larger than max_bytes still gets written, alone in its shard.
    assert writer.close() == {"val-00007.tar": 1, "val-00008.tar": 1}
    with tarfile.open(tmp_path / "val-00008.tar") as tar:
        assert tar.getnames() == ["second.flac", "second.json"]
        assert json.load(tar.extractfile("second.json")) == {"text": "two"}


def test_shard_writer_never_leaves_a_partial_shard(tmp_path):
    (key, _, flac), = _samples(1)
    with pytest.raises(RuntimeError, match="boom"), ShardWriter(tmp_path) as writer:
        writer.write(key, flac, {"text": "a"})
        assert (tmp_path / "shard-00000.tar.tmp").exists()
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_shard_writer_rejects_keys_webdataset_would_split(tmp_path):
    writer = ShardWriter(tmp_path)
    for key in ["a.b", "a/b", ""]:
        with pytest.raises(ValueError, match="no dots or slashes"):
            writer.write(key, b"x", {})


def test_sizes_merge_atomically(tmp_path):
    assert read_sizes(tmp_path) == {}
    write_sizes(tmp_path, {"shard-00001.tar": 3})
    write_sizes(tmp_path, {"shard-00000.tar": 5, "shard-00001.tar": 4})
    assert read_sizes(tmp_path) == {"shard-00000.tar": 5, "shard-00001.tar": 4}
    atomic_write_json(tmp_path / "x.json", {"é": [1]})
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8")) == {"é": [1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sizes.json", "x.json"]
    (tmp_path / "sizes.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        read_sizes(tmp_path)
