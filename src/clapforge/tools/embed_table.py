"""`clapforge embed MODEL INPUT OUT.lance`: an incremental embed into a LanceDB table (layout in `tools.table`).

Why incremental: a library of millions of files grows by a few thousand at a time; a rerun must cost what changed,
not what is there. A rerun hashes every input (sha1 of its bytes), embeds only the files whose key is new or whose
hash differs from the table's, and deletes the rows of files no longer in the input. The work is cut into parts of
`part_size` files; a single process commits each part to the table as it completes (a kill loses at most the parts in
flight). Under `accelerate launch` every process writes its parts to OUT.lance.parts/ (part files, each atomic) and
rank 0 commits them all to the table after every process has finished: one writer, so no commit ever races another.
Part files of a killed launch are not reused (the rerun recomputes that work); committed parts are.
Unreadable inputs are listed in OUT.lance.errors.json and tried again on every run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from .embed_inputs import content_hash, list_inputs
from .embed_job import (
    EmbedOptions,
    EmbedReport,
    embed_parts,
    launch_state,
    load_run_engine,
    part_path,
    run_settings,
    write_part,
)
from .table import (
    FILES,
    check_settings,
    commit_part,
    create_tables,
    delete_keys,
    drop_orphan_windows,
    local_path,
    stored_hashes,
)


def embed_to_table(
    model: str | os.PathLike, source: str | os.PathLike, out: str | os.PathLike, options: EmbedOptions
) -> EmbedReport:
    """Bring the table `out` up to date with `source` (see the module docstring); returns the report."""
    from accelerate.utils import broadcast_object_list
    from tqdm.auto import tqdm

    from ..inference.loading import weights_hash

    state = launch_state()
    rank, world = state.process_index, state.num_processes
    local = local_path(out)
    items, reader = list_inputs(source, options.dataset, options.audio_column, options.split, options.key_column)
    engine = load_run_engine(model, options, state.device)
    report = EmbedReport(Path(str(out)), main_process=state.is_main_process, precision=engine.choice)
    settings = {**run_settings(model, engine, options), "model_hash": weights_hash(engine.model)}
    if not options.overwrite:
        check_settings(out, settings)  # every rank, before anything changes, so a refusal stops all alike

    # Hash once on rank 0 and share: on many machines, every process reading every file would multiply the I/O.
    hashes = [content_hash(item, reader) for item in items] if state.is_main_process else None
    if world > 1:
        hashes = broadcast_object_list([hashes])[0]
    parts_dir = Path(f"{local}.parts") if local is not None else None
    if state.is_main_process:
        tables = create_tables(out, settings, overwrite=options.overwrite)
        if parts_dir is not None and parts_dir.exists():
            shutil.rmtree(parts_dir)  # parts of a killed launch: never committed, so recomputed below
    state.wait_for_everyone()
    if not state.is_main_process:
        tables = create_tables(out, settings)
    stored = stored_hashes(tables[FILES])
    keys = {item.key for item in items}
    removed = sorted(set(stored) - keys)
    # An input that failed last time with the same bytes fails again: carried over, not retried.
    failed = _previous_errors(local)
    carried = [failed[item.key] for item, digest in zip(items, hashes, strict=True)
               if item.key in failed and failed[item.key].get("content_hash") == digest]
    skip = {e["key"] for e in carried}
    todo = [item for item, digest in zip(items, hashes, strict=True)
            if stored.get(item.key) != digest and item.key not in skip]
    extra = {item.index: {"path": item.path or item.key, "content_hash": digest}
             for item, digest in zip(items, hashes, strict=True)}
    if state.is_main_process and removed:
        delete_keys(tables[FILES], removed)  # files first: a windowless file row never exists
    report.computed, report.removed = len(todo), len(removed)
    report.up_to_date = not todo and not removed

    size = options.part_size
    parts = {p: todo[p * size : (p + 1) * size] for p in range(rank, -(-len(todo) // size), world)}
    errors: list[dict[str, str]] = list(carried)

    def commit(part: int, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            row.update(extra[row["index"]])
        if world == 1:
            errors.extend(_error(r) for r in rows if "error" in r)
            commit_part(tables, rows, settings)
        else:
            parts_dir.mkdir(parents=True, exist_ok=True)
            write_part(part_path(parts_dir, part), rows)

    if world > 1 and parts_dir is None:
        raise ValueError(f"{out}: a launch of {world} processes writes part files beside the table, so it needs a "
                         "local table; embed on one process per table on object storage")
    total = sum(len(its) for its in parts.values())
    bar = tqdm(total=total, unit="file", desc=f"embed {report.out.name}",
               disable=not (options.progress and state.is_main_process))
    # The decoding workers start from a fork server, not by forking this process: lancedb's runtime threads are
    # running here, and a fork copies whatever locks they hold (lancedb warns of deadlocks in each forked child).
    # Windows has no fork server, and spawns (the safe way) anyway.
    start = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else None
    embed_parts(engine, reader, parts, commit, options, bar=bar, start_method=start)
    bar.close()

    state.wait_for_everyone()
    if state.is_main_process:
        if world > 1:
            errors += _commit_part_files(tables, parts_dir, extra, settings)
        drop_orphan_windows(tables)
        report.embedded, report.errors = tables[FILES].count_rows(), errors
        if local is not None:
            atomic_write_json(Path(f"{local}.errors.json"), sorted(errors, key=lambda e: e["key"]))
    state.wait_for_everyone()
    return report


def _commit_part_files(tables: dict[str, Any], parts_dir: Path, extra: dict[int, dict[str, str]],
                       settings: dict[str, Any]) -> list[dict[str, str]]:
    """Rank 0, after a launch: commit every process's part files to the table, in part order, then remove them."""
    import pyarrow.parquet as pq

    errors = []
    for path in sorted(parts_dir.glob("part-*.parquet")) if parts_dir.exists() else []:
        rows = []
        for row in pq.read_table(path).to_pylist():
            row = {k: v for k, v in row.items() if v is not None}
            row.update(extra[row["index"]])
            if "error" in row:
                errors.append(_error(row))
            rows.append(row)
        commit_part(tables, rows, settings)
    if parts_dir.exists():
        shutil.rmtree(parts_dir)
    return errors


def _error(row: dict[str, Any]) -> dict[str, str]:
    return {"key": row["key"], "reason": row["error"], "content_hash": row["content_hash"]}


def _previous_errors(local: Path | None) -> dict[str, dict[str, str]]:
    path = Path(f"{local}.errors.json") if local is not None else None
    if path is None or not path.exists():
        return {}
    try:
        return {e["key"]: e for e in json.loads(path.read_text())}
    except (ValueError, KeyError, TypeError):
        return {}  # unreadable: every failed input is simply tried again
