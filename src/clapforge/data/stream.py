"""The streamed reader: a data source -> `datasets.IterableDataset` of examples ready for `LaionClapProcessor`.

Example: {"key": str, "audio": (T,) float32 mono 48 kHz numpy, "sampling_rate": 48000,
          "captions": list[str], "caption": str (the one drawn for this epoch),
          "labels": list[str] (the sample's tags/labels, [] when it has none; zero-shot evaluation reads them)}

Pipeline (every stage is a `datasets` stage, so `state_dict()`, `set_epoch()` and `split_dataset_by_node` work):

    shards --(read_shard: raw bytes, in-shard permutation)--> raw records
           --(optional buffer shuffle)--> --(map: parse json, decode, draw caption)--> --(filter skips)--> examples

Skipped samples. Nothing raises out of the iterator: a bad sample becomes a raw record with an `error`, or fails in
the decode map, and is then dropped by the filter after being logged (logging.warning, with its key and reason) and
counted in a `SkipCounter`. The counter keeps its counts in a torch shared-memory tensor that travels with the
dataset into DataLoader worker processes (as datasets' own epoch counter does), so the main process sees the counts
of every worker. Skips are counted by the map, downstream of datasets' resume point: a resumed stream does not count
again the skips it had passed before the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from .captions import template_caption
from .shards import SAMPLE_RATE, EmptyAudioError, decode_audio
from .sources import (
    DatasetsSource,
    label_names,
    load_source,
    read_audio_bytes,
    read_shard,
    record_from_row,
    resolve_source,
    strings,
)

logger = logging.getLogger(__name__)

SKIP_REASONS = ("corrupt_shard", "missing_audio", "missing_metadata", "bad_json", "bad_text", "no_caption",
                "empty_audio", "undecodable_audio")
_SLOTS = 65  # slot 0: the main process; 1..64: DataLoader workers (one slot each, so increments never race)


class SkipCounter:
    """Skipped samples by reason, summed over the process that owns it and its DataLoader workers.

    Pass one to `stream_dataset(skip_counter=...)` (or read `dataset.skip_counter`) and keep the reference: the
    trainer reports `counter.total()` / `counter.counts()`, sums them over ranks itself, and saves it with
    `accelerator.register_for_checkpointing(counter)` (it has `state_dict` / `load_state_dict`); the dataset's own
    `state_dict()` does not carry the counts. With DataLoader workers the counts include samples a worker has
    prefetched but the loop not yet consumed, so a resume may count those again (at most
    `num_workers * prefetch_factor` batches' worth).
    """

    def __init__(self) -> None:
        self._counts = torch.zeros(_SLOTS, len(SKIP_REASONS), dtype=torch.int64).share_memory_()

    def add(self, reason: str) -> None:
        info = torch.utils.data.get_worker_info()
        slot = 0 if info is None else 1 + info.id % (_SLOTS - 1)
        self._counts[slot, SKIP_REASONS.index(reason)] += 1

    def counts(self) -> dict[str, int]:
        return {reason: int(n) for reason, n in zip(SKIP_REASONS, self._counts.sum(0).tolist(), strict=True) if n}

    def total(self) -> int:
        return int(self._counts.sum())

    def state_dict(self) -> dict[str, dict[str, int]]:
        return {"counts": self.counts()}

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        self._counts.zero_()
        for reason, n in state["counts"].items():
            self._counts[0, SKIP_REASONS.index(reason)] = n


def _seed(*parts: int | str) -> list[int]:
    """An order-independent-of-process seed for numpy from ints and strings (Python's hash() is salted per process)."""
    return [int.from_bytes(hashlib.blake2b(str(p).encode(), digest_size=8).digest(), "little") for p in parts]


class _Pipeline:
    """The per-sample logic shared by the generator and the decode map. Pickled into DataLoader workers.

    `epoch` is the returned dataset's own epoch tensor (datasets keeps it in torch shared memory and `set_epoch`
    updates it in place), so the in-shard order and the caption draw follow `set_epoch` in every process.
    """

    def __init__(self, *, seed: int, shuffle: bool, caption_fields: tuple[str, ...], counter: SkipCounter,
                 source: DatasetsSource | None = None, names: list[str] | None = None) -> None:
        self.seed, self.shuffle, self.caption_fields, self.counter = seed, shuffle, caption_fields, counter
        self.source, self.names = source, names
        self.epoch: torch.Tensor | int = 0
        self.owner: tuple[int, int] = (0, 1)  # (rank, world_size) that logs and counts a skip, see stream_dataset

    def records(self, shards: list[str]) -> Iterator[dict[str, Any]]:
        """Generator of raw records; `datasets` gives it one shard at a time and resumes it by skipping records."""
        for url in shards:
            records = read_shard(url)
            if self.shuffle:
                # A deterministic permutation of the whole shard (shards are tens of MB of compressed audio) instead
                # of a shuffle buffer: a resume replays the same order, so it continues exactly.
                records = list(records)
                order = np.random.default_rng(_seed(self.seed, int(self.epoch), url)).permutation(len(records))
                records = [records[i] for i in order]
            yield from records

    def from_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return record_from_row(row, self.source, self.names)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        """Raw record -> example, or {"key", "audio": None, ...} for a skipped sample (dropped by the filter)."""
        key = record["key"]
        try:
            if record["error"] is not None:
                return self._skip(record, record["error"], record["detail"])
            captions, labels = record["captions"], record["labels"]
            if record["meta"] is not None:
                meta = json.loads(record["meta"].decode("utf-8"))
                if not isinstance(meta, dict):
                    return self._skip(record, "bad_json", f"metadata is a {type(meta).__name__}, not an object")
                captions = [c for field in self.caption_fields for c in strings(meta.get(field))]
                labels = strings(meta.get("tag"))
            if not captions and labels:
                captions = [template_caption(labels)]
            if not captions:
                return self._skip(record, "no_caption", f"no caption in {self.caption_fields} and no labels")
            audio = decode_audio(read_audio_bytes(record), SAMPLE_RATE)
            if not np.isfinite(audio).all():
                return self._skip(record, "undecodable_audio", "decoded audio holds NaN or inf")
        except UnicodeDecodeError as error:
            return self._skip(record, "bad_text", f"metadata is not UTF-8: {error}")
        except json.JSONDecodeError as error:
            return self._skip(record, "bad_json", str(error))
        except EmptyAudioError as error:
            return self._skip(record, "empty_audio", str(error))
        except (ValueError, RuntimeError, OSError) as error:  # torchcodec/FFmpeg failures, unreadable remote files
            return self._skip(record, "undecodable_audio", str(error))
        draw = np.random.default_rng(_seed(self.seed, int(self.epoch), key)).integers(len(captions))
        return {"key": key, "audio": audio, "sampling_rate": SAMPLE_RATE, "captions": captions,
                "caption": captions[draw], "labels": list(labels or [])}

    def _skip(self, record: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
        key, rank, world_size = record["key"], *self.owner
        if world_size == 1 or _seed(key)[0] % world_size == rank:
            where = f" in {record['where']}" if record["where"] else ""
            logger.warning("skipped sample %r%s: %s (%s)", key, where, reason, detail)
            self.counter.add(reason)
        return {"key": key, "audio": None, "sampling_rate": SAMPLE_RATE, "captions": [], "caption": "", "labels": []}


_RAW_ONLY = ["audio_path", "meta", "error", "detail", "where"]  # raw-record fields that examples do not carry


def _kept(example: dict[str, Any]) -> bool:
    return example["audio"] is not None


def stream_dataset(
    source: str | os.PathLike | list,
    *,
    columns: Mapping[str, str] | None = None,
    split: str = "train",
    shuffle: bool = True,
    shuffle_buffer: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    caption_fields: tuple[str, ...] = ("text",),
    skip_counter: SkipCounter | None = None,
    **load_kwargs: Any,
):
    """Stream `source` as a `datasets.IterableDataset` of {"key", "audio", "sampling_rate", "captions", "caption"}.

    Args:
        source: webdataset tar shards in the LAION-Audio-630K layout (a `.tar`, a glob, a list, a folder holding
            `<split>/*.tar` or `*.tar`, `hf://` URLs), or any `datasets` source with an audio column (a Hub id,
            a parquet file or glob, a folder of audio files with metadata.csv).
        columns: for a `datasets` source, {"audio": ..., "caption": ..., "labels": ..., "key": ...} column names.
            Labels without captions give the template caption ("The sound of a, b and c"), as do a shard sample's
            `tag` labels when its `text` is empty. Without "key", a sample's key is its audio path (or a hash).
        shuffle: for tar shards, shuffle the shard order (seeded) and each shard's samples by a permutation seeded by
            (seed, epoch, shard); shards are read whole into memory to permute them. A `datasets` source is only
            shuffled by `shuffle_buffer`. (datasets itself also reorders the shards of any source at every epoch > 0.)
        shuffle_buffer: if > 0 (and `shuffle`), also mix samples across shards with datasets' shuffle buffer of this
            many undecoded samples. The only way to shuffle within a `datasets` source; costs exactness of resume.
        seed: seeds the shard order, in-shard order, buffer and caption draw; the same on every rank.
        rank, world_size: this process's share. `datasets.distributed.split_dataset_by_node` is the single owner of
            the split: whole shards per rank when the shard count divides by `world_size`, otherwise every
            `world_size`-th example (each rank then reads and decodes every sample). Each example is seen by exactly
            one rank once per epoch; ranks may get a few examples more or fewer than each other, so the training
            loop must stop every rank at the same step.
        epoch: the initial epoch (`set_epoch`). Call `dataset.set_epoch(e)` on the returned dataset itself at each
            epoch: it changes the shard order, the in-shard order and the caption drawn (drawn from
            (seed, epoch, key), so a resumed run draws the same caption).
        caption_fields: the shard json fields whose captions are pooled, e.g. ("text", "text_augment_t5").
        skip_counter: where skipped samples are counted (see `SkipCounter`); a new one if None. Also set as
            `dataset.skip_counter`.
        load_kwargs: passed to `datasets.load_dataset` for a `datasets` source (e.g. `name`, `revision`).

    Distributed training: the returned dataset is already this rank's share. Do not let accelerate shard it a second
    time: build the DataLoader yourself and do not pass it to `accelerator.prepare`. (Prepared, accelerate either
    has rank 0 read everything and dispatch batches, the default for iterable datasets, or, with
    `DataLoaderConfiguration(dispatch_batches=False)`, calls `IterableDataset.shard` again, which silently drops
    (world_size - 1) / world_size of the data.) Gather the skip counts over ranks yourself.

    Resume: `dataset.state_dict()` / `load_state_dict()` (datasets' mechanism); call `set_epoch` with the saved epoch
    before iterating a restored dataset. With DataLoader workers the position lives in the workers, so resuming needs
    torchdata's `StatefulDataLoader` (accelerate's `use_stateful_dataloader=True`; torchdata is not installed here)
    or `num_workers=0`. With `shuffle_buffer=0` a resumed stream continues exactly, shuffled or not: the examples
    after the checkpoint are the ones an uninterrupted run yields, in the same order and with the same captions, and
    skips before the checkpoint are not counted again. The shard in progress is re-read (not decoded) up to the
    position. With `shuffle_buffer > 0` the samples that sat in the buffer at the checkpoint are lost for that epoch.
    """
    counter = skip_counter if skip_counter is not None else SkipCounter()
    resolved = resolve_source(source, split, columns, **load_kwargs)
    if isinstance(resolved, DatasetsSource):
        ds = load_source(resolved, split)
        pipeline = _Pipeline(seed=seed, shuffle=shuffle, caption_fields=caption_fields, counter=counter,
                             source=resolved, names=label_names(ds, resolved.labels))
        ds = ds.map(pipeline.from_row, remove_columns=ds.column_names)
        if shuffle and shuffle_buffer > 0:
            ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    else:
        import datasets

        shards = resolved
        if shuffle:
            shards = [shards[i] for i in np.random.default_rng(_seed(seed, "shards")).permutation(len(shards))]
        pipeline = _Pipeline(seed=seed, shuffle=shuffle, caption_fields=caption_fields, counter=counter)
        ds = datasets.IterableDataset.from_generator(pipeline.records, gen_kwargs={"shards": shards}, split=split)
        if shuffle and shuffle_buffer > 0:
            ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    ds = ds.map(pipeline, remove_columns=_RAW_ONLY).filter(_kept)
    if world_size > 1:
        from datasets.distributed import split_dataset_by_node

        if ds.num_shards % world_size != 0:
            pipeline.owner = (rank, world_size)  # every rank sees every skip: only one of them logs and counts it
        ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
    ds.set_epoch(epoch)
    # The generator and the map read the epoch of the dataset the caller iterates: datasets' shared epoch tensor.
    pipeline.epoch = ds._epoch
    ds.skip_counter = counter
    return ds


__all__ = ["SKIP_REASONS", "SkipCounter", "stream_dataset"]
