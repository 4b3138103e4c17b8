"""Streaming LAION-Audio-630K-style shards from a dataset repo on a local server speaking the Hub API.

The shards are written by clapforge's own ShardWriter and published with huggingface_hub's `upload_folder`, then read
back through `hf://datasets/...` (huggingface_hub's HfFileSystem under fsspec) or a `datasets` Hub id, in this process:
the `hub` fixture points huggingface_hub and datasets at the server the way HF_ENDPOINT does at import.
"""

import json
import tarfile
import types
import zlib

import numpy as np
import pytest

from clapforge.data.shards import ShardWriter, encode_flac, quantize_int16, write_sizes
from clapforge.data.stream import SkipCounter, stream_dataset
from hub_server import HubServer, hub_env

SR = 48000
REPO = "tester/laion-style"
FOLDER = f"hf://datasets/{REPO}"
GLOB = f"hf://datasets/{REPO}/train/*.tar"


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """A local Hub, with this process's huggingface_hub and datasets pointed at it and a private HF_HOME."""
    import datasets.config
    from huggingface_hub import HfFileSystem, constants
    from huggingface_hub.utils import close_session

    home = tmp_path / "hf_home"
    with HubServer(tmp_path / "hub") as server:
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(key, raising=False)
        for key, value in hub_env(server.url, home, base={}).items():
            monkeypatch.setenv(key, value)
        # huggingface_hub and datasets read the environment once, at import, long before this test.
        for module, values in {
            constants: {
                "ENDPOINT": server.url,
                "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
                "HF_HUB_OFFLINE": False,
                "HF_HUB_DISABLE_XET": True,
                "HF_HOME": str(home),
                "HF_HUB_CACHE": str(home / "hub"),
            },
            datasets.config: {
                "HF_ENDPOINT": server.url,
                "HUB_DATASETS_URL": server.url + "/datasets/{repo_id}/resolve/{revision}/{path}",
                "HF_HUB_OFFLINE": False,
                "HF_DATASETS_CACHE": home / "datasets",  # streaming still writes lock files there
                "HF_MODULES_CACHE": home / "modules",
            },
        }.items():
            for name, value in values.items():
                monkeypatch.setattr(module, name, value)
        # fsspec keeps one HfFileSystem (with its cached listings) per endpoint, and a later server may get this port.
        HfFileSystem.clear_instance_cache()
        try:
            yield server
        finally:
            HfFileSystem.clear_instance_cache()
            close_session()  # pooled keep-alive connections to this server
    assert not server.unknown  # every request a client made had a route


def tone(key: str) -> np.ndarray:
    """50 ms of a sine whose pitch depends on the key."""
    freq = 200.0 + 10 * (zlib.crc32(key.encode()) % 50)
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(SR // 20) / SR)).astype(np.float32)


def captions_of(key: str) -> list[str]:
    return [f"caption {c} of {key}" for c in range(3)]


def write_split(split_dir, prefix: str, n_shards: int, per_shard: int) -> list[str]:
    """split_dir/shard-0000s.tar holding keys f"{prefix}{s}_{i}", and sizes.json; returns the keys in shard order."""
    keys, sizes = [], {}
    for s in range(n_shards):
        with ShardWriter(split_dir, start_index=s) as writer:
            for i in range(per_shard):
                key = f"{prefix}{s}_{i}"
                writer.write(key, encode_flac(tone(key)), {"text": captions_of(key), "tag": ["Tone"]})
                keys.append(key)
        sizes.update(writer.written)
    write_sizes(split_dir, sizes)
    return keys


def write_corpus(root, n_shards: int, per_shard: int) -> list[str]:
    """The LAION-Audio-630K layout: root/train/ with `n_shards` shards and root/validation/ with one; the train keys."""
    write_split(root / "validation", "v", 1, per_shard)
    return write_split(root / "train", "t", n_shards, per_shard)


def publish(folder, repo_id: str = REPO) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset")


def pairs(ds) -> list[tuple[str, str]]:
    return [(e["key"], e["caption"]) for e in ds]


@pytest.mark.parametrize("source", [FOLDER, GLOB], ids=["folder", "glob"])
def test_two_ranks_see_every_hub_example_once(hub, tmp_path, source):
    keys = write_corpus(tmp_path / "corpus", n_shards=4, per_shard=3)
    publish(tmp_path / "corpus")
    assert hub.files(REPO, "dataset") >= {"train/shard-00000.tar", "train/sizes.json", "validation/shard-00000.tar"}

    seen, skipped = [], 0
    for rank in (0, 1):
        ds = stream_dataset(source, split="train", rank=rank, world_size=2, seed=3)
        examples = list(ds)
        seen.append([e["key"] for e in examples])
        skipped += ds.skip_counter.total()
        for e in examples:
            assert e["captions"] == captions_of(e["key"]) and e["caption"] in e["captions"]
            assert e["labels"] == ["Tone"] and e["sampling_rate"] == SR
            np.testing.assert_allclose(e["audio"], quantize_int16(tone(e["key"])) / 32768.0, atol=1e-6)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(keys)  # every train example once, no validation one
    assert len(seen[0]) == len(seen[1]) == 6  # 4 shards: two whole shards per rank
    assert skipped == 0
    shard_reads = [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    assert all("/train/" in path for path in shard_reads)  # the validation split was never downloaded


def test_two_ranks_stream_a_hub_dataset_id(hub, tmp_path):
    """A `datasets` source named by its Hub id: parquet files with an audio column, loaded by datasets itself."""
    import datasets

    rows = {
        "audio": [{"bytes": encode_flac(tone(f"c{i}")), "path": None} for i in range(6)],
        "text": [f"clip number {i}" for i in range(6)],
        "id": [f"c{i}" for i in range(6)],
    }
    features = datasets.Features(
        {"audio": datasets.Audio(), "text": datasets.Value("string"), "id": datasets.Value("string")}
    )
    table = datasets.Dataset.from_dict(rows, features=features)
    (tmp_path / "clips" / "data").mkdir(parents=True)
    for i in range(2):
        table.shard(2, i, contiguous=True).to_parquet(tmp_path / "clips" / "data" / f"train-{i:05d}-of-00002.parquet")
    publish(tmp_path / "clips", "tester/clips")

    seen = []
    for rank in (0, 1):
        ds = stream_dataset("tester/clips", columns={"caption": "text", "key": "id"}, rank=rank, world_size=2)
        seen.append({e["key"]: (e["captions"], len(e["audio"])) for e in ds})
        assert ds.skip_counter.total() == 0
    assert not set(seen[0]) & set(seen[1])
    assert {**seen[0], **seen[1]} == {f"c{i}": ([f"clip number {i}"], SR // 20) for i in range(6)}


def test_killed_hub_stream_resumes_where_it_stopped(hub, tmp_path):
    """The local resume guarantee (tests/test_stream.py), over the Hub and 2 ranks: the examples after a restore in a
    fresh run (no file system or listing shared with the killed one) are exactly those of an uninterrupted run."""
    from huggingface_hub import HfFileSystem

    keys = write_corpus(tmp_path / "corpus", n_shards=4, per_shard=3)
    publish(tmp_path / "corpus")

    def stream(rank: int):
        return stream_dataset(FOLDER, rank=rank, world_size=2, seed=7, epoch=1)

    union = []
    for rank in (0, 1):
        full = pairs(stream(rank))
        union += [k for k, _ in full]
        for stop in (1, 3, 4):  # inside the first shard, at the shard boundary, inside the second shard
            ds, before = stream(rank), []
            for e in ds:
                before.append((e["key"], e["caption"]))
                if len(before) == stop:
                    state = json.loads(json.dumps(ds.state_dict()))  # what a checkpoint stores
                    break
            HfFileSystem.clear_instance_cache()  # the killed process's file system and listings are gone
            resumed = stream(rank)
            resumed.load_state_dict(state)
            after = pairs(resumed)
            assert before + after == full
            assert len(set(before + after)) == len(full) == 6
    assert sorted(union) == sorted(keys)


def test_deleted_and_truncated_shards_are_skipped_and_counted(hub, tmp_path, caplog):
    """A shard deleted from the repo after the listing was taken, and one stored cut in the middle of a member."""
    from huggingface_hub import HfApi

    keys = write_corpus(tmp_path / "corpus", n_shards=4, per_shard=3)
    shard = tmp_path / "corpus" / "train" / "shard-00003.tar"
    with tarfile.open(shard) as tar:
        last_audio = [m for m in tar.getmembers() if m.name.endswith(".flac")][-1]
    shard.write_bytes(shard.read_bytes()[: last_audio.offset_data + last_audio.size // 2])
    publish(tmp_path / "corpus")

    counter = SkipCounter()
    ds = stream_dataset(GLOB, shuffle=False, skip_counter=counter)  # the shards are listed here
    seen = []
    with caplog.at_level("WARNING", logger="clapforge.data.stream"):
        for e in ds:  # must not raise
            if not seen:  # reading shard 0: shard 2 goes away (a commit on the branch the URLs name)
                HfApi().delete_file("train/shard-00002.tar", repo_id=REPO, repo_type="dataset")
            seen.append(e["key"])
    assert "train/shard-00002.tar" not in hub.files(REPO, "dataset")
    assert seen == [k for k in keys if k[:3] in ("t0_", "t1_")] + ["t3_0", "t3_1"]  # shard 3 up to the cut
    assert counter.counts() == {"corrupt_shard": 2}
    gone, cut = sorted(r.getMessage() for r in caplog.records if r.name == "clapforge.data.stream")
    assert "in shard-00002.tar: corrupt_shard (unreadable after 0 samples" in gone and "Entry Not Found" in gone
    assert "in shard-00003.tar: corrupt_shard (unreadable after 2 samples" in cut


def test_download_cut_short_is_skipped_and_counted_once_over_ranks(hub, tmp_path, monkeypatch, caplog):
    """The server announces a shard's full Content-Length and drops the connection halfway, on every attempt."""
    import huggingface_hub.utils._http as hub_http

    # huggingface_hub retries a cut download 5 times with 1 + 2 + 4 + 8 + 8 s of backoff before it gives up.
    monkeypatch.setattr(hub_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    keys = write_corpus(tmp_path / "corpus", n_shards=3, per_shard=3)
    publish(tmp_path / "corpus")
    size = (tmp_path / "corpus" / "train" / "shard-00001.tar").stat().st_size
    hub.cut_downloads[f"datasets/{REPO}/train/shard-00001.tar"] = size // 2

    seen, counts = [], {}
    with caplog.at_level("WARNING", logger="clapforge.data.stream"):
        for rank in (0, 1):  # 3 shards over 2 ranks: each rank reads every shard and keeps every other example
            ds = stream_dataset(GLOB, rank=rank, world_size=2, seed=1)
            seen.append([e["key"] for e in ds])  # must not raise
            for reason, n in ds.skip_counter.counts().items():
                counts[reason] = counts.get(reason, 0) + n
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(k for k in keys if not k.startswith("t1_"))
    assert counts == {"corrupt_shard": 1}  # both ranks met it, one of them counts it
    (skip,) = [r.getMessage() for r in caplog.records if r.name == "clapforge.data.stream"]  # logged by its owner
    assert "in shard-00001.tar: corrupt_shard" in skip and "peer closed connection" in skip
    cut_reads = [r for r in hub.requests if r.path.endswith("/train/shard-00001.tar") and r.method == "GET"]
    assert len(cut_reads) >= 2  # one per rank at least: the shard was really asked for, not skipped unread
