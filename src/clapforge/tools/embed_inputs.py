"""What `clapforge embed` reads: the inputs in one deterministic order (a folder, a file list or a `datasets` source),
decoded and featurised in DataLoader workers.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ..data.prepare_inputs import AUDIO_EXTENSIONS
from ..data.shards import decode_audio
from .windows import split_windows

LIST_SUFFIXES = {".txt", ".lst", ".list"}


@dataclass
class Item:
    """One input, as sent to a DataLoader worker (picklable)."""

    index: int  # position in the global order
    key: str
    path: str | None = None  # a file; None for a dataset row (read by the DatasetReader)


class DatasetReader:
    """Reads the undecoded audio of a row of a (memory-mapped) `datasets.Dataset`: bytes, or a local path."""

    def __init__(self, dataset: Any, audio_column: str) -> None:
        self.dataset = dataset
        self.audio_column = audio_column

    def __call__(self, item: Item) -> bytes | str:
        audio = self.dataset[item.index][self.audio_column] or {}
        source = audio.get("bytes") or audio.get("path")
        if not source:
            raise ValueError("the row has no audio")
        return source


def list_inputs(
    source: str | os.PathLike,
    dataset: bool = False,
    audio_column: str = "audio",
    split: str = "train",
    key_column: str | None = None,
) -> tuple[list[Item], DatasetReader | None]:
    """The inputs in their global order, and the reader of dataset rows (None for files).

    A folder is scanned recursively for audio extensions (keys: relative paths); a .txt/.lst/.list file lists one path
    per line (relative to the list's folder, `#` comments; keys: the paths as written); an audio file (one of those
    extensions) is one input, and any other file is refused.
    Files are sorted by key. With `dataset=True`, `source` is a `datasets` source (parquet file, local folder or Hub
    id) read with `load_dataset` (memory-mapped, so workers can read any row); keys are `key_column` or
    "<file name>#<row>".
    """
    if dataset:
        return _dataset_inputs(str(source), audio_column, split, key_column)
    path = Path(source)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                 and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        keyed = {p.relative_to(path).as_posix(): str(p.resolve()) for p in files}
    elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        keyed = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keyed[line] = str((path.parent / Path(line).expanduser()).resolve())
    elif path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
        keyed = {path.name: str(path.resolve())}
    elif path.is_file():
        # What a folder scan would skip is no audio input either (an embeddings file, a model's weights, a table).
        hint = " (for a datasets source, add --dataset)" if path.suffix.lower() in (".parquet", ".arrow") else ""
        raise ValueError(f"input {source} is not an audio file: {path.suffix or 'no extension'} is none of the audio "
                         f"extensions clapforge reads (.wav, .flac, .mp3, .ogg, ...) nor a file list "
                         f"({', '.join(sorted(LIST_SUFFIXES))}){hint}")
    else:
        raise FileNotFoundError(f"input {source} is neither a folder, a file list nor an audio file "
                                "(use --dataset for a datasets source)")
    return [Item(i, key, keyed[key]) for i, key in enumerate(sorted(keyed))], None


def _dataset_inputs(source: str, audio_column: str, split: str, key_column: str | None):
    import datasets

    if source.endswith(".parquet"):
        ds = datasets.load_dataset("parquet", data_files={split: source}, split=split)
    else:
        ds = datasets.load_dataset(source, split=split)
    if audio_column not in ds.column_names:
        raise ValueError(f"dataset {source} has no audio column {audio_column!r} (columns: {ds.column_names}); "
                         "set --audio-column")
    if key_column is not None and key_column not in ds.column_names:
        raise ValueError(f"dataset {source} has no key column {key_column!r} (columns: {ds.column_names})")
    ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    if key_column is not None:
        keys = [str(k) for k in ds[key_column]]
    else:
        paths = [(a or {}).get("path") or "row" for a in ds.select_columns([audio_column])[audio_column]]
        keys = [f"{PurePosixPath(p).name}#{i}" for i, p in enumerate(paths)]
    if len(set(keys)) != len(keys):
        raise ValueError(f"dataset {source}: the keys of column {key_column!r} are not unique")
    return [Item(i, key) for i, key in enumerate(keys)], DatasetReader(ds, audio_column)


# ---------------------------------------------------------------------------------------------------- workers


class AudioItems(torch.utils.data.Dataset):
    """Position -> (item, mono float32 audio at `sample_rate` or the reason it cannot be read).

    With `model_idle` (an event the main process clears while its model runs on the CPU), a worker decodes only
    between model steps: see `embed_files`.
    """

    def __init__(
        self, items: list[Item], reader: DatasetReader | None, sample_rate: int, model_idle: Any = None
    ) -> None:
        self.items = items
        self.reader = reader
        self.sample_rate = sample_rate
        self.model_idle = model_idle

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[Item, np.ndarray | str]:
        if self.model_idle is not None:
            self.model_idle.wait()
        item = self.items[position]
        try:
            source = item.path if self.reader is None else self.reader(item)
            audio = decode_audio(source, self.sample_rate)
        except (ValueError, FileNotFoundError, OSError) as error:
            # decode_audio names the file; the key already does in the report.
            return item, str(error).replace(f"audio file {item.path} ", "")
        if not np.isfinite(audio.sum()):
            return item, "holds NaN or infinite samples"
        return item, audio


class Featurize:
    """collate_fn: the log-mel features of a batch of decoded clips (and of their windows in window mode)."""

    def __init__(self, feature_extractor: Any, window: bool, model_idle: Any = None) -> None:
        self.feature_extractor = feature_extractor
        self.window = window
        self.model_idle = model_idle

    def __call__(self, batch: list[tuple[Item, np.ndarray | str]]) -> dict[str, Any]:
        if self.model_idle is not None:
            self.model_idle.wait()
        fe = self.feature_extractor
        sr = fe.sampling_rate
        ok = [(item, audio) for item, audio in batch if not isinstance(audio, str)]
        out: dict[str, Any] = {
            "items": [item for item, _ in batch],
            "errors": {item.index: audio for item, audio in batch if isinstance(audio, str)},
            "ok": [item.index for item, _ in ok],
            "durations": [len(audio) / sr for _, audio in ok],
        }
        if ok:
            out["features"] = fe([audio for _, audio in ok], sampling_rate=sr)
        if self.window and ok:
            clips, bounds, counts = [], [], []
            for _, audio in ok:
                windows, window_bounds = split_windows(audio, fe.nb_max_samples, sr)
                clips += windows
                bounds += window_bounds
                counts.append(len(windows))
            out["window_features"] = fe(clips, sampling_rate=sr)
            out["window_bounds"] = bounds
            out["window_counts"] = counts
        return out


def content_hash(item: Item, reader: DatasetReader | None) -> str:
    """sha1 of the input's bytes (a file's, or a dataset row's audio): what tells a table rerun that a file changed."""
    source = item.path if reader is None else reader(item)
    digest = hashlib.sha1(usedforsecurity=False)
    if isinstance(source, bytes):
        digest.update(source)
        return digest.hexdigest()
    try:
        with open(source, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        return f"unreadable: {error.strerror}"  # the decoder will report it; a later readable version differs
    return digest.hexdigest()
