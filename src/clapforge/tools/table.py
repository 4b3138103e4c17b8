"""The LanceDB table `clapforge embed MODEL INPUT OUT.lance` writes and `clapforge search` / `index build` read.

Why a table beside parquet and safetensors: those are rewritten whole and loaded whole, which stops working around a
million clips; a LanceDB table is on disk (or object storage), grows by versioned commits, filters with SQL and
carries an ANN index, all in-process, without a server.

Layout. OUT.lance is a LanceDB database (a directory, or an object-storage URI) holding
- table `files`: one row per file: `key` (relative path or dataset key), `path`, `duration` (seconds),
  `content_hash` (sha1 of the file's bytes), `embedding` (fixed-size list<float32>[E], L2-normalised), `model`,
  `model_hash`;
- table `windows` (window mode only): one row per 10 s window: `key` (its file's), `path`, `duration` (the file's),
  `window_start`, `window_end` (seconds), `embedding`.
The run's settings (model, model hash, embedding size, window mode, precision, ...) are JSON under the schema
metadata key `clapforge` of each table: a run with other settings is refused rather than mixed in.

Consistency. Every LanceDB write is one atomic, versioned commit. A part is committed windows first, then its file
rows (one `merge_insert` on `key`): a file row with the current content hash is the proof that the file and its
windows are complete. A run killed anywhere leaves files either done (row present, hash current) or not done; the next
run redoes the latter, first deleting any windows they left behind. Shapes: N rows, E joint embedding.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

FILES = "files"
WINDOWS = "windows"
METADATA_KEY = "clapforge"
SUFFIX = ".lance"
# Below this many rows an exact scan takes a few ms and an index has too few rows to train its partitions on:
# `build_index` leaves such a table exact.
MIN_ANN_ROWS = 1000
# The ANN index: IVF-RQ (lance's RaBitQ) with RQ_BITS bits per dimension (256 bytes per 512-d vector) in partitions of
# ~PARTITION_ROWS rows. 4-bit codes with a small re-ranking reach the recall of 1-bit codes with a large one for less
# time per query, and small partitions keep a sparse table nearly exhaustive under a few probes; the indices not
# chosen and the measurements: benchmarks/RESULTS.md, "Table search". Probes and re-ranking: tools/table_search.py.
PARTITION_ROWS = 4096
RQ_BITS = 4
# Settings that must agree between a table and a run writing into it (all of them but the model, which gets its own
# message).
CHECKED_SETTINGS = ("embedding_dim", "sampling_rate", "truncation", "window", "window_s", "precision")


def is_table(path: str | os.PathLike) -> bool:
    """Whether `path` names a LanceDB table output: it ends in .lance (local or object storage), or it is a local
    folder holding one (`clapforge embed --index DIR` writes DIR/files.lance)."""
    text = str(path).rstrip("/")
    if text.lower().endswith(SUFFIX):
        return True
    local = local_path(text)
    return local is not None and (local / (FILES + SUFFIX)).is_dir()


def check_location(uri: str | os.PathLike, create: bool = False) -> None:
    """The one check of a local table output's location, before lancedb sees it (`connect` runs it): lancedb would
    create a missing folder even to read it, fail with FileExistsError on a file, and write its tables beside whatever
    a folder holds. Missing: FileNotFoundError, unless `create`. A file, or (when `create`) a folder holding anything
    but LanceDB tables (`NAME.lance` folders; dot files are ignored): ValueError naming it. Standard library only, so
    that `clapforge search` answers a missing table before torch is imported. Object-storage URIs are not checked."""
    local = local_path(uri)
    if local is None:
        return
    if local.exists() and not local.is_dir():
        raise ValueError(f"{uri} is a file, not a table: a table is a folder written by `clapforge embed MODEL INPUT "
                         "OUT.lance`; name another OUT.lance, or move the file away")
    if not local.exists():
        if create:
            return
        raise FileNotFoundError(f"{uri} is not a clapforge table: no such table (make it with `clapforge embed MODEL "
                                "INPUT OUT.lance`)")
    if create:
        foreign = sorted(entry.name for entry in local.iterdir() if not entry.name.startswith(".")
                         and not (entry.is_dir() and entry.name.endswith(SUFFIX)))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ValueError(f"{uri} is a folder holding other files ({shown}), not a clapforge table: write the "
                             "table to a new or empty folder")


def connect(uri: str | os.PathLike, create: bool = False) -> Any:
    """The LanceDB database of a table output, after `check_location` (nothing is created unless `create`)."""
    check_location(uri, create=create)
    import lancedb

    return lancedb.connect(str(uri))


def open_tables(uri: str | os.PathLike) -> dict[str, Any]:
    """{"files": table(, "windows": table)} of an existing table output; FileNotFoundError naming `uri` if absent
    (nothing is created), ValueError if a file is in the way."""
    db = connect(uri)
    names = set(_table_names(db))
    if FILES not in names:
        raise FileNotFoundError(f"{uri} is not a clapforge table (no '{FILES}' table in it): "
                                "make it with `clapforge embed MODEL INPUT OUT.lance`")
    return {name: db.open_table(name) for name in (FILES, WINDOWS) if name in names}


def table_settings(table: Any) -> dict[str, Any]:
    return json.loads((table.schema.metadata or {}).get(METADATA_KEY.encode(), b"{}"))


def _table_names(db: Any) -> list[str]:
    names, token = [], None
    while True:
        page = db.list_tables(page_token=token)
        names += page.tables
        token = page.page_token
        if not token:
            return names


# ---------------------------------------------------------------------------------------------------- writing


def _schemas(settings: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    vector = pa.list_(pa.float32(), int(settings["embedding_dim"]))
    metadata = {METADATA_KEY: json.dumps(settings, sort_keys=True)}
    schemas = {FILES: pa.schema([
        pa.field("key", pa.string(), nullable=False), ("path", pa.string()), ("duration", pa.float64()),
        ("content_hash", pa.string()), ("embedding", vector), ("model", pa.string()), ("model_hash", pa.string()),
    ], metadata=metadata)}
    if settings.get("window"):
        schemas[WINDOWS] = pa.schema([
            pa.field("key", pa.string(), nullable=False), ("path", pa.string()), ("duration", pa.float64()),
            ("window_start", pa.float64()), ("window_end", pa.float64()), ("embedding", vector),
        ], metadata=metadata)
    return schemas


def check_settings(uri: str | os.PathLike, settings: dict[str, Any]) -> None:
    """Refuse to write into an existing table made with another model or other settings (nothing is mixed), or into
    a location that cannot hold a table (`check_location`)."""
    check_location(uri, create=True)
    try:
        tables = open_tables(uri)
    except FileNotFoundError:
        return
    previous = table_settings(tables[FILES])
    if previous.get("model_hash") != settings["model_hash"]:
        same_name = previous.get("model") == settings["model"]
        before = str(previous.get("model_hash", "?"))[:12]
        raise ValueError(
            f"{uri} holds embeddings of model {previous.get('model')!r} (weights {before})"
            f"; this run uses model {settings['model']!r} (weights {settings['model_hash'][:12]})"
            + (": the folder's weights changed since" if same_name else "")
            + ". Embeddings of two models do not mix: write another table, or pass --overwrite to start again")
    for name in CHECKED_SETTINGS:
        if previous.get(name) != settings.get(name):
            raise ValueError(f"{uri} was made with {name}={previous.get(name)!r}, this run has {name}="
                             f"{settings.get(name)!r}; write another table, or pass --overwrite to start again")


def create_tables(uri: str | os.PathLike, settings: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    """Open the tables of `uri`, creating the missing ones (empty) with the run's settings; `overwrite` drops the
    earlier ones first. A file, or a folder holding other files, at `uri` is refused (`check_location`)."""
    db = connect(uri, create=True)
    names = set(_table_names(db))
    tables = {}
    for name, schema in _schemas(settings).items():
        if overwrite and name in names:
            db.drop_table(name)
            names.discard(name)
        tables[name] = db.open_table(name) if name in names else db.create_table(name, schema=schema)
    if overwrite and WINDOWS in names and WINDOWS not in tables:
        db.drop_table(WINDOWS)
    return tables


def stored_hashes(table: Any) -> dict[str, str]:
    """key -> content hash of every file row (what a rerun compares the folder against)."""
    columns = column_values(table, ["key", "content_hash"])
    return dict(zip(columns["key"], columns["content_hash"], strict=True))


def column_values(table: Any, columns: list[str]) -> dict[str, list[Any]]:
    """Whole columns of a table as lists, reading only those columns (never the embeddings)."""
    found = table.search().select(columns).limit(None).to_arrow()
    return {name: found.column(name).to_pylist() for name in columns}


def _vectors(embeddings: Sequence[np.ndarray], dim: int) -> Any:
    import numpy as np
    import pyarrow as pa

    flat = np.asarray(embeddings, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), dim)


def commit_part(tables: dict[str, Any], rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """Commit the embedded rows of one part (rows of `embed_parts` plus "path" and "content_hash"; rows with an
    "error" are skipped): its windows first, then its file rows in one `merge_insert` (see the module docstring)."""
    import pyarrow as pa

    done = [r for r in rows if "error" not in r]
    if not done:
        return
    dim = int(settings["embedding_dim"])
    schemas = _schemas(settings)
    if WINDOWS in tables:
        delete_keys(tables[WINDOWS], [r["key"] for r in done])
        windows = [(r, start, end, vector) for r in done for start, end, vector in
                   zip(r["window_start"], r["window_end"], r["window_embeddings"], strict=True)]
        if windows:
            tables[WINDOWS].add(pa.table({
                "key": [w[0]["key"] for w in windows], "path": [w[0]["path"] for w in windows],
                "duration": [float(w[0]["duration"]) for w in windows],
                "window_start": [float(w[1]) for w in windows], "window_end": [float(w[2]) for w in windows],
                "embedding": _vectors([w[3] for w in windows], dim),
            }, schema=schemas[WINDOWS]))
    files = pa.table({
        "key": [r["key"] for r in done], "path": [r["path"] for r in done],
        "duration": [float(r["duration"]) for r in done], "content_hash": [r["content_hash"] for r in done],
        "embedding": _vectors([r["embedding"] for r in done], dim),
        "model": [settings["model"]] * len(done), "model_hash": [settings["model_hash"]] * len(done),
    }, schema=schemas[FILES])
    tables[FILES].merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(files)


def delete_keys(table: Any, keys: Iterable[str], chunk: int = 1000) -> None:
    """Delete the rows of `keys` (SQL IN lists of `chunk` keys: one commit each)."""
    keys = list(keys)
    for start in range(0, len(keys), chunk):
        quoted = ", ".join("'" + k.replace("'", "''") + "'" for k in keys[start : start + chunk])
        table.delete(f"key IN ({quoted})")


def drop_orphan_windows(tables: dict[str, Any]) -> None:
    """Delete windows whose file has no row (a run killed between a part's two commits, or a deleted file)."""
    if WINDOWS not in tables:
        return
    files = set(column_values(tables[FILES], ["key"])["key"])
    window_keys = set(column_values(tables[WINDOWS], ["key"])["key"])
    delete_keys(tables[WINDOWS], sorted(window_keys - files))


# ---------------------------------------------------------------------------------------------------- index


def index_defaults(rows: int) -> dict[str, int]:
    """IVF-RQ parameters from the table's size: partitions of ~PARTITION_ROWS rows (see the comment there)."""
    return {"num_partitions": max(1, rows // PARTITION_ROWS), "num_bits": RQ_BITS}


def vector_index_names(indices: Iterable[Any]) -> list[str]:
    """Names of the indices (as `list_indices` gives them, sync or async table) on the `embedding` column."""
    return [i.name for i in indices if "embedding" in (getattr(i, "columns", None) or [])]


def has_vector_index(table: Any) -> bool:
    return bool(vector_index_names(table.list_indices()))


def build_index(uri: str | os.PathLike, exact: bool = False) -> list[dict[str, Any]]:
    """Build (or, with `exact`, drop) the IVF-RQ index of each table of `uri`; one report per table:
    {"table", "rows", "action" ("built", "dropped", "left exact (...)"), "seconds"(, "num_partitions")}."""
    reports = []
    for name, table in open_tables(uri).items():
        rows = table.count_rows()
        report: dict[str, Any] = {"table": name, "rows": rows}
        start = time.perf_counter()
        if exact:
            for name in vector_index_names(table.list_indices()):
                table.drop_index(name)
            report["action"] = "dropped"
        elif rows < MIN_ANN_ROWS:
            report["action"] = f"left exact (fewer than {MIN_ANN_ROWS} rows)"
        else:
            params = index_defaults(rows)
            from lancedb.index import IvfRq

            # With `config`, lancedb 0.40 reads the first argument as the column name.
            table.create_index("embedding", replace=True, config=IvfRq(distance_type="cosine", **params))
            report.update(action="built", **params)
        report["seconds"] = time.perf_counter() - start
        reports.append(report)
    return reports


def local_path(uri: str | os.PathLike) -> Path | None:
    """The local directory of a table, or None for an object-storage URI (s3://, gs://, az://, ...)."""
    text = str(uri)
    return None if "://" in text and not text.startswith("file://") else Path(text.removeprefix("file://"))
