"""Search a million clips: the exact torch scan (what `search` does on a parquet file) against the LanceDB IVF-RQ
index (`clapforge index build` + `search` on a table), on the same vectors and queries in one run.

The vectors are synthetic 512-d unit vectors clustered like real embeddings (points around --clusters random centres),
not uniform noise, on which any index looks either perfect or hopeless. The queries are fresh points drawn around
the same centres. Ground truth is the exact scan's top k. Recorded: recall@k of the index, p50 and p95 latency of one
query at a time (exact scan with the matrix in memory; ANN in a separate process that opens the table and holds
nothing else, so its peak RSS is that of a query process; the two sides take turns query by query), build time of the
table and the index, disk size, and the share of CPU time the hypervisor stole while the queries ran.
`--variants kept,pinned,one-off` makes the query process answer in alternating rounds of `--round` queries through
each way of querying (a kept `TableSearcher`, one that pins lance's threads, the one-off `search_table`), so that
the machine's load moves all of them alike; the main table quotes the first.

    .venv/bin/python benchmarks/bench_index.py [--vectors 1000000] [--queries 1000] [--dir /tmp/bench_index [--reuse]]
        [--variants kept,pinned]

At 10^5 vectors on 2 cores: 33 s and 1.6 GB peak RSS of the main process (torch, the vectors, the table's writer);
at 10^6 ~7 minutes and ~6 GB (the 2 GB matrix, its table chunks, the index build). Check it at `--vectors 20000`.
Prints markdown tables with the load average and the CPU; RESULTS.md quotes them ("Vector index", "Table search").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def clustered(n: int, centres: np.ndarray, spread: float, seed: int, chunk: int = 100_000) -> np.ndarray:
    """(n, dim) float32 unit vectors around `centres`, generated in chunks (float64 noise for 10^6 x 512 is 4 GB)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)] + spread * rng.standard_normal((m, centres.shape[1]),
                                                                                     dtype=np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def write_table(uri: Path, vectors: np.ndarray, chunk: int = 100_000) -> None:
    """The vectors as a clapforge table (the schema `embed` writes), appended in chunks of `chunk` rows."""
    import pyarrow as pa

    from clapforge.tools.table import FILES, create_tables

    settings = {"model": "synthetic", "model_hash": "0" * 64, "embedding_dim": vectors.shape[1], "window": False}
    files = create_tables(uri, settings, overwrite=True)[FILES]
    # Varied durations as in a real library: a constant column is stored as one value, which lance 2.2 expands for
    # the whole page on every take (~3.5 ms per query at 10^6 rows, a cost real tables do not have).
    durations = np.random.default_rng(3).uniform(0.5, 30.0, len(vectors))
    for start in range(0, len(vectors), chunk):
        block = vectors[start : start + chunk]
        keys = [f"clip{i:08d}.wav" for i in range(start, start + len(block))]
        files.add(pa.table({
            "key": keys, "path": [f"/library/{k}" for k in keys], "duration": durations[start : start + len(block)],
            "content_hash": keys, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)),
                                                                               vectors.shape[1]),
            "model": ["synthetic"] * len(block), "model_hash": ["0" * 64] * len(block),
        }, schema=files.schema))


def exact_truth(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Top-k row numbers of every query by an exact (batched) scan: the ground truth."""
    import torch

    matrix, q = torch.from_numpy(vectors), torch.from_numpy(queries)
    return torch.cat([(matrix @ q[s : s + 64].T).topk(k, dim=0).indices.T for s in range(0, len(q), 64)]).numpy()


def timed_side_by_side(vectors: np.ndarray, queries: np.ndarray, k: int, timed: int, child: subprocess.Popen
                       ) -> dict[str, list]:
    """Query i goes to the ANN query process, then (for the first `timed`) through the exact scan here, one after
    the other: both sides see the same machine (on a VM the hypervisor's steal swings within minutes and costs
    lance's many-threaded query most; RESULTS.md, "Vector index"). Returns {"exact", "ann": latencies (s),
    "variant": the way each ANN query went, "found": the ANN's row numbers, "steal": {"exact" or a variant:
    /proc/stat tick deltas summed over its calls}}."""
    import torch

    matrix = torch.from_numpy(vectors)
    out: dict = {"exact": [], "ann": [], "variant": [], "found": [], "steal": {}}

    def count(side: str, before: list[int]) -> None:
        ticks = out["steal"].get(side, [0] * 10)
        out["steal"][side] = [t + b - a for t, a, b in zip(ticks, before, cpu_times(), strict=False)]

    for i, query in enumerate(torch.from_numpy(queries)):
        before = cpu_times()
        child.stdin.write(f"{i}\n")
        child.stdin.flush()
        reply = json.loads(child.stdout.readline())
        count(reply["variant"], before)
        out["ann"].append(reply["seconds"])
        out["variant"].append(reply["variant"])
        out["found"].append(reply["found"])
        if i < timed:
            before = cpu_times()
            start = time.perf_counter()
            (matrix @ query).topk(k)
            out["exact"].append(time.perf_counter() - start)
            count("exact", before)
    return out


VARIANTS = {
    "kept": "a kept `TableSearcher` (the default)",
    "pinned": "a kept `TableSearcher(pin_threads=True)`",
    "one-off": "`search_table` on open tables, keeping nothing",
}


def query_process(uri: str, queries_path: str, k: int, variants: list[str], round_size: int) -> None:
    """Child mode: open the table; for each query number i read from stdin, search it the way of round
    i // round_size (the variants in turn) and print its latency, the variant and the found keys (one JSON line);
    at end of input print peak RSS."""
    import clapforge_cli

    # A process without a model: importing clapforge skips the Auto-class registration, hence torch and transformers
    # (see clapforge_cli's docstring). What remains is numpy, pyarrow, lancedb and the index.
    clapforge_cli.RUNNING = True
    import lancedb  # noqa: F401  (imported by the first search anyway: counted in imports_rss_mb)

    from clapforge.tools.table import open_tables
    from clapforge.tools.table_search import TableSearcher, search_table

    assert not {"torch", "transformers"} & set(sys.modules), "the query process imported torch or transformers"
    queries = np.load(queries_path)
    imports_mb = _rss_mb()
    tables = open_tables(uri)
    searchers = {"kept": TableSearcher(tables).search, "pinned": TableSearcher(tables, pin_threads=True).search,
                 "one-off": lambda q, top_k: search_table(tables, q, top_k=top_k)}
    for variant in variants:
        searchers[variant](queries[0], top_k=k)  # warm: index, manifest and held columns read once
    for line in sys.stdin:
        i = int(line)
        variant = variants[i // round_size % len(variants)]
        start = time.perf_counter()
        results = searchers[variant](queries[i], top_k=k)
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "variant": variant, "found": [int(r["key"][4:12]) for r in results]}),
              flush=True)
    print(json.dumps({"peak_rss_mb": _peak_rss_mb(), "imports_rss_mb": imports_mb}), flush=True)


def steal_percent(ticks: list[int]) -> float:
    """Share of CPU time the hypervisor took, from summed deltas of /proc/stat's cpu line."""
    return 100.0 * ticks[7] / max(1, sum(ticks[:8]))


def cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: on Linux that survives fork and exec, so a child
    of the benchmark would report at least the parent's RSS at the fork (the vectors and torch, >1 GB)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def index_text(report: dict) -> str:
    if report["action"] == "reused":
        return "the one an earlier run built (reused)"
    partitions, bits = report.get("num_partitions"), report.get("num_bits")
    return f"{report['action']} {partitions} partitions, {bits} bits per dimension (RaBitQ)"


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=2000, help="centres the vectors are drawn around")
    parser.add_argument("--spread", type=float, default=0.8,
                        help="noise per dimension around a centre (0.8: cosine ~0.6 within a cluster, ~0 across)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--exact-timed", type=int, default=200, help="single-query exact scans timed")
    parser.add_argument("--dir", help="where the table goes (default: a temporary folder, removed at the end)")
    parser.add_argument("--reuse", action="store_true",
                        help="query the indexed table an earlier run left in --dir (same arguments) instead of "
                             "writing and indexing it again")
    parser.add_argument("--variants", default="kept",
                        help="comma-separated ways of querying, in alternating rounds: " + ", ".join(
                            f"{name} ({text})" for name, text in VARIANTS.items()))
    parser.add_argument("--round", type=int, default=50, help="queries per round of one variant")
    parser.add_argument("--query-process", nargs=2, metavar=("TABLE", "QUERIES_NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}: choose among {list(VARIANTS)}")
    if args.query_process:
        query_process(*args.query_process, args.top_k, variants, args.round)
        return

    from clapforge.tools.table import FILES, build_index
    from clapforge.tools.table_search import NPROBES, REFINE_FACTOR

    load_start = os.getloadavg()
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_index_"))
    workdir.mkdir(parents=True, exist_ok=True)
    uri = workdir / "clips.lance"
    try:
        centres = np.random.default_rng(0).standard_normal((args.clusters, args.dim)).astype(np.float32)
        vectors = clustered(args.vectors, centres, args.spread, seed=1)
        queries = clustered(args.queries, centres, args.spread, seed=2)
        np.save(workdir / "queries.npy", queries)

        if args.reuse:
            if not args.dir or not uri.exists():
                raise SystemExit(f"--reuse needs --dir with the table of an earlier run ({uri} not found)")
            indices = uri / f"{FILES}.lance" / "_indices"
            write_s, report, table_mb = None, {"action": "reused", "seconds": None}, disk_mb(uri) - disk_mb(indices)
        else:
            start = time.perf_counter()
            write_table(uri, vectors)
            write_s, table_mb = time.perf_counter() - start, disk_mb(uri)
            (report,) = build_index(uri)
        truth = exact_truth(vectors, queries, args.top_k)
        index_mb = disk_mb(uri) - table_mb

        child = subprocess.Popen([sys.executable, __file__, "--query-process", str(uri), str(workdir / "queries.npy"),
                                  "--top-k", str(args.top_k), "--variants", args.variants, "--round",
                                  str(args.round)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        timed = timed_side_by_side(vectors, queries, args.top_k, args.exact_timed, child)
        child.stdin.close()
        memory = json.loads(child.stdout.readline())
        if child.wait() != 0:
            raise SystemExit("the query process failed")
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    load_end = os.getloadavg()

    recall = np.mean([len(set(f) & set(t.tolist())) / args.top_k for f, t in zip(timed["found"], truth, strict=True)])
    exact_p50 = statistics.median(timed["exact"]) * 1e3
    by_variant = {v: sorted(x * 1e3 for x, w in zip(timed["ann"], timed["variant"], strict=True) if w == v)
                  for v in variants}
    ann_p50, ann_p95 = percentiles(by_variant[variants[0]])
    print(f"{args.vectors} vectors x {args.dim} ({args.clusters} clusters, spread {args.spread}), {args.queries} "
          f"queries, k={args.top_k}; index: {index_text(report)}, searched with {NPROBES} probes and refine factor "
          f"{REFINE_FACTOR}\n")
    print("| | exact torch scan | LanceDB IVF-RQ |")
    print("|---|---|---|")
    print(f"| recall@{args.top_k} | 1 | {recall:.3f} |")
    print(f"| p50 latency of one query (ms) | {exact_p50:.1f} | {ann_p50:.1f} (p95 {ann_p95:.1f}) |")
    print(f"| speed-up at p50 | 1x | {exact_p50 / ann_p50:.1f}x |")
    built = "reused" if write_s is None else f"table {write_s:.0f} s, index {report['seconds']:.0f} s"
    print(f"| build | - | {built} |")
    print(f"| disk (MB) | {args.vectors * args.dim * 4 / 2**20:.0f} (float32 matrix) | table {table_mb:.0f}, "
          f"index {index_mb:.0f} |")
    print(f"| peak RSS of the query process (MB) | (holds the matrix) | {memory['peak_rss_mb']:.0f} "
          f"({memory['imports_rss_mb']:.0f} after importing lancedb and clapforge.tools.table_search without torch, "
          "before opening the table) |")
    print(f"\n1-min load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end; {cpu_text()}; "
          f"CPU time stolen by the hypervisor: {steal_percent(timed['steal']['exact']):.0f}% during the exact scans, "
          f"{steal_percent(timed['steal'][variants[0]]):.0f}% during the ANN queries.")
    if len(variants) > 1:
        print(f"\nANN queries in alternating rounds of {args.round} (the peak RSS above includes every variant's "
              "held columns):\n")
        print("| way of querying | queries | p50 (ms) | p95 (ms) | p50 vs the first | steal |")
        print("|---|---|---|---|---|---|")
        for variant in variants:
            p50, p95 = percentiles(by_variant[variant])
            print(f"| {VARIANTS[variant]} | {len(by_variant[variant])} | {p50:.2f} | {p95:.2f} | "
                  f"{p50 / ann_p50:.2f}x | {steal_percent(timed['steal'][variant]):.0f}% |")


def cpu_text() -> str:
    """CPUs, model and the flags that decide the kernels (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return f"{os.cpu_count()} CPUs"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "hypervisor") if f in flags]
    return f"{os.cpu_count()} CPUs ({model}; {' '.join(shown) or 'no AVX2'})"


def percentiles(ms: list[float]) -> tuple[float, float]:
    """p50 and p95 of sorted latencies."""
    return statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]


if __name__ == "__main__":
    main()
