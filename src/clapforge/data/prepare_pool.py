"""How `prepare` turns `Item`s into shards: a worker pool that decodes and encodes in order, the journal that makes a
killed run resumable, and the packer that fills shards and writes a journal record before each shard's commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_json
from .prepare_inputs import Item, caption_texts
from .shards import SAMPLE_RATE, EmptyAudioError, ShardWriter

# Hidden test hook: seconds each worker sleeps per source, so a test can kill a run in the middle.
TEST_SLEEP_ENV = "CLAPFORGE_PREPARE_TEST_SLEEP"
JOURNAL_DIR = ".prepare"


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
    result.meta = {"text": caption_texts(item.captions, item.labels), "duration": result.duration,
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
