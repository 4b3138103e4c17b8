"""Readers for the standard benchmark layouts: a local copy in, a `Benchmark` (clips with a label or captions) out.

Nothing is downloaded: every reader reads files the user already has (a Hub id given as a `datasets` source is
loaded through `datasets`' own cache). Audio is not read here either; `Clip.audio` names where it is, and
`evaluation/tasks.py` decodes it in DataLoader workers, skipping (and counting) what does not decode.

Layouts accepted (ROOT is `--data`):

- `esc50`: ROOT/meta/esc50.csv (columns `filename`, `fold`, `target`, `category`) and ROOT/audio/<filename>; the
  layout of the ESC-50 repository. 2,000 clips in 5 folds, 50 classes; class k is named by the `category` of the
  rows with `target` k, "_" -> " " ("chirping_birds" -> "chirping birds").
- `urbansound8k`: ROOT/metadata/UrbanSound8K.csv (columns `slice_file_name`, `fold`, `classID`, `class`) and
  ROOT/audio/fold<N>/<slice_file_name>; the layout of the UrbanSound8K archive. 8,732 clips in 10 folds, 10 classes
  named by `class` with "_" -> " ".
- `zero-shot`: any `datasets` source with an audio column and a label column (a Hub id, a parquet file or glob, a
  folder of audio files in class sub-folders (`audiofolder`), a saved dataset folder). Class names are the label
  column's `ClassLabel` names when it has them, otherwise the sorted distinct label strings. Covers VGGSound and
  the Hub copies of ESC-50 and UrbanSound8K.
- `audiocaps`: a CSV `audiocap_id,youtube_id,start_time,caption` with one caption per row (the AudioCaps
  repository's `dataset/<split>.csv`: 5 rows per clip in val and test, 1 in train). ROOT is the CSV or a folder
  holding `<split>.csv`. Rows are grouped into clips by (`youtube_id`, `start_time`), captions in file order. Audio
  is looked for (recursively, any extension FFmpeg reads) in `--audio-dir`, else the first that exists of
  <csv folder>/audio/<split>, <csv folder>/audio, <csv folder>/<split>; a clip's file may be named
  `<youtube_id>`, `Y<youtube_id>`, `<youtube_id>_<anything>` or `Y<youtube_id>_<anything>` (e.g. `<id>_30`,
  `Y<id>_30.000_40.000`; only when exactly one file matches), or `<audiocap_id>` of any of its rows. YouTube copies
  lose clips over time: a clip with no file is listed as missing and left out, and the report gives the count.
- `clotho`: a CSV `clotho_captions_<split>.csv` with `file_name,caption_1..caption_5` (Clotho v2), ROOT being the
  CSV or a folder holding it (split `evaluation` by default). Audio in `--audio-dir`, else the first that exists of
  <csv folder>/<split>, <csv folder>/clotho_audio_<split>, <csv folder>/audio/<split>, <csv folder>/audio, found by
  exact file name (searched recursively).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sources import AUDIO_EXTENSIONS

ZERO_SHOT = "zero-shot"
RETRIEVAL = "retrieval"


@dataclass
class Clip:
    """One clip of a benchmark.

    `audio` is a file path, or a row index into `Benchmark.table` for a `datasets` source, or None when no file was
    found (`missing` says why). Zero-shot clips have a `label`; retrieval clips have `captions` (in file order,
    which LAION's audio->text mAP variant depends on).
    """

    key: str
    audio: str | int | None
    label: str | None = None
    captions: list[str] = field(default_factory=list)
    fold: int | None = None
    missing: str | None = None


@dataclass
class Benchmark:
    """A benchmark read from a local layout: what to evaluate and how to name it in reports."""

    task: str  # the `--task` name: esc50, urbansound8k, zero-shot, audiocaps, clotho
    kind: str  # ZERO_SHOT or RETRIEVAL
    dataset: str  # display name for tables: "ESC-50", "AudioCaps", ...
    data: str  # what was read (absolute path or source id)
    clips: list[Clip]
    class_names: list[str] | None = None
    split: str | None = None
    fold: int | None = None
    table: Any = None  # for a datasets source: the (arrow-backed) dataset with its audio column undecoded
    audio_column: str | None = None

    @property
    def folds(self) -> list[int]:
        return sorted({c.fold for c in self.clips if c.fold is not None})


def read_esc50(root: str | os.PathLike, fold: int | None = None) -> Benchmark:
    """ESC-50: ROOT/meta/esc50.csv + ROOT/audio/; every clip, or those of `fold` (1-5)."""
    root = Path(root)
    rows = _read_csv(root / "meta" / "esc50.csv", ("filename", "fold", "target", "category"))
    names = _class_names(rows, "target", "category")
    clips = [Clip(key=r["filename"], audio=str(root / "audio" / r["filename"]), label=names[int(r["target"])],
                  fold=int(r["fold"])) for r in rows]
    return Benchmark("esc50", ZERO_SHOT, "ESC-50", str(root.absolute()), _in_fold(clips, fold, "ESC-50"),
                     class_names=names, fold=fold)


def read_urbansound8k(root: str | os.PathLike, fold: int | None = None) -> Benchmark:
    """UrbanSound8K: ROOT/metadata/UrbanSound8K.csv + ROOT/audio/fold<N>/; every clip, or those of `fold` (1-10)."""
    root = Path(root)
    rows = _read_csv(root / "metadata" / "UrbanSound8K.csv", ("slice_file_name", "fold", "classID", "class"))
    names = _class_names(rows, "classID", "class")
    clips = [Clip(key=r["slice_file_name"], audio=str(root / "audio" / f"fold{int(r['fold'])}" / r["slice_file_name"]),
                  label=names[int(r["classID"])], fold=int(r["fold"])) for r in rows]
    return Benchmark("urbansound8k", ZERO_SHOT, "US8K", str(root.absolute()), _in_fold(clips, fold, "UrbanSound8K"),
                     class_names=names, fold=fold)


def read_datasets_source(
    source: str,
    label_column: str = "label",
    audio_column: str = "audio",
    split: str | None = None,
    fold: int | None = None,
    fold_column: str = "fold",
    name: str | None = None,
) -> Benchmark:
    """Any `datasets` source with a label column, for zero-shot classification.

    The source is loaded with `datasets.load_dataset` (not streamed: arrow-backed, so DataLoader workers read rows
    by index), its audio column left undecoded. `split` defaults to "test" if the source has one, else its only
    split. `fold` keeps the rows whose `fold_column` equals it. Labels may be ClassLabel ids, strings, or lists of
    either (the first is the clip's label).
    """
    import datasets

    from .sources import DatasetsSource, label_names, resolve_source

    resolved = resolve_source(source, split or "train", {"audio": audio_column, "labels": label_column})
    if not isinstance(resolved, DatasetsSource):
        raise ValueError(f"{source} is a webdataset (tar shards); zero-shot evaluation reads a `datasets` source")
    loaded = datasets.load_dataset(resolved.path, **resolved.load_kwargs)
    if split is None:
        if "test" in loaded:
            split = "test"
        elif len(loaded) == 1:
            split = next(iter(loaded))
        else:
            raise ValueError(f"{source} has splits {sorted(loaded)}: choose one with --split")
    if split not in loaded:
        raise ValueError(f"{source} has no split {split!r} (splits: {sorted(loaded)})")
    table = loaded[split]
    for role, column in (("audio", audio_column), ("label", label_column)):
        if column not in table.column_names:
            raise ValueError(f"{role} column {column!r} is not in {source} (columns: {table.column_names}); "
                             f"set --{role}-column")
    table = table.cast_column(audio_column, datasets.Audio(decode=False))
    names = label_names(table, label_column)
    if fold is not None and fold_column not in table.column_names:
        raise ValueError(f"--fold needs a {fold_column!r} column in {source} (columns: {table.column_names})")
    folds = table[fold_column] if fold is not None else None
    labels = [_first_label(value, names) for value in table[label_column]]
    class_names = names if names is not None else sorted({label for label in labels if label is not None})
    paths = [(a or {}).get("path") for a in table[audio_column]]
    clips = [Clip(key=str(paths[i] or f"row{i}"), audio=i, label=labels[i],
                  fold=int(folds[i]) if folds is not None else None)
             for i in range(len(table)) if labels[i] is not None]
    if fold is not None:
        clips = [c for c in clips if c.fold == fold]
        if not clips:
            raise ValueError(f"{source} has no rows with {fold_column} == {fold}")
    dataset_name = name or Path(source.rstrip("/")).name or source
    return Benchmark(ZERO_SHOT, ZERO_SHOT, dataset_name, _absolute(source), clips, class_names=class_names,
                     split=split, fold=fold, table=table, audio_column=audio_column)


def read_audiocaps(
    data: str | os.PathLike, split: str = "test", audio_dir: str | os.PathLike | None = None
) -> Benchmark:
    """AudioCaps: one caption per CSV row, grouped into clips; audio files named by YouTube id (module docstring)."""
    csv_path = _find_csv(Path(data), [f"{split}.csv"], "AudioCaps")
    rows = _read_csv(csv_path, ("audiocap_id", "youtube_id", "start_time", "caption"))
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["youtube_id"].strip(), row["start_time"].strip()), []).append(row)
    folder = _audio_folder(csv_path, audio_dir, [f"audio/{split}", "audio", split], "AudioCaps")
    files = _index_audio(folder)
    by_prefix = _youtube_prefix_index(files)
    starts_per_id = Counter(ytid for ytid, _ in groups)
    clips = []
    for (ytid, start), group in groups.items():
        key = ytid if starts_per_id[ytid] == 1 else f"{ytid}_{start}"
        candidates = [ytid, f"Y{ytid}", *(r["audiocap_id"].strip() for r in group)]
        path = next((files[c] for c in candidates if c in files), None)
        if path is None and len(by_prefix.get(ytid, [])) == 1:
            path = by_prefix[ytid][0]
        captions = [r["caption"].strip() for r in group if r["caption"].strip()]
        clips.append(Clip(key=key, audio=path, captions=captions,
                          missing=None if path else f"no audio file for youtube id {ytid} in {folder}"))
    return Benchmark("audiocaps", RETRIEVAL, "AudioCaps", str(csv_path.absolute()), clips, split=split)


def read_clotho(
    data: str | os.PathLike, split: str = "evaluation", audio_dir: str | os.PathLike | None = None
) -> Benchmark:
    """Clotho: `clotho_captions_<split>.csv` (file_name, caption_1..caption_5) + the split's audio folder."""
    csv_path = _find_csv(Path(data), [f"clotho_captions_{split}.csv"], "Clotho")
    rows = _read_csv(csv_path, ("file_name",))
    caption_columns = sorted((c for c in rows[0] if c.startswith("caption_")), key=lambda c: int(c.split("_")[1]))
    if not caption_columns:
        raise ValueError(f"{csv_path} has no caption_1..caption_5 columns (columns: {list(rows[0])})")
    folder = _audio_folder(csv_path, audio_dir, [split, f"clotho_audio_{split}", f"audio/{split}", "audio"], "Clotho")
    files = {p.name: str(p) for p in _audio_files(folder)}
    clips = []
    for row in rows:
        name = row["file_name"]
        captions = [row[c].strip() for c in caption_columns if (row[c] or "").strip()]
        path = files.get(name)
        clips.append(Clip(key=name, audio=path, captions=captions,
                          missing=None if path else f"no audio file {name!r} in {folder}"))
    return Benchmark("clotho", RETRIEVAL, "Clotho", str(csv_path.absolute()), clips, split=split)


TASKS = ("esc50", "urbansound8k", ZERO_SHOT, "audiocaps", "clotho")
_ALIASES = {"us8k": "urbansound8k", "esc-50": "esc50", "zeroshot": ZERO_SHOT}


def load_benchmark(
    task: str,
    data: str | os.PathLike,
    *,
    fold: int | None = None,
    split: str | None = None,
    audio_dir: str | os.PathLike | None = None,
    label_column: str = "label",
    audio_column: str = "audio",
) -> Benchmark:
    """The benchmark `task` (one of `TASKS`, or `us8k`) read from `data`; see the module docstring for layouts."""
    task = _ALIASES.get(task.lower(), task.lower())
    if fold is not None and task in ("audiocaps", "clotho"):
        raise ValueError(f"{task} has no folds")
    if task == "esc50":
        return read_esc50(data, fold)
    if task == "urbansound8k":
        return read_urbansound8k(data, fold)
    if task == ZERO_SHOT:
        return read_datasets_source(os.fspath(data), label_column, audio_column, split, fold)
    if task == "audiocaps":
        return read_audiocaps(data, split or "test", audio_dir)
    if task == "clotho":
        return read_clotho(data, split or "evaluation", audio_dir)
    raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")


# ---------------------------------------------------------------------------------------------------- helpers


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no rows")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing} (columns: {list(rows[0])})")
    return rows


def _class_names(rows: list[dict[str, str]], id_column: str, name_column: str) -> list[str]:
    """Names indexed by class id: "dog_bark" -> "dog bark"; ids must be 0..K-1, each with one name."""
    names: dict[int, str] = {}
    for row in rows:
        index, name = int(row[id_column]), row[name_column].strip().replace("_", " ")
        if names.setdefault(index, name) != name:
            raise ValueError(f"class id {index} is named both {names[index]!r} and {name!r}")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"class ids are not 0..{len(names) - 1}: {sorted(names)}")
    return [names[i] for i in range(len(names))]


def _in_fold(clips: list[Clip], fold: int | None, dataset: str) -> list[Clip]:
    if fold is None:
        return clips
    folds = sorted({c.fold for c in clips})
    if fold not in folds:
        raise ValueError(f"{dataset} has folds {folds}, not {fold}")
    return [c for c in clips if c.fold == fold]


def _first_label(value: Any, names: list[str] | None) -> str | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None or (isinstance(value, int) and value < 0):  # ClassLabel's -1 = no label
        return None
    return names[value] if names is not None and isinstance(value, int) else str(value)


def _absolute(source: str) -> str:
    return str(Path(source).absolute()) if Path(source).exists() else source


def _find_csv(data: Path, names: Iterable[str], dataset: str) -> Path:
    if data.is_file():
        return data
    names = list(names)
    for name in names:
        for candidate in (data / name, data / "dataset" / name):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{dataset}: no {' or '.join(names)} in {data} (give the CSV or the folder holding it)")


def _audio_folder(csv_path: Path, audio_dir: str | os.PathLike | None, defaults: Iterable[str], dataset: str) -> Path:
    if audio_dir is not None:
        folder = Path(audio_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--audio-dir {folder} is not a folder")
        return folder
    tried = [csv_path.parent / d for d in defaults]
    for folder in tried:
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"{dataset}: no audio folder (tried {', '.join(map(str, tried))}); set --audio-dir")


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS)


def _index_audio(folder: Path) -> dict[str, str]:
    """File stem -> path (the first in sorted order when two files share a stem)."""
    files: dict[str, str] = {}
    for path in _audio_files(folder):
        files.setdefault(path.stem, str(path))
    return files


def _youtube_prefix_index(files: dict[str, str]) -> dict[str, list[str]]:
    """YouTube id -> files named `<id>_<anything>` or `Y<id>_<anything>` (ids are 11 characters)."""
    index: dict[str, list[str]] = {}
    for stem, path in files.items():
        for offset in (0, 1):
            if len(stem) > offset + 11 and stem[offset + 11] == "_" and (offset == 0 or stem[0] == "Y"):
                index.setdefault(stem[offset : offset + 11], []).append(path)
    return index


__all__ = ["RETRIEVAL", "TASKS", "ZERO_SHOT", "Benchmark", "Clip", "load_benchmark", "read_audiocaps", "read_clotho",
           "read_datasets_source", "read_esc50", "read_urbansound8k"]
