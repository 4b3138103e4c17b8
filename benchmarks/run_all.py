"""`make bench`: every benchmark in benchmarks/, one after the other, each in its own process (about 20 minutes).

Each script measures clapforge against its peer side by side in one run (see its docstring). Most rewrite their own
section of benchmarks/RESULTS.md and leave the others alone; the two that only print (CLI start-up, feature
extraction) are quoted there by hand. `make demo` is the end-to-end figure ("## make demo"), run apart.

    .venv/bin/python benchmarks/run_all.py [--dry-run] [--only bench_cli.py ...]

Run them on a machine as quiet as you can get: every script prints the load average with its figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"


@dataclass(frozen=True)
class Benchmark:
    script: str
    args: tuple[str, ...]
    minutes: int  # on 2 cores, as its docstring says or as last measured
    figures: str  # where its figures go


BENCHMARKS = [
    Benchmark("bench_cli.py", (), 1, 'printed; quoted in "## CLI start-up"'),
    Benchmark("bench_feature_extraction.py", (), 2, 'printed; quoted in "## Feature extraction"'),
    Benchmark("bench_stream.py", (), 3, 'rewrites "## Streaming"'),
    Benchmark("bench_model.py", (), 3, 'rewrites "## Audio embedding" and "## Long clips: memory"'),
    Benchmark(
        "bench_embed.py",
        ("--files", "64", "--batch-size", "16", "--num-workers", "2", "--rounds", "3", "--threads", "2", "--write"),
        5,
        'rewrites "## Embed"',
    ),
    Benchmark("bench_onnx.py", ("--write",), 15, 'rewrites "## ONNX backends"'),
    Benchmark("bench_train.py", (), 5, 'rewrites "## Training"'),
    Benchmark("bench_space.py", (), 2, 'rewrites "## Space"'),
    Benchmark("bench_index.py", (), 8, 'printed; quoted in "## Vector index"'),
]


def command(benchmark: Benchmark) -> list[str]:
    return [sys.executable, str(HERE / benchmark.script), *benchmark.args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list the commands and where their figures go; run none")
    parser.add_argument("--only", nargs="+", metavar="SCRIPT", help="run these scripts only (e.g. bench_cli.py)")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHMARKS if not args.only or b.script in args.only]
    unknown = set(args.only or []) - {b.script for b in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {[b.script for b in BENCHMARKS]}")

    failed = []
    for benchmark in chosen:
        print(f"== {benchmark.script} (~{benchmark.minutes} min): {' '.join(command(benchmark))}", flush=True)
        if args.dry_run:
            continue
        started = time.perf_counter()
        if subprocess.run(command(benchmark), cwd=HERE.parent).returncode != 0:
            failed.append(benchmark.script)
        print(f"== {benchmark.script} done in {time.perf_counter() - started:.0f} s", flush=True)

    print(f"\nFigures: {RESULTS}")
    for benchmark in chosen:
        print(f"  {benchmark.script}: {benchmark.figures}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
