"""Where streamed samples come from: webdataset tar shards (read by our own tolerant reader) or any `datasets` source.

`resolve_source` decides which of the two a source is; `read_shard` turns one tar shard into raw records;
`record_from_row` turns a row of a `datasets` source into the same raw record. A raw record carries undecoded bytes
and an `error` instead of raising, so that the stream (stream.py) can skip and count bad samples after the resume
point, never before it (see `stream_dataset`).

Raw record: {"key": str, "audio": bytes | None, "audio_path": str | None, "meta": bytes | None,
             "captions": list[str] | None, "labels": list[str] | None, "error": str | None, "detail": str,
             "where": str (the shard a sample came from, for the log; "" for a datasets source)}
"""

from __future__ import annotations

import glob
import hashlib
import os
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

AUDIO_EXTENSIONS = ("flac", "wav", "mp3", "ogg", "opus", "m4a", "aac", "webm")
META_EXTENSION = "json"


def empty_record(key: str, where: str = "") -> dict[str, Any]:
    return {"key": key, "audio": None, "audio_path": None, "meta": None, "captions": None, "labels": None,
            "error": None, "detail": "", "where": where}


def error_record(key: str, reason: str, detail: str, where: str = "") -> dict[str, Any]:
    return {**empty_record(key, where), "error": reason, "detail": detail}


@dataclass
class DatasetsSource:
    """A `datasets` source and which of its columns hold the audio, captions, labels and (optionally) the key."""

    path: str
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    audio: str = "audio"
    caption: str | None = None
    labels: str | None = None
    key: str | None = None


def resolve_source(source: str | os.PathLike | list, split: str, columns: Mapping[str, str] | None,
                   **load_kwargs: Any) -> list[str] | DatasetsSource:
    """The tar shard URLs of a webdataset source (sorted), or a `DatasetsSource`.

    Tar shards: a `.tar` path, a glob, a list of those, a folder holding `<split>/*.tar` (the `prepare`/`synth` layout)
    or `*.tar`, local or remote (`hf://datasets/ns/name`, `hf://datasets/ns/name/train/*.tar`). Anything else (a Hub
    id, a parquet file or glob, a folder of audio with metadata.csv, or an explicit `columns` mapping) is a `datasets`
    source loaded with `load_dataset(streaming=True)`.
    """
    sources = [os.fspath(s) for s in source] if isinstance(source, list | tuple) else [os.fspath(source)]
    if columns is None and all(_looks_like_tar(s) for s in sources):
        return _tar_urls(sources, split)
    if len(sources) != 1:
        raise ValueError(f"a datasets source is one id, file, glob or folder, got {sources}")
    columns = dict(columns or {})
    unknown = set(columns) - {"audio", "caption", "labels", "key"}
    if unknown:
        raise ValueError(f"unknown keys in columns={columns}: {sorted(unknown)} (expected audio, caption, labels, key)")
    path, kwargs = sources[0], dict(load_kwargs)
    if path.endswith(".parquet"):
        path, kwargs = "parquet", {"data_files": {split: sources[0]}, **kwargs}
    elif Path(path).is_dir() and not (Path(path) / "README.md").exists() and _has_audio_files(Path(path)):
        path, kwargs = "audiofolder", {"data_dir": sources[0], **kwargs}
    return DatasetsSource(path=path, load_kwargs=kwargs, **columns)


def _looks_like_tar(source: str) -> bool:
    if source.endswith(".tar"):
        return True
    if _may_be_remote_folder(source):
        return bool(_remote_files(source, "*.tar") or _remote_files(source, "*/*.tar"))
    path = Path(source)
    return path.is_dir() and (any(path.glob("*.tar")) or any(path.glob("*/*.tar")))


def _may_be_remote_folder(source: str) -> bool:
    # A remote folder in the prepare/synth layout (e.g. hf://datasets/ns/name after `upload_folder`) streams like a
    # local one. Only URLs without a file extension or glob are probed, so a remote parquet file costs no listing.
    return "://" in source and not any(c in source for c in "*?[") and not PurePosixPath(source).suffix


def _remote_files(folder: str, pattern: str) -> list[str]:
    """URLs of the files matching `pattern` in a remote folder ([] when there are none or it is not a folder)."""
    from datasets.data_files import resolve_pattern

    try:
        return resolve_pattern(f"{folder.rstrip('/')}/{pattern}", base_path="")
    except FileNotFoundError:
        return []


def _has_audio_files(folder: Path) -> bool:
    return any(p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS for p in folder.rglob("*") if p.is_file())


def _tar_urls(sources: list[str], split: str) -> list[str]:
    urls: list[str] = []
    for source in sources:
        if _may_be_remote_folder(source):
            urls += _remote_files(source, f"{split}/*.tar") or _remote_files(source, "*.tar")
        elif "://" in source:
            # Remote shards are resolved by datasets' own pattern matching (globs included) and read with fsspec
            # (huggingface_hub registers the hf:// file system); tests/test_stream_hub.py serves them.
            from datasets.data_files import resolve_pattern

            urls += resolve_pattern(source, base_path="") if any(c in source for c in "*?[") else [source]
        elif Path(source).is_dir():
            split_dir = Path(source) / split
            folder = split_dir if split_dir.is_dir() else Path(source)
            urls += [str(p) for p in folder.glob("*.tar")]
        elif any(c in source for c in "*?["):
            urls += glob.glob(source)
        elif Path(source).is_file():
            urls.append(source)
        else:
            raise FileNotFoundError(f"no tar shard at {source}")
    urls = sorted(set(urls))
    if not urls:
        raise FileNotFoundError(f"no tar shards found in {sources} (split {split!r})")
    return urls


def _open(url: str):
    if "://" in url:
        return _RemoteFile(url)
    return open(url, "rb")


class _RemoteFile:
    """A remote file (fsspec) opened for reading, whose failures to open or read are all OSErrors.

    fsspec file systems raise their HTTP client's own exceptions, which are not OSErrors: huggingface_hub's hf://
    raises httpx2.RemoteProtocolError when a download stops short of its Content-Length (after its own retries).
    The readers skip and count an unreadable shard or audio file by catching OSError (a local file's failures), so
    a remote failure becomes one here, where the bytes are read, instead of ending the stream.
    """

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self._file = self._io(lambda: fsspec.open(url, "rb").open())

    def _io(self, call):
        try:
            return call()
        except OSError:
            raise
        except Exception as error:  # only the file system's own code runs here
            raise OSError(f"reading {self.url} failed: {type(error).__name__}: {error}") from error

    def read(self, size: int = -1) -> bytes:
        return self._io(lambda: self._file.read(size))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> _RemoteFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _split_member_name(name: str) -> tuple[str, str]:
    # webdataset convention: the key is everything up to the first dot of the file name (directories included).
    folder, base = os.path.split(name)
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def read_shard(url: str) -> Iterator[dict[str, Any]]:
    """Raw records of one shard in tar order; members of a sample must be adjacent (as webdataset writers do).

    A truncated or corrupt tar yields the complete samples before the damage and then one `corrupt_shard` record.
    """
    shard = os.path.basename(url)
    key, members, count = None, {}, 0
    try:
        with _open(url) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                member_key, extension = _split_member_name(member.name)
                data = tar.extractfile(member).read()
                if member_key != key:
                    if key is not None:
                        count += 1
                        yield _tar_record(key, members, shard)
                    key, members = member_key, {}
                members[extension] = data
    except (tarfile.TarError, OSError, EOFError) as error:
        if key is not None:
            count += 1
            yield _tar_record(key, members, shard)
            key = None
        yield error_record(f"{shard}#{count}", "corrupt_shard", f"unreadable after {count} samples: {error}", shard)
    if key is not None:
        yield _tar_record(key, members, shard)


def _tar_record(key: str, members: dict[str, bytes], shard: str) -> dict[str, Any]:
    audio = next((members[e] for e in AUDIO_EXTENSIONS if e in members), None)
    if audio is None:
        return error_record(key, "missing_audio", f"members {sorted(members)} hold no audio file", shard)
    if META_EXTENSION not in members:
        return error_record(key, "missing_metadata", f"members {sorted(members)} hold no .json", shard)
    return {**empty_record(key, shard), "audio": audio, "meta": members[META_EXTENSION]}


def load_source(source: DatasetsSource, split: str):
    """`source` streamed, its audio column left undecoded (decoded later, inside a try)."""
    import datasets

    ds = datasets.load_dataset(source.path, split=split, streaming=True, **source.load_kwargs)
    names = ds.column_names
    for role in ("audio", "caption", "labels", "key"):
        column = getattr(source, role)
        if column is not None and names is not None and column not in names:
            raise ValueError(f"{role} column {column!r} is not in {source.path} (columns: {names})")
    if source.caption is None and source.labels is None:
        raise ValueError(f"{source.path}: give a caption or labels column, e.g. columns={{'caption': 'text'}}")
    return ds.cast_column(source.audio, datasets.Audio(decode=False))


def label_names(ds, column: str | None) -> list[str] | None:
    """The class names of a ClassLabel column (or a list of ClassLabel), to turn label ids into words."""
    import datasets

    feature = (ds.features or {}).get(column) if column else None
    feature = getattr(feature, "feature", feature)  # List(ClassLabel) / Sequence(ClassLabel)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def record_from_row(row: dict[str, Any], source: DatasetsSource, names: list[str] | None) -> dict[str, Any]:
    """A raw record from one row of a `datasets` source."""
    audio = row.get(source.audio)
    audio_bytes, audio_path = None, None
    if isinstance(audio, dict):
        audio_bytes, audio_path = audio.get("bytes"), audio.get("path")
    elif isinstance(audio, bytes | bytearray):
        audio_bytes = bytes(audio)
    elif isinstance(audio, str):
        audio_path = audio
    if source.key is not None:
        key = str(row.get(source.key))
    elif audio_path:
        key = audio_path
    else:
        key = hashlib.sha1(audio_bytes or b"").hexdigest()[:16]
    record = empty_record(key)
    if audio_bytes is None and audio_path is None:
        return error_record(key, "missing_audio", f"column {source.audio!r} is empty")
    record.update(audio=audio_bytes, audio_path=audio_path)
    if source.caption is not None:
        record["captions"] = strings(row.get(source.caption))
    if source.labels is not None:
        labels = row.get(source.labels)
        labels = labels if isinstance(labels, list | tuple) else ([] if labels is None else [labels])
        record["labels"] = [names[x] if names is not None and isinstance(x, int) else str(x) for x in labels]
    return record


def strings(value: Any) -> list[str]:
    """The non-empty strings of a caption field (a string or a list of strings); anything else is dropped."""
    values = value if isinstance(value, list | tuple) else [value]
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def read_audio_bytes(record: dict[str, Any]) -> bytes | str:
    """What to decode: the bytes, a local path, or the bytes behind a remote path (hf://, https://)."""
    if record["audio"] is not None:
        return record["audio"]
    path = record["audio_path"]
    if "://" in path:
        with _open(path) as f:
            return f.read()
    return path


__all__ = ["DatasetsSource", "label_names", "load_source", "read_audio_bytes", "read_shard", "record_from_row",
           "resolve_source", "strings"]
