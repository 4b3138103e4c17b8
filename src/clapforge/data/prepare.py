"""`clapforge prepare SRC OUT`: audio files or any `datasets` source -> LAION-Audio-630K-style shards.

Output: OUT/<split>/shard-NNNNN.tar (48 kHz mono 16-bit FLAC + json per sample), OUT/<split>/sizes.json and
OUT/manifest.json (clips, hours, skipped sources with reasons).

Resume and dedupe. The sources are processed in a fixed order (sorted relative paths, or dataset row order) and packed
into shards in that order, so a run's output depends only on its inputs. Every finished shard has a journal record in
OUT/.prepare/<split>/ (the source range it covers, its clips with their audio hashes, the sources it skipped); the
record is written *before* the shard's atomic rename, so the rename is the single commit point of both. A rerun keeps
the committed prefix of records, reloads their hashes for dedupe, and continues from the first uncommitted source;
sizes.json and the manifest are always rebuilt from the records at the end. A kill at any moment therefore loses at
most the shard being written, and the rerun's shards are identical to an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..atomic import atomic_write_json
from .prepare_inputs import (
    Item,
    dataset_items,
    find_captions_table,
    folder_items,
    load_source_dataset,
    read_captions_table,
)
from .prepare_pool import Journal, ShardPacker, run_ordered
from .shards import SAMPLE_RATE, write_sizes


def prepare(src: str | Path, out: str | Path, *, captions: str | Path | None = None, file_column: str = "file_name",
            caption_column: str = "caption", label_column: str = "labels", dataset: bool = False,
            audio_column: str = "audio", dataset_config: str | None = None, dataset_split: str = "train",
            split: str = "train", shard_size_mb: float = 64, workers: int | None = None,
            progress: bool = True) -> dict:
    """Convert SRC into shards under OUT/<split>/ and return the manifest (also written to OUT/manifest.json).

    Reruns into the same OUT resume: finished shards are kept as they are and the result equals one uninterrupted
    run's.
    """
    out = Path(out)
    workers = (os.cpu_count() or 1) if workers is None else workers
    max_bytes = int(shard_size_mb * 2**20)
    plan = {"src": str(src), "dataset": dataset, "split": split, "max_bytes": max_bytes,
            "columns": [file_column, caption_column, label_column, audio_column],
            "dataset_config": dataset_config, "dataset_split": dataset_split}
    journal = Journal(out, split)
    if dataset:
        items, total = _dataset_plan(str(src), dataset_config, dataset_split, audio_column, caption_column,
                                     label_column, plan, journal)
    else:
        items, total = _folder_plan(Path(src), captions, file_column, caption_column, label_column, plan, journal)
    records = journal.committed()
    packer = ShardPacker(journal, records, max_bytes)
    _pack(packer, items(packer.start), total, workers, progress)
    return _finalize(out, split, journal.committed(), created_from=str(src))


def _folder_plan(src: Path, captions, file_column, caption_column, label_column, plan, journal):
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist (pass --dataset for a `datasets` source)")
    table_path = Path(captions) if captions else find_captions_table(src)
    if not table_path.is_file():
        raise FileNotFoundError(f"captions table {table_path} does not exist")
    all_items = folder_items(src, read_captions_table(table_path, file_column, caption_column, label_column))
    # The plan fixes the sources and the table's content: resuming with either changed would mix two results.
    plan["sources_sha1"] = hashlib.sha1("\n".join(i.source for i in all_items).encode()).hexdigest()
    plan["captions_sha1"] = hashlib.sha1(table_path.read_bytes()).hexdigest()
    journal.check_plan(plan)
    return (lambda start: iter(all_items[start:])), len(all_items)


def _dataset_plan(src, dataset_config, dataset_split, audio_column, caption_column, label_column, plan, journal):
    source = load_source_dataset(src, dataset_config, dataset_split)
    journal.check_plan(plan)
    total = None
    info_splits = getattr(getattr(source, "info", None), "splits", None) or {}
    if dataset_split in info_splits and info_splits[dataset_split].num_examples:
        total = info_splits[dataset_split].num_examples

    def items(start: int) -> Iterator[Item]:
        return dataset_items(source, src, audio_column, caption_column, label_column, start)

    return items, total


def _pack(packer: ShardPacker, items: Iterator[Item], total: int | None, workers: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=packer.start, unit="clip", desc="prepare", disable=not progress)
    try:
        for result in run_ordered(items, workers):
            packer.add(result)
            bar.update(1)
        packer.finish()
    except BaseException:
        packer.abort()  # no half shard under a final name; the committed ones stay for the rerun
        raise
    finally:
        bar.close()


def _finalize(out: Path, split: str, records: list[dict], created_from: str) -> dict:
    """sizes.json and manifest.json, rebuilt from the journal, so a crash between shard and manifest is harmless."""
    split_dir = out / split
    split_dir.mkdir(parents=True, exist_ok=True)
    sizes = {record["shard"]: len(record["clips"]) for record in records if record["shard"] is not None}
    write_sizes(split_dir, sizes)
    seconds = sum(clip["duration"] for record in records for clip in record["clips"])
    skipped = [{**entry, "split": split} for record in records for entry in record["skipped"]]
    manifest = _read_manifest(out)
    manifest["splits"][split] = {"clips": sum(sizes.values()), "hours": seconds / 3600, "shards": len(sizes),
                                 "source": created_from}
    manifest["skipped"] = [e for e in manifest["skipped"] if e.get("split") != split] + skipped
    manifest["clips"] = sum(s["clips"] for s in manifest["splits"].values())
    manifest["hours"] = sum(s["hours"] for s in manifest["splits"].values())
    manifest["sample_rate"] = SAMPLE_RATE
    manifest["created_by"] = "clapforge prepare"
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def _read_manifest(out: Path) -> dict:
    """The existing manifest (another split may already be in OUT), or an empty one."""
    path = out / "manifest.json"
    manifest = {}
    if path.exists():
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    manifest.setdefault("splits", {})
    manifest.setdefault("skipped", [])
    return manifest
