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

import argparse
import csv
import hashlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .shards import SAMPLE_RATE, EmptyAudioError, ShardWriter, atomic_write_json, write_sizes

# Extensions scanned in a source folder; a file the captions table names is used whatever its extension.
AUDIO_EXTENSIONS = {
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".mka", ".webm", ".mp4", ".m4b", ".ac3", ".amr", ".ape", ".wv", ".mpc", ".spx", ".3gp",
}
DEFAULT_CAPTION_FILES = ["metadata.csv", "metadata.jsonl", "captions.csv", "captions.jsonl"]
# Hidden test hook: seconds each worker sleeps per source, so a test can kill a run in the middle.
TEST_SLEEP_ENV = "CLAPFORGE_PREPARE_TEST_SLEEP"
JOURNAL_DIR = ".prepare"


@dataclass
class Item:
    """One source sample, as sent to a worker (picklable)."""

    index: int
    source: str  # the name the manifest uses: a path relative to SRC, or a dataset row
    key: str
    audio: bytes | str | None  # encoded bytes or a local path; None when the dataset row has no audio
    captions: list[str]
    labels: list[str]


@dataclass
class Result:
    index: int
    source: str
    key: str
    reason: str | None = None  # set when the source is skipped
    flac: bytes = b""
    meta: dict = field(default_factory=dict)
    digest: str = ""
    duration: float = 0.0


# ---------------------------------------------------------------------------------------------------- keys, cells


def make_key(name: str) -> str:
    """A stable webdataset key for a source name: its sanitised text (no dots or slashes) plus a short hash."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", str(PurePosixPath(name).with_suffix(""))).strip("_")[:64] or "clip"
    # The hash covers the full name (extension included), so "a.wav" and "a.mp3" or "a b" and "a_b" stay apart.
    return f"{stem}_{hashlib.sha1(name.encode('utf-8')).hexdigest()[:10]}"


def _as_list(value, split_commas: bool) -> list[str]:
    """A caption/label cell -> list of non-empty strings: a list, a JSON list in a string, or a plain string."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = [text]  # a caption that merely starts with "["
        else:
            value = text.split(",") if split_commas else [text]
    if not isinstance(value, list | tuple):
        value = [value]
    return [str(v).strip() for v in value if v is not None and str(v).strip()]


def _caption_texts(captions: list[str], labels: list[str]) -> list[str]:
    """The json "text": the captions, or the paper's template caption from the labels when there are none."""
    if captions or not labels:
        return captions
    try:  # captions.py is optional at run time: without it the stream skips the sample's empty text
        from .captions import template_caption
    except ImportError:
        return []
    return [template_caption(labels)]


# ---------------------------------------------------------------------------------------------------- folder mode


def read_captions_table(path: Path, file_column: str = "file_name", caption_column: str = "caption",
                        label_column: str = "labels") -> dict[str, tuple[list[str], list[str]]]:
    """{relative file path: (captions, labels)} from a CSV/TSV or JSONL table; repeated rows add captions."""
    path = Path(path)
    rows = _read_rows(path)
    table: dict[str, tuple[list[str], list[str]]] = {}
    for number, row in enumerate(rows, start=1):
        if file_column not in row:
            raise ValueError(f"{path} row {number} has no {file_column!r} column (columns: {sorted(row)}); "
                             "set --file-column")
        if number == 1 and caption_column not in row and label_column not in row:
            raise ValueError(f"{path} has neither a {caption_column!r} nor a {label_column!r} column "
                             f"(columns: {sorted(row)}); set --caption-column / --label-column")
        name = _normalise_relpath(str(row[file_column] or ""))
        if not name:
            raise ValueError(f"{path} row {number}: the {file_column!r} cell is empty, expected a path relative to SRC")
        captions, labels = table.setdefault(name, ([], []))
        _extend_unique(captions, _as_list(row.get(caption_column), split_commas=False))
        _extend_unique(labels, _as_list(row.get(label_column), split_commas=True))
    return table


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix in {".jsonl", ".json"}:
        rows = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path} line {number} is not valid JSON: {error}") from error
        return rows
    raise ValueError(f"captions table {path} should be .csv, .tsv or .jsonl")


def _normalise_relpath(name: str) -> str:
    return PurePosixPath(name.strip().replace("\\", "/")).as_posix().removeprefix("./") if name.strip() else ""


def _extend_unique(values: list[str], new: list[str]) -> None:
    values.extend(v for v in new if v not in values)


def find_captions_table(src: Path) -> Path:
    """The default captions table inside SRC (audiofolder's metadata.csv, ...)."""
    for name in DEFAULT_CAPTION_FILES:
        if (src / name).is_file():
            return src / name
    raise ValueError(f"no captions table given and none of {DEFAULT_CAPTION_FILES} exists in {src}; pass --captions")


def folder_items(src: Path, table: dict[str, tuple[list[str], list[str]]]) -> list[Item]:
    """Every audio file under SRC plus every file the table names, in sorted relative-path order."""
    on_disk = {p.relative_to(src).as_posix() for p in src.rglob("*")
               if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
               and not any(part.startswith(".") for part in p.relative_to(src).parts)}
    items = []
    for index, name in enumerate(sorted(on_disk | set(table))):
        captions, labels = table.get(name, ([], []))
        items.append(Item(index, name, make_key(name), str(src / name), list(captions), list(labels)))
    return items


# ---------------------------------------------------------------------------------------------------- dataset mode


def load_source_dataset(src: str, config: str | None, split: str):
    """A streamed `datasets` source: parquet file(s)/glob, a local folder (audiofolder, parquet, ...) or a Hub id."""
    import datasets

    if src.endswith(".parquet"):
        return datasets.load_dataset("parquet", data_files={split: src}, split=split, streaming=True)
    return datasets.load_dataset(src, config, split=split, streaming=True)


def _label_names(features, column: str) -> list[str] | None:
    """Class names when `column` is a ClassLabel (or a list of them), so integer labels become words."""
    feature = (features or {}).get(column)
    feature = getattr(feature, "feature", feature)  # List(ClassLabel) -> ClassLabel
    return list(feature.names) if getattr(feature, "names", None) else None


def dataset_items(dataset, src: str, audio_column: str, caption_column: str, label_column: str,
                  start: int = 0) -> Iterator[Item]:
    """Items from a streamed dataset in row order, beginning at row `start` (earlier rows are read, not sent)."""
    import datasets

    columns = set(dataset.column_names or [])
    if columns and audio_column not in columns:
        raise ValueError(f"dataset {src} has no audio column {audio_column!r} (columns: {sorted(columns)}); "
                         "set --audio-column")
    if columns and caption_column not in columns and label_column not in columns:
        raise ValueError(f"dataset {src} has neither a {caption_column!r} nor a {label_column!r} column "
                         f"(columns: {sorted(columns)}); set --caption-column / --label-column")
    names = _label_names(dataset.features, label_column)
    # Undecoded: the workers decode (and resample) themselves, in parallel.
    dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    for index, row in enumerate(dataset):
        if index < start:
            continue
        audio = row.get(audio_column) or {}
        path = audio.get("path") or ""
        # Row index plus file name: stable across reruns and machines (a local path's folder is not).
        source = f"{PurePosixPath(path).name or 'row'}#{index}"
        labels = row.get(label_column)
        if names is not None and labels is not None:
            labels = [names[i] for i in (labels if isinstance(labels, list) else [labels])]
        yield Item(index, source, make_key(source), audio.get("bytes") or path or None,
                   _as_list(row.get(caption_column), split_commas=False), _as_list(labels, split_commas=True))


# ---------------------------------------------------------------------------------------------------- workers


def process_item(item: Item) -> Result:
    """Decode, resample to 48 kHz mono, hash and FLAC-encode one source (runs in a worker process)."""
    import numpy as np

    from .shards import decode_audio, encode_flac, quantize_int16

    delay = float(os.environ.get(TEST_SLEEP_ENV) or 0)
    if delay:
        time.sleep(delay)
    result = Result(item.index, item.source, item.key)
    if not item.captions and not item.labels:
        result.reason = "missing caption and labels"
        return result
    if item.audio is None:
        result.reason = "unreadable: the row has no audio"
        return result
    try:
        audio = decode_audio(item.audio, SAMPLE_RATE)
    except FileNotFoundError:
        result.reason = "missing file"
        return result
    except EmptyAudioError:
        result.reason = "empty audio"
        return result
    except ValueError as error:
        result.reason = f"unreadable: {error}"
        return result
    pcm = quantize_int16(audio)
    # Dedupe on the exact 16-bit samples the shard stores: same decoded content <=> same digest.
    result.digest = hashlib.sha1(pcm.tobytes()).hexdigest()
    result.flac = encode_flac(pcm.astype(np.float32) / 32768.0)
    result.duration = len(pcm) / SAMPLE_RATE
    result.meta = {"text": _caption_texts(item.captions, item.labels), "duration": result.duration,
                   "original_filename": item.source}
    if item.labels:
        result.meta["tag"] = item.labels
    return result


def run_ordered(items: Iterable[Item], workers: int) -> Iterator[Result]:
    """Results in item order; a bounded window of in-flight items keeps memory flat on large datasets."""
    if workers <= 1:
        yield from map(process_item, items)
        return
    import multiprocessing

    # forkserver: forking a process that already runs FFmpeg/torch threads can deadlock the child. The server preloads
    # the decoding stack once, so each worker starts as a cheap fork instead of importing torch again.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["clapforge.data.prepare", "torchcodec.decoders", "torchcodec.encoders"])
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        window: deque = deque()
        for item in items:
            window.append(pool.submit(process_item, item))
            if len(window) >= 4 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


# ---------------------------------------------------------------------------------------------------- journal


class Journal:
    """Per-shard records in OUT/.prepare/<split>/: what each committed shard covers, holds and skipped."""

    def __init__(self, out: Path, split: str):
        self.dir = out / JOURNAL_DIR / split
        self.split_dir = out / split

    def check_plan(self, plan: dict) -> None:
        """Refuse to resume into OUT with different inputs or options: the result would mix two plans."""
        path = self.dir / "plan.json"
        if path.exists():
            with open(path, encoding="utf-8") as f:
                previous = json.load(f)
            if previous != plan:
                changed = sorted(k for k in plan.keys() | previous.keys() if plan.get(k) != previous.get(k))
                raise ValueError(f"{self.split_dir} holds an earlier prepare run with different {changed}; "
                                 "use a new OUT folder (or delete this one) to start over")
            return
        if any(self.split_dir.glob("*.tar")):
            raise ValueError(f"{self.split_dir} already holds shards not written by `clapforge prepare`; "
                             "use a new OUT folder")
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, plan)

    def committed(self) -> list[dict]:
        """The committed records in order; removes what a crash left behind (temporary and uncommitted files)."""
        records, end = [], 0
        for path in sorted(self.dir.glob("shard-*.json")):
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            # A record with clips is committed only once its shard was renamed into place (see module docstring).
            done = record["shard"] is None or (self.split_dir / record["shard"]).exists()
            if not done or record["start"] != end:
                break
            records.append(record)
            end = record["end"]
        for path in sorted(self.dir.glob("shard-*.json"))[len(records):]:
            path.unlink()
        for tmp in [*self.split_dir.glob("*.tmp"), *self.dir.glob("*.tmp")]:
            tmp.unlink()
        return records

    def commit(self, index: int, shard: str | None, start: int, end: int, clips: list[dict],
               skipped: list[dict]) -> None:
        record = {"index": index, "shard": shard, "start": start, "end": end, "clips": clips, "skipped": skipped}
        atomic_write_json(self.dir / f"shard-{index:05d}.json", record)


class ShardPacker:
    """Packs results, in order, into shards and journals each shard just before it is committed."""

    def __init__(self, journal: Journal, records: list[dict], max_bytes: int):
        self.journal = journal
        self.start = records[-1]["end"] if records else 0
        self.cursor = self.start  # index of the next source to be packed
        self.seen = {clip["digest"]: clip["key"] for record in records for clip in record["clips"]}
        self.clips: list[dict] = []
        self.skipped: list[dict] = []
        first_shard = records[-1]["index"] + 1 if records else 0
        self.writer = ShardWriter(journal.split_dir, max_bytes=max_bytes, start_index=first_shard,
                                  on_complete=self._on_complete)

    def add(self, result: Result) -> None:
        if result.reason is None and result.digest in self.seen:
            result.reason = f"duplicate of {self.seen[result.digest]}"
        if result.reason is not None:
            self.skipped.append({"source": result.source, "reason": result.reason})
        else:
            # A rollover inside write() commits the previous shard, which ends just before this source.
            self.cursor = result.index
            self.writer.write(result.key, result.flac, result.meta)
            self.seen[result.digest] = result.key
            self.clips.append({"key": result.key, "source": result.source, "digest": result.digest,
                               "duration": result.duration})
        self.cursor = result.index + 1

    def finish(self) -> None:
        has_open_shard = bool(self.clips)
        next_index = self.writer.index
        self.writer.close()
        if not has_open_shard and self.cursor > self.start:
            # Only skipped sources since the last shard: their record commits on its own, without a tar.
            self.journal.commit(next_index, None, self.start, self.cursor, [], self.skipped)

    def abort(self) -> None:
        self.writer.abort()

    def _on_complete(self, shard: str, keys: list[str]) -> None:
        self.journal.commit(self.writer.index, shard, self.start, self.cursor, self.clips, self.skipped)
        self.start, self.clips, self.skipped = self.cursor, [], []


# ---------------------------------------------------------------------------------------------------- prepare


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


# ---------------------------------------------------------------------------------------------------- CLI


def register(commands) -> None:
    """Add `prepare` to the `clapforge` sub-commands."""
    parser = commands.add_parser("prepare", help="audio files + captions, or a `datasets` source -> 48 kHz FLAC shards",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="folder of audio files (searched recursively), or with --dataset any `datasets` "
                                    "source: a local folder, parquet file(s)/glob, or a Hub id")
    parser.add_argument("out", help="output folder (shards go to OUT/<split>/)")
    parser.add_argument("--captions", help=f"CSV/TSV/JSONL captions table (default: the first of "
                                           f"{', '.join(DEFAULT_CAPTION_FILES)} in SRC)")
    parser.add_argument("--file-column", default="file_name", help="table column with paths relative to SRC")
    parser.add_argument("--caption-column", default="caption",
                        help="caption column: a string or a JSON list; repeated rows add captions")
    parser.add_argument("--label-column", default="labels", help="label column: comma-separated or a list")
    parser.add_argument("--dataset", action="store_true", help="SRC is a `datasets` source, not a folder of files")
    parser.add_argument("--audio-column", default="audio", help="audio column of a --dataset source")
    parser.add_argument("--dataset-config", help="configuration name of a --dataset source")
    parser.add_argument("--dataset-split", default="train", help="split of the --dataset source to read")
    parser.add_argument("--split", default="train", help="split to write under OUT (train, validation, test)")
    parser.add_argument("--shard-size", type=float, default=64, help="target shard size in MB (default 64)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes (default: all CPUs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    manifest = prepare(args.src, args.out, captions=args.captions, file_column=args.file_column,
                       caption_column=args.caption_column, label_column=args.label_column, dataset=args.dataset,
                       audio_column=args.audio_column, dataset_config=args.dataset_config,
                       dataset_split=args.dataset_split, split=args.split, shard_size_mb=args.shard_size,
                       workers=args.workers, progress=not args.no_progress)
    split = manifest["splits"][args.split]
    skipped = [entry for entry in manifest["skipped"] if entry.get("split") == args.split]
    print(f"wrote {split['clips']} clips ({split['hours']:.3f} h) in {split['shards']} shards to "
          f"{Path(args.out) / args.split}; skipped {len(skipped)} (see {Path(args.out) / 'manifest.json'})")
    return 0
