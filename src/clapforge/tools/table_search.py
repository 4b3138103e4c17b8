"""Nearest-neighbour search of the LanceDB table (`tools/table.py` writes and indexes it): `clapforge search TABLE`,
`tools.api.search` and any long-lived process that keeps what `open_tables` returned.

A query is one call on lancedb's event-loop thread (`_nearest`), run with lance's threads on one core
(`_lance_on_one_core`); a long-lived process keeps the result columns in memory and skips lance's check for rows
missing from the index while there are none (`_version_state`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from .table import FILES, WINDOWS, open_tables, vector_index_names

# The index (IVF-RQ, see PARTITION_ROWS in tools/table.py) is searched by probing NPROBES partitions and re-ranking
# REFINE_FACTOR * k candidates with their stored float32 vectors.
# Where a query's time goes (10^6 rows, 244 partitions, 10 fragments; p50 of 300 queries, 2 cores, 1-min load 2-5):
# planning, the IVF and 20 probes ~4.5 ms (1 probe: ~3 ms); re-ranking 30 candidates ~3 ms (most of it fixed: 100
# cost ~5 ms); taking key, path and duration of the 10 results ~3 ms; the sync query builder ~2.5 ms more, gone
# (see `_nearest`). Refine 3 instead of 10: recall@10 0.998 (2: 0.983) at 10^6 rows and at 100k (200 clusters).
# 8-bit RQ without re-ranking: 0.946 at 100k, 5x the build time. Compacting the 10 fragments into one: no faster.
# 10 probes instead of 20 (2026-12-03, 10^6 rows, 244 partitions, queries timed in turns in one process): recall@10
# 0.997 (20: 0.998, 5: 0.994), ~1 ms less per query.
NPROBES = 10
REFINE_FACTOR = 3
# A long-lived search process (one that keeps what `open_tables` returned) holds the result columns of tables of up to
# HELD_MAX_ROWS rows in memory, so that lance returns row ids and distances only: taking key, path and duration of
# the 10 results from the data files is ~3 ms of a query at 10^6 rows, holding them ~100 MB and ~0.5 s at the
# first query (10^6 rows).
HELD_MAX_ROWS = 2_000_000
# Names (/proc comm) of the threads lance and lancedb run a query on: the tokio runtime's workers and lance's CPU pool.
# The Python event-loop thread lancedb bridges through is found by its id (LOOP.thread).
LANCE_THREAD_NAMES = ("lancedb-tokio-w", "lance-cpu")


def search_table(
    uri: str | os.PathLike | dict[str, Any],
    query: np.ndarray,
    top_k: int = 10,
    where: str | None = None,
    exact: bool = False,
    windows: bool = False,
    nprobes: int | None = None,
    refine_factor: int | None = None,
) -> list[dict[str, Any]]:
    """Nearest rows of a table to the (E,) query by cosine similarity, best first.

    `uri` names the table output, or is what `open_tables` returned (a long-lived process keeps it open: opening
    costs a read of the manifest; such a process also holds the rows' columns but the embeddings in memory, read at
    its first query of each table version, see HELD_MAX_ROWS). ANN when the table has an index and `exact` is False,
    else an exact scan.
    `where` is a LanceDB SQL filter on the columns (`key`, `path`, `duration`, ...), applied before the top k are
    chosen. With `windows`, files are ranked by their best window (each result says where it is).
    Returns [{"rank", "score", "key", "path", "duration"(, "start", "end")}].
    """
    tables = uri if isinstance(uri, dict) else open_tables(uri)
    name = WINDOWS if windows else FILES
    if name not in tables:
        raise ValueError(f"{'the table' if isinstance(uri, dict) else uri} has no windows: "
                         "make it with `clapforge embed --window`")
    table = tables[name]
    # Several windows of one file can fill the top k: fetch more and keep each file's best.
    limit = top_k * 20 if windows else top_k
    columns = ["key", "path", "duration", "_distance"] + (["window_start", "window_end"] if windows else [])
    found = _nearest(table, np.asarray(query, dtype=np.float32), limit, columns, where, exact,
                     nprobes or NPROBES, refine_factor or REFINE_FACTOR, hold=isinstance(uri, dict)).to_pylist()
    results, seen = [], set()
    for row in found:
        if row["key"] in seen:
            continue
        seen.add(row["key"])
        result = {"rank": len(results) + 1, "score": 1.0 - float(row["_distance"]), "key": row["key"],
                  "path": row["path"], "duration": row["duration"]}
        if windows:
            result.update(start=row["window_start"], end=row["window_end"])
        results.append(result)
        if len(results) == top_k:
            break
    return results


def _nearest(table: Any, query: np.ndarray, limit: int, columns: list[str], where: str | None, exact: bool,
             nprobes: int, refine_factor: int, hold: bool = False) -> Any:
    """The `limit` rows nearest to `query` by cosine distance, best first, as an arrow table of `columns`.

    Through the AsyncTable that lancedb's LanceTable wraps, in one call on lancedb's event-loop thread: the sync
    query builder makes seven calls there per query (three schema reads for blob columns, the stream's batches),
    ~2.5 ms of a query (see the comment above NPROBES). lancedb is pinned (==0.40.0); any other table object
    goes through the sync builder. A table without a vector index is scanned exactly whatever the probes and refine
    factor say, so there is no need to list its indices (another call) on every query. With `hold`, the columns come
    from `_version_state` and lance returns only row ids and distances.
    """
    from lancedb.table import AsyncTable

    inner = getattr(table, "_table", None)
    if not isinstance(inner, AsyncTable):
        builder = table.search(query, vector_column_name="embedding").distance_type("cosine").limit(limit)
        if where:
            builder = builder.where(where, prefilter=True)  # filter first, then take the top k
        builder = builder.bypass_vector_index() if exact else builder.nprobes(nprobes).refine_factor(refine_factor)
        return builder.select(columns).to_arrow()
    from lancedb.background_loop import LOOP

    def builder(select: list[str], fully_indexed: bool = False) -> Any:
        query_builder = inner.vector_search(query).column("embedding").distance_type("cosine").limit(limit)
        if where:
            query_builder = query_builder.where(where)  # a prefilter, the async builder's default
        if exact:
            query_builder = query_builder.bypass_vector_index()
        else:
            query_builder = query_builder.nprobes(nprobes).refine_factor(refine_factor)
            if fully_indexed:
                query_builder = query_builder.fast_search()
        return query_builder.select(select)

    async def run() -> Any:
        state = await _version_state(table, inner, [c for c in columns if c != "_distance"]) if hold else None
        if state is None or state.rows is None:
            return await builder(columns, state is not None and state.fully_indexed).to_arrow()
        row_ids, rows = state.rows
        hits = await builder(["_distance"], state.fully_indexed).with_row_id().to_arrow()
        found = rows.take(np.searchsorted(row_ids, hits.column("_rowid").to_numpy()))
        return found.append_column("_distance", hits.column("_distance"))

    with _lance_on_one_core(LOOP.thread.native_id):
        return LOOP.run(run())


# Queries running inside `_lance_on_one_core`, and the (thread id, its own cores) pairs the first of them pinned.
_PIN_LOCK = threading.Lock()
_PINNED_QUERIES = 0
_PINNED_MASKS: list[tuple[int, set[int]]] = []


@contextlib.contextmanager
def _lance_on_one_core(loop_thread: int | None) -> Iterator[None]:
    """Run the block with lance's threads (and lancedb's event-loop thread) pinned to one of the calling thread's
    cores, then give each thread back the cores it had.

    Why: a query hops across ~20 threads (Python -> event loop -> tokio workers -> lance's CPU pool and back). On a VM
    every hop to an idle virtual core is a wake-up through the hypervisor, and the time it steals grows with them
    (measured 6-19% of CPU time during ANN queries against 1-4% during an exact scan). Measured 2026-12-03 on 2 EPYC
    cores (a VM), 10^6 rows, 500 queries taking turns in one process: p50 8.4 ms free, 7.5 ms pinned during each
    query (7.1 ms pinned for good; 9.4 -> 7.6 and 11.2 -> 8.2 in two more runs). Only during the query, so lance's
    writes and index builds keep every core. A no-op with one core, off Linux, or where affinity can't be set.
    Concurrent queries (a Space serving several users) share one pinning: the first pins, the last gives back."""
    global _PINNED_QUERIES
    with _PIN_LOCK:
        if _PINNED_QUERIES == 0:
            cores = _cores()
            for tid in _lance_threads(loop_thread) if cores and len(cores) > 1 else []:
                with contextlib.suppress(OSError):  # the thread ended, or affinity is not ours to set
                    own = os.sched_getaffinity(tid)
                    os.sched_setaffinity(tid, {min(cores)})
                    _PINNED_MASKS.append((tid, own))
        _PINNED_QUERIES += 1
    try:
        yield
    finally:
        with _PIN_LOCK:
            _PINNED_QUERIES -= 1
            if _PINNED_QUERIES == 0:
                for tid, own in _PINNED_MASKS:
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(tid, own)
                _PINNED_MASKS.clear()


def _cores() -> set[int] | None:
    """The calling thread's allowed cores, or None where the platform has no affinity API."""
    getter = getattr(os, "sched_getaffinity", None)
    return set(getter(threading.get_native_id())) if getter else None


# Thread id -> whether it is one of lance's, per task directory listing (thread names are read once per thread);
# the lock keeps concurrent queries (a Space serving several users) from updating it at the same time.
_KNOWN_THREADS: dict[int, bool] = {}
_KNOWN_THREADS_LOCK = threading.Lock()


def _lance_threads(loop_thread: int | None) -> list[int]:
    """Ids of lance's threads and of lancedb's event-loop thread in this process (Linux: /proc/self/task)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []
    with _KNOWN_THREADS_LOCK:
        for tid in tids:
            if tid not in _KNOWN_THREADS:
                try:
                    with open(f"/proc/self/task/{tid}/comm") as f:
                        _KNOWN_THREADS[tid] = f.read().strip() in LANCE_THREAD_NAMES
                except OSError:
                    _KNOWN_THREADS[tid] = False
        live = set(tids)
        for gone in [t for t in _KNOWN_THREADS if t not in live]:
            del _KNOWN_THREADS[gone]  # thread ids are reused: forget ended threads
        return [t for t in tids if _KNOWN_THREADS[t] or t == loop_thread]


@dataclasses.dataclass(frozen=True)
class _VersionState:
    """What a long-lived process keeps about one version of a table (see `_version_state`)."""

    version: int
    columns: list[str]
    rows: tuple[np.ndarray, Any] | None  # (sorted row ids, those rows' columns), None if the table is too large
    fully_indexed: bool  # every row is in the vector index


_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # table -> its _VersionState


async def _version_state(table: Any, inner: Any, columns: list[str]) -> _VersionState:
    """Read once per table version: `columns` (never the embeddings) of every row with their row ids when the table
    has at most HELD_MAX_ROWS rows, and whether the vector index covers every row.

    A row id (fragment, offset) names the same row for as long as the row lives (fragments are immutable; a write
    adds fragments and deletion files), and the search of one version only returns rows of that version, so what a
    version held is right for each of its queries. A fully indexed version can skip lance's check for rows the index
    lacks (`fast_search`, ~0.9 ms of a query at 10^6 rows); rows appended since the index was built (an incremental
    embed) make a new version that is not fully indexed, so they are still found by the flat search of the rest."""
    version = await inner.version()
    state = _STATES.get(table)
    if state is None or state.version != version or state.columns != columns:
        rows = None
        if await inner.count_rows() <= HELD_MAX_ROWS:
            found = await inner.query().select(columns).with_row_id().to_arrow()
            row_ids = found.column("_rowid").to_numpy()
            order = np.argsort(row_ids, kind="stable")
            rows = (row_ids[order], found.drop_columns(["_rowid"]).take(order))
        indices = vector_index_names(await inner.list_indices())
        stats = await inner.index_stats(indices[0]) if indices else None
        state = _VersionState(version, columns, rows, stats is not None and stats.num_unindexed_rows == 0)
        _STATES[table] = state
    return state
