"""`make bench` runs benchmarks/run_all.py, which names every benchmark script in benchmarks/ and only those.

Nothing is measured here (the suite takes about 20 minutes): the target, the list and each script's flags are
checked, and `run_all.py --dry-run` prints the commands and where the figures go.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import run_all  # noqa: E402


def test_make_bench_runs_a_script_that_exists():
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert recipe is not None, "the Makefile has no bench target"
    scripts = re.findall(r"benchmarks/\S+\.py", recipe.group(1))
    assert scripts == ["benchmarks/run_all.py"] and all((ROOT / s).is_file() for s in scripts)


def test_the_suite_names_every_benchmark_script_and_its_flags_exist():
    listed = [b.script for b in run_all.BENCHMARKS]
    assert sorted(listed) == sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py"))
    for benchmark in run_all.BENCHMARKS:
        source = (ROOT / "benchmarks" / benchmark.script).read_text()
        for flag in (a for a in benchmark.args if a.startswith("--")):
            assert f'"{flag}"' in source, f"{benchmark.script} has no {flag} option"


def test_dry_run_prints_each_command_and_where_the_figures_go():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--dry-run"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for benchmark in run_all.BENCHMARKS:
        assert " ".join(run_all.command(benchmark)) in done.stdout
    assert f"Figures: {ROOT / 'benchmarks' / 'RESULTS.md'}" in done.stdout
