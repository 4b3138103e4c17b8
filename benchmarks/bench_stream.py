"""Streaming throughput: clips/s from shards through decode, resample and feature extraction, next to raw decode.

What is measured, on a corpus this script generates in a temporary folder (200 clips of 10 s, a tone plus noise):

1. Raw decode (the floor): torchcodec `AudioDecoder(bytes, num_channels=1).get_all_samples()` over the FLAC bytes
   held in memory, one process: 48 kHz FLAC as stored in shards, and 44.1 kHz FLAC decoded to 48 kHz (FFmpeg's
   swresample inside the decoder, what a `datasets` source at another rate costs).
2. `stream_dataset` over 8 webdataset shards of 48 kHz FLAC (`shuffle=True`): examples only (tar read, json,
   decode, caption draw), then through a `DataLoader` (batch 16) whose collate runs
   `create_feature_extractor("htsat-tiny")` (log-mel, `rand_trunc`), with 0 and 2 workers.
3. The same with a `datasets` source: 2 parquet files of 44.1 kHz FLAC (decode + resample to 48 kHz + features).

Each figure is the best of `--rounds` (default 1) passes over the whole corpus, stream construction included (the OS
page cache holds the files). Run `.venv/bin/python benchmarks/bench_stream.py` (2-3 minutes on 2 cores):
it prints a table and rewrites the "## Streaming" section of benchmarks/RESULTS.md, leaving the others alone.
`--quick` does one round on 48 clips and writes nothing.
"""

import argparse
import datetime
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import clapforge  # noqa: E402
from bench_model import replace_section  # noqa: E402
from clapforge.data.stream import stream_dataset  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
COMMAND = ".venv/bin/python benchmarks/bench_stream.py"
SECONDS = 10.0
BATCH = 16


def clip(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)
    return (tone + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def flac(audio: np.ndarray, sr: int) -> bytes:
    from torchcodec.encoders import AudioEncoder

    return AudioEncoder(torch.from_numpy(audio)[None], sample_rate=sr).to_tensor("flac").numpy().tobytes()


def make_corpus(root: Path, clips: int) -> tuple[list[bytes], list[bytes]]:
    """root/train/shard-*.tar (48 kHz) and root/parquet/part-*.parquet (44.1 kHz); returns both sets of bytes."""
    import datasets

    rng = np.random.default_rng(0)
    at48 = [flac(clip(SECONDS, 48000, rng), 48000) for _ in range(clips)]
    at44 = [flac(clip(SECONDS, 44100, rng), 44100) for _ in range(clips)]
    (root / "train").mkdir(parents=True)
    per_shard = -(-clips // 8)
    for s in range(8):
        with tarfile.open(root / "train" / f"shard-{s:05d}.tar", "w") as tar:
            for i in range(s * per_shard, min(clips, (s + 1) * per_shard)):
                meta = json.dumps({"text": [f"a tone, clip {i}", f"clip {i}: a steady tone"]}).encode()
                for name, data in ((f"clip{i:05d}.flac", at48[i]), (f"clip{i:05d}.json", meta)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (root / "parquet").mkdir()
    features = datasets.Features({"audio": datasets.Audio(), "text": datasets.Value("string")})
    half = clips // 2
    for part, rows in enumerate((range(half), range(half, clips))):
        table = {"audio": [{"bytes": at44[i], "path": f"clip{i}.flac"} for i in rows],
                 "text": [f"a tone, clip {i}" for i in rows]}
        datasets.Dataset.from_dict(table, features=features).to_parquet(root / "parquet" / f"part-{part}.parquet")
    return at48, at44


def best_rate(run, n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        seen = run()
        best = min(best, time.perf_counter() - start)
        assert seen == n, f"expected {n} clips, got {seen}"
    return n / best


def raw_decode(blobs: list[bytes], sample_rate: int | None) -> int:
    from torchcodec.decoders import AudioDecoder

    for blob in blobs:
        AudioDecoder(blob, sample_rate=sample_rate, num_channels=1).get_all_samples()
    return len(blobs)


class Featurize:
    """The DataLoader collate: the batch's waveforms -> log-mel features (what the trainer's collate will do)."""

    def __init__(self) -> None:
        self.extractor = clapforge.create_feature_extractor("htsat-tiny")

    def __call__(self, batch: list[dict]) -> int:
        self.extractor([e["audio"] for e in batch], sampling_rate=48000)["input_features"]
        return len(batch)


def stream_examples(source, columns=None) -> int:
    return sum(1 for _ in stream_dataset(source, columns=columns))


def stream_features(source, workers: int, featurize: Featurize, columns=None) -> int:
    ds = stream_dataset(source, columns=columns)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers, collate_fn=featurize)
    return sum(loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="48 clips, 1 round, and do not write RESULTS.md")
    args = parser.parse_args()
    clips, rounds = (48, 1) if args.quick else (args.clips, args.rounds)
    import datasets

    datasets.disable_progress_bars()
    root = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    try:
        t0 = time.perf_counter()
        at48, at44 = make_corpus(root, clips)
        print(f"corpus: {clips} clips of {SECONDS:.0f} s in {time.perf_counter() - t0:.1f} s ({root})")
        featurize = Featurize()
        parquet, columns = str(root / "parquet" / "*.parquet"), {"caption": "text"}
        rows = [
            ("raw decode, 48 kHz FLAC (torchcodec)", "-", best_rate(lambda: raw_decode(at48, None), clips, rounds)),
            ("raw decode, 44.1 kHz FLAC -> 48 kHz", "-", best_rate(lambda: raw_decode(at44, 48000), clips, rounds)),
            ("shards -> examples (no features)", "0", best_rate(lambda: stream_examples(root), clips, rounds)),
        ]
        for workers in (0, 2):
            rate = best_rate(lambda w=workers: stream_features(root, w, featurize), clips, rounds)
            rows.append(("shards -> examples -> htsat-tiny features", str(workers), rate))
        for workers in (0, 2):
            rate = best_rate(lambda w=workers: stream_features(parquet, w, featurize, columns), clips, rounds)
            rows.append(("parquet 44.1 kHz -> 48 kHz examples -> features", str(workers), rate))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    realtime = SECONDS
    table = ["| pipeline | DataLoader workers | clips/s | x real time |", "|---|---|---|---|"]
    table += [f"| {name} | {workers} | {rate:.1f} | {rate * realtime:.0f} |" for name, workers, rate in rows]
    print("\n".join(table))
    if args.quick:
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = (f"`{COMMAND}`, {datetime.date.today().isoformat()}, torch {torch.__version__}, {torch.get_num_threads()} "
            f"threads, {os.cpu_count()} cores, CPU only; load average at the end {load} (other jobs share these cores, "
            f"so absolute clips/s move with the load). {clips} clips of {SECONDS:.0f} s (a tone plus noise), "
            f"best of {rounds} passes; batch {BATCH}; features: `create_feature_extractor(\"htsat-tiny\")` "
            "(rand_trunc log-mel) in the DataLoader's collate.\n\n" + "\n".join(table))
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"  # re-read now: others edit this file too
    RESULTS.write_text(replace_section(text, "## Streaming", body))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
