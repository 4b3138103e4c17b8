"""The one way clapforge writes a file that a crash must never leave half-written (manifests, shards, indexes).

A file is written under a temporary name beside its destination, flushed to disk (`fsync`), renamed over the
destination (`os.replace`, atomic on POSIX), and the directory is flushed too, so that the rename itself survives a
power loss. Readers, and a rerun after a crash, see the old file or the new one, never a mixture.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make the complete file `tmp` durable and visible as `path`, replacing any earlier `path`."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())  # the data must be on disk before the rename makes it visible as complete
    os.replace(tmp, path)
    directory = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`: on success it becomes `path` (`commit_file`), on error it is removed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 1) -> None:
    """Write `obj` as JSON to `path` atomically (see the module docstring)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
