"""What `prepare` reads: a folder of audio with a captions table (CSV/JSONL), or any `datasets` source, as `Item`s in a
fixed order (sorted relative paths, or dataset row order), with keys that are safe shard member names.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Extensions scanned in a source folder; a file the captions table names is used whatever its extension.
AUDIO_EXTENSIONS = {
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".mka", ".webm", ".mp4", ".m4b", ".ac3", ".amr", ".ape", ".wv", ".mpc", ".spx", ".3gp",
}
DEFAULT_CAPTION_FILES = ["metadata.csv", "metadata.jsonl", "captions.csv", "captions.jsonl"]

@dataclass
class Item:
    """One source sample, as sent to a worker (picklable)."""

    index: int
    source: str  # the name the manifest uses: a path relative to SRC, or a dataset row
    key: str
    audio: bytes | str | None  # encoded bytes or a local path; None when the dataset row has no audio
    captions: list[str]
    labels: list[str]


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


def caption_texts(captions: list[str], labels: list[str]) -> list[str]:
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
