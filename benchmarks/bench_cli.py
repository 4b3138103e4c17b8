"""CLI start-up: wall time of `clapforge --help` and `clapforge embed --help`, the median of --runs runs each.

Side by side in one run: the console script (`clapforge_cli`: it parses before importing torch and transformers) and
`python -m clapforge`, which imports the package first, as the console script did before it moved out of the package
(`import clapforge` registers the Auto classes, which imports torch and transformers). Each run is a fresh process;
the 1-minute load average is read before each run and printed with the figures (the machine is shared).

    .venv/bin/python benchmarks/bench_cli.py [--runs 5]

Prints a markdown table (about a minute on 2 cores); the "## CLI start-up" section of benchmarks/RESULTS.md quotes it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
CASES = {
    "clapforge --help": [str(BIN / "clapforge"), "--help"],
    "clapforge embed --help": [str(BIN / "clapforge"), "embed", "--help"],
    "python -m clapforge --help": [sys.executable, "-m", "clapforge", "--help"],
    "python -m clapforge embed --help": [sys.executable, "-m", "clapforge", "embed", "--help"],
}


def time_runs(command: list[str], runs: int) -> tuple[list[float], list[float]]:
    """(wall seconds, 1-minute load average before the run) for each run."""
    seconds, loads = [], []
    for _ in range(runs):
        loads.append(os.getloadavg()[0])
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        seconds.append(time.perf_counter() - start)
    return seconds, loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"| command | median of {args.runs} (s) | runs (s) | 1-min load average before each run |")
    print("|---|---|---|---|")
    for name, command in CASES.items():
        seconds, loads = time_runs(command, args.runs)
        runs = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"| `{name}` | {statistics.median(seconds):.2f} | {runs} | {', '.join(f'{x:.2f}' for x in loads)} |")


if __name__ == "__main__":
    main()
