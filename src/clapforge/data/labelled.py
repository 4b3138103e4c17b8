"""Labelled-data readers for supervised classification: a local layout in, a stream of labelled examples out.

Layouts (`classification.reader` in a recipe; ROOT is `data.train` / `data.validation`):

- `stream` (default): anything `clapforge.data.stream.stream_dataset` reads: webdataset shards (a sample's labels
  are its json `tag` list, e.g. the `clapforge synth` corpus) or any `datasets` source with a label or labels
  column (`data.columns: {labels: <column>}`; ClassLabel ids become their names, a list column is multi-label).
- `esc50`: the ESC-50 repository layout (ROOT/meta/esc50.csv + ROOT/audio/), read by `benchmark_sets.read_esc50`; the
  "split" is a comma-separated list of folds ("1,2,3,4" to train, "5" to validate), so the 5-fold protocol is five
  runs with `data.train_split` / `data.validation_split` overridden.
- `fsd50k`: the FSD50K release layout: ROOT/FSD50K.ground_truth/{dev,eval}.csv (`fname,labels,mids[,split]`,
  `labels` comma-separated inside one quoted field) and ROOT/FSD50K.{dev,eval}_audio/<fname>.wav. Splits: `train`
  and `val` (dev.csv rows by their `split` column) and `eval` (eval.csv). Class names come from
  ROOT/FSD50K.ground_truth/vocabulary.csv (`index,label,mid`, no header) when present.

Every example is {"key", "audio" (T,) float32 48 kHz, "sampling_rate", "labels": list[str], "caption": ""}.
Audio that does not decode is logged with its key and skipped (counted in the stream's `skip_counter`).
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .benchmark_sets import read_esc50

logger = logging.getLogger(__name__)
READERS = ("stream", "esc50", "fsd50k")


@dataclass
class LabelledFiles:
    """A labelled file list: keys, audio paths, label lists (aligned) and the class names of the layout."""

    keys: list[str]
    paths: list[str]
    labels: list[list[str]]
    class_names: list[str]


def read_esc50_folds(root: str | os.PathLike, folds: str | int | list[int]) -> LabelledFiles:
    """ESC-50 clips of `folds` ("1,2,3,4", 5 or [1, 2, 3, 4]); class names in target order ("dog", "chirping birds")."""
    wanted = [int(f) for f in str(folds).split(",")] if isinstance(folds, str | int) else list(folds)
    bench = read_esc50(root)
    unknown = sorted(set(wanted) - set(bench.folds))
    if unknown:
        raise ValueError(f"ESC-50 at {root} has folds {bench.folds}, not {unknown}")
    clips = [c for c in bench.clips if c.fold in wanted]
    return LabelledFiles([c.key for c in clips], [str(c.audio) for c in clips], [[c.label] for c in clips],
                         list(bench.class_names or []))


def read_fsd50k(root: str | os.PathLike, split: str) -> LabelledFiles:
    """FSD50K `train` / `val` (dev.csv by its split column) or `eval` (eval.csv); see the module docstring."""
    root = Path(root)
    truth = root / "FSD50K.ground_truth"
    if split not in ("train", "val", "eval"):
        raise ValueError(f"FSD50K splits are train, val (dev.csv) and eval (eval.csv), not {split!r}")
    table = truth / ("eval.csv" if split == "eval" else "dev.csv")
    audio = root / ("FSD50K.eval_audio" if split == "eval" else "FSD50K.dev_audio")
    if not table.is_file():
        raise FileNotFoundError(f"{table} does not exist (expected the FSD50K release layout under {root})")
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in ("fname", "labels") if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{table} has no column(s) {missing}")
    if split != "eval":
        rows = [r for r in rows if r.get("split", "train") == split]
    keys = [r["fname"] for r in rows]
    labels = [[x.strip() for x in r["labels"].split(",") if x.strip()] for r in rows]
    vocabulary = truth / "vocabulary.csv"
    if vocabulary.is_file():
        with open(vocabulary, newline="", encoding="utf-8") as f:
            names = [row[1] for row in csv.reader(f) if len(row) >= 2]
    else:
        names = sorted({x for clip in labels for x in clip})
    return LabelledFiles(keys, [str(audio / f"{k}.wav") for k in keys], labels, names)


def read_labelled_files(reader: str, root: str, split: str) -> LabelledFiles:
    if reader == "esc50":
        return read_esc50_folds(root, split)
    if reader == "fsd50k":
        return read_fsd50k(root, split)
    raise ValueError(f"reader {reader!r} has no file list; one of {READERS}")


class _Decode:
    """Row -> example, or an example with audio None (dropped) when the file does not decode."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from .shards import SAMPLE_RATE, decode_audio

        try:
            audio = decode_audio(Path(row["path"]).read_bytes(), SAMPLE_RATE)
        except (ValueError, RuntimeError, OSError) as error:
            logger.warning("skipped sample %r (%s): %s", row["key"], row["path"], error)
            self.counter.add("undecodable_audio")
            audio = None
        return {"key": row["key"], "audio": audio, "sampling_rate": SAMPLE_RATE, "labels": row["labels"],
                "caption": "", "captions": []}


def stream_labelled(
    reader: str,
    source: str,
    split: str,
    *,
    shuffle: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    columns: dict[str, str] | None = None,
    balanced: bool = False,
):
    """A `datasets.IterableDataset` of labelled examples (with `set_epoch`, `state_dict`, `skip_counter`).

    balanced: class-balanced sampling (file-list readers only): each epoch draws as many clips as the list holds,
    with replacement, each clip with probability proportional to 1 / (count of its rarest label), so every class
    is drawn about equally often. The draw is seeded by `seed`.
    """
    from .stream import SkipCounter, stream_dataset

    if reader == "stream":
        if balanced:
            raise ValueError("class-balanced sampling needs a file-list reader (esc50, fsd50k); a streamed source "
                             "has no label counts before it is read")
        return stream_dataset(source, split=split, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                              columns=columns)
    import datasets

    files = read_labelled_files(reader, source, split)
    order = np.arange(len(files.keys))
    if balanced:
        counts: dict[str, int] = {}
        for clip in files.labels:
            for label in clip:
                counts[label] = counts.get(label, 0) + 1
        weights = np.array([1.0 / min((counts[x] for x in clip), default=1) for clip in files.labels])
        order = np.random.default_rng(seed).choice(len(order), size=len(order), p=weights / weights.sum())
    rows = [{"key": files.keys[i], "path": files.paths[i], "labels": files.labels[i]} for i in order]
    counter = SkipCounter()
    ds = datasets.Dataset.from_list(rows).to_iterable_dataset(num_shards=max(1, min(len(rows), 8 * world_size)))
    if shuffle:
        ds = ds.shuffle(seed=seed, buffer_size=256)
    ds = ds.map(_Decode(counter), remove_columns=["path"]).filter(lambda e: e["audio"] is not None)
    if world_size > 1:
        from datasets.distributed import split_dataset_by_node

        ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
    ds.skip_counter = counter
    ds.class_names = files.class_names
    return ds


__all__ = ["READERS", "LabelledFiles", "read_esc50_folds", "read_fsd50k", "read_labelled_files", "stream_labelled"]
