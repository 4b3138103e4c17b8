"""Nearest-neighbour search of the LanceDB table (`tools/table.py` writes and indexes it): `clapforge search TABLE`,
`tools.api.search` and any long-lived process that searches a table many times.

`TableSearcher` is what such a process creates once and keeps: the open tables and what it read about each table
version (the result columns, whether the index covers every row). `search_table` is the one-off call: it keeps
nothing, so it pays lance's whole query path every time. Nothing here changes the process (thread affinity,
environment) unless a caller asks for it with `TableSearcher(..., pin_threads=True)`.
The measurements behind the settings and the query path: benchmarks/RESULTS.md, "Table search".
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from .table import FILES, WINDOWS, open_tables, vector_index_names

# The index (IVF-RQ, see PARTITION_ROWS in tools/table.py) is searched by probing NPROBES partitions and re-ranking
# REFINE_FACTOR * k candidates with their stored float32 vectors: the cheapest setting measured that keeps recall@10
# at 0.997 on 10^6 clustered rows (RESULTS.md, "Table search").
NPROBES = 10
REFINE_FACTOR = 3
# A TableSearcher holds the result columns (never the embeddings) of tables of up to HELD_MAX_ROWS rows, so that lance
# returns row ids and distances only: taking them from the data files is ~3 ms of a query at 10^6 rows, holding them
# ~100 MB (RESULTS.md, "Table search").
HELD_MAX_ROWS = 2_000_000
# Names (/proc comm) of the threads lance and lancedb run a query on: the tokio runtime's workers and lance's CPU pool.
# The Python event-loop thread lancedb bridges through is found by its id (LOOP.thread).
LANCE_THREAD_NAMES = ("lancedb-tokio-w", "lance-cpu")


class TableSearcher:
    """Searches one table output, keeping what the next query can reuse; create it once and keep it.

    `tables` names the table output (opened here: a read of the manifest) or is what `open_tables` returned. Once per
    table version (a write makes a new one) the searcher reads the rows' columns but the embeddings, for tables of up
    to `hold_max_rows` rows (0: none), and whether the vector index covers every row (then lance skips its scan of
    the rows the index lacks); `cache_versions=False` reads neither (a searcher used for one query).
    `pin_threads` (off by default) runs each query with lance's threads and lancedb's event-loop thread on one of the
    calling thread's cores, and gives them their cores back after it: fewer cross-core wake-ups on a virtual machine
    (3-6% of a query at 10^6 rows, RESULTS.md "Table search"), at the price of changing the affinity of threads the
    whole process shares (`ThreadPinning`; pass one
    `ThreadPinning` to every searcher of a process that pins). Safe to call from several threads at once.
    """

    def __init__(self, tables: str | os.PathLike | dict[str, Any], pin_threads: bool | ThreadPinning = False,
                 hold_max_rows: int = HELD_MAX_ROWS, cache_versions: bool = True) -> None:
        self.label = "the table" if isinstance(tables, dict) else str(tables)
        self.tables = tables if isinstance(tables, dict) else open_tables(tables)
        self.pinning = pin_threads if isinstance(pin_threads, ThreadPinning) else \
            ThreadPinning() if pin_threads else None
        self.hold_max_rows = hold_max_rows
        self.cache_versions = cache_versions
        self._states: dict[str, _VersionState] = {}  # table name -> what was read about its current version

    def search(self, query: np.ndarray, top_k: int = 10, where: str | None = None, exact: bool = False,
               windows: bool = False, nprobes: int | None = None, refine_factor: int | None = None
               ) -> list[dict[str, Any]]:
        """Nearest rows to the (E,) query by cosine similarity, best first.

        ANN when the table has an index and `exact` is False, else an exact scan. `where` is a LanceDB SQL filter on
        the columns (`key`, `path`, `duration`, ...), applied before the top k are chosen. With `windows`, files are
        ranked by their best window (each result says where it is).
        Returns [{"rank", "score", "key", "path", "duration"(, "start", "end")}].
        """
        name = WINDOWS if windows else FILES
        if name not in self.tables:
            raise ValueError(f"{self.label} has no windows: make it with `clapforge embed --window`")
        # Several windows of one file can fill the top k: fetch more and keep each file's best.
        limit = top_k * 20 if windows else top_k
        columns = ["key", "path", "duration", "_distance"] + (["window_start", "window_end"] if windows else [])
        found = self._nearest(name, np.asarray(query, dtype=np.float32), limit, columns, where, exact,
                              nprobes or NPROBES, refine_factor or REFINE_FACTOR).to_pylist()
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

    def _nearest(self, name: str, query: np.ndarray, limit: int, columns: list[str], where: str | None, exact: bool,
                 nprobes: int, refine_factor: int) -> Any:
        """The `limit` rows of table `name` nearest to `query` by cosine distance, best first, as an arrow table of
        `columns`.

        Through the AsyncTable that lancedb's LanceTable wraps, in one call on lancedb's event-loop thread: the sync
        query builder makes seven calls there per query (schema reads for blob columns, the stream's batches).
        lancedb is pinned (==0.40.0); any other table object goes through the sync builder. A table without a vector
        index is scanned exactly whatever the probes and refine factor say, so its indices need not be listed per
        query. With held columns (`_version_state`), lance returns only row ids and distances.
        """
        from lancedb.table import AsyncTable

        table = self.tables[name]
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
            if not self.cache_versions:
                return await builder(columns).to_arrow()
            state = await self._version_state(name, inner, [c for c in columns if c != "_distance"])
            if state.rows is None:
                return await builder(columns, state.fully_indexed).to_arrow()
            row_ids, rows = state.rows
            hits = await builder(["_distance"], state.fully_indexed).with_row_id().to_arrow()
            found = rows.take(np.searchsorted(row_ids, hits.column("_rowid").to_numpy()))
            return found.append_column("_distance", hits.column("_distance"))

        with self.pinning.pinned(LOOP.thread.native_id) if self.pinning else contextlib.nullcontext():
            return LOOP.run(run())

    async def _version_state(self, name: str, inner: Any, columns: list[str]) -> _VersionState:
        """Read once per version of table `name`: `columns` (never the embeddings) of every row with their row ids
        when the table has at most `hold_max_rows` rows, and whether the vector index covers every row.

        A row id (fragment, offset) names the same row for as long as the row lives (fragments are immutable; a write
        adds fragments and deletion files), and the search of one version only returns rows of that version, so what
        a version held is right for each of its queries. A fully indexed version can skip lance's check for rows the
        index lacks (`fast_search`); rows appended since the index was built (an incremental embed) make a new
        version that is not fully indexed, so they are still found by the flat search of the rest. Concurrent
        queries may both read a new version; either result is right, so the last one kept wins."""
        version = await inner.version()
        state = self._states.get(name)
        if state is None or state.version != version:
            rows = None
            if await inner.count_rows() <= self.hold_max_rows:
                found = await inner.query().select(columns).with_row_id().to_arrow()
                row_ids = found.column("_rowid").to_numpy()
                order = np.argsort(row_ids, kind="stable")
                rows = (row_ids[order], found.drop_columns(["_rowid"]).take(order))
            indices = vector_index_names(await inner.list_indices())
            stats = await inner.index_stats(indices[0]) if indices else None
            state = _VersionState(version, rows, stats is not None and stats.num_unindexed_rows == 0)
            self._states[name] = state
        return state


@dataclasses.dataclass(frozen=True)
class _VersionState:
    """What a TableSearcher keeps about one version of a table (see `TableSearcher._version_state`)."""

    version: int
    rows: tuple[np.ndarray, Any] | None  # (sorted row ids, those rows' columns), None if the table is too large
    fully_indexed: bool  # every row is in the vector index


def search_table(
    uri: str | os.PathLike | dict[str, Any] | TableSearcher,
    query: np.ndarray,
    top_k: int = 10,
    where: str | None = None,
    exact: bool = False,
    windows: bool = False,
    nprobes: int | None = None,
    refine_factor: int | None = None,
) -> list[dict[str, Any]]:
    """One search (see `TableSearcher.search` for the arguments and results), keeping nothing between calls.

    `uri` names the table output (opened on every call: a read of the manifest), is what `open_tables` returned, or
    is a `TableSearcher`, whose kept state then serves the query. Without a searcher each call pays lance's whole
    query path (the result columns taken from the data files, the scan for rows the index lacks): a few ms more per
    ANN query at 10^6 rows than a kept `TableSearcher` (RESULTS.md, "Table search"). A process that searches
    repeatedly should keep a `TableSearcher`.
    """
    searcher = uri if isinstance(uri, TableSearcher) else TableSearcher(uri, cache_versions=False)
    return searcher.search(query, top_k=top_k, where=where, exact=exact, windows=windows, nprobes=nprobes,
                           refine_factor=refine_factor)


class ThreadPinning:
    """Opt-in: during each `pinned` block, lance's threads and lancedb's event-loop thread sit on one of the calling
    thread's cores; after it each thread gets back the cores it had. Blocks may overlap (a Space serving several users):
    the first pins, the last gives back.

    Why: a query hops across ~20 threads, and on a virtual machine every hop to an idle virtual core is a wake-up
    through the hypervisor (RESULTS.md, "Table search", for what it saved and what dropping it costs). Only during a
    query, so lance's writes and index builds keep every core. A no-op with one core, off Linux, or where affinity
    can't be set. Process-wide in effect: lance's threads serve every table of the process, so two `ThreadPinning`
    objects with overlapping blocks would each take the other's pinning for a thread's own cores; searchers of one
    process that pin share one object.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queries = 0  # blocks now running
        self._masks: list[tuple[int, set[int]]] = []  # (thread id, its own cores) of the threads the first block pinned
        self._known: dict[int, bool] = {}  # thread id -> whether it is one of lance's (names read once per thread)

    @contextlib.contextmanager
    def pinned(self, loop_thread: int | None) -> Iterator[None]:
        with self._lock:
            if self._queries == 0:
                cores = _cores()
                for tid in self.lance_threads(loop_thread) if cores and len(cores) > 1 else []:
                    with contextlib.suppress(OSError):  # the thread ended, or affinity is not ours to set
                        own = os.sched_getaffinity(tid)
                        os.sched_setaffinity(tid, {min(cores)})
                        self._masks.append((tid, own))
            self._queries += 1
        try:
            yield
        finally:
            with self._lock:
                self._queries -= 1
                if self._queries == 0:
                    for tid, own in self._masks:
                        with contextlib.suppress(OSError):
                            os.sched_setaffinity(tid, own)
                    self._masks.clear()

    def lance_threads(self, loop_thread: int | None) -> list[int]:
        """Ids of lance's threads and of lancedb's event-loop thread in this process (Linux: /proc/self/task); the
        name cache is `pinned`'s to update, under its lock."""
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            return []
        for tid in tids:
            if tid not in self._known:
                try:
                    with open(f"/proc/self/task/{tid}/comm") as f:
                        self._known[tid] = f.read().strip() in LANCE_THREAD_NAMES
                except OSError:
                    self._known[tid] = False
        live = set(tids)
        for gone in [t for t in self._known if t not in live]:
            del self._known[gone]  # thread ids are reused: forget ended threads
        return [t for t in tids if self._known[t] or t == loop_thread]


def _cores() -> set[int] | None:
    """The calling thread's allowed cores, or None where the platform has no affinity API."""
    getter = getattr(os, "sched_getaffinity", None)
    return set(getter(threading.get_native_id())) if getter else None
