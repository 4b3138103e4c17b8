"""The `clapforge` console script. It sits beside the package, not in it, so that `clapforge --help` is instant.

Python runs `clapforge/__init__.py` before any `clapforge.x` module, and that file registers the LAION-CLAP classes
with transformers' Auto classes on import, which imports torch and transformers (5-10 s on 2 cores). A console
script pointing into the package would pay that before argparse could answer `--help` or an argument error.

`main` marks the process as the CLI with the module attribute `RUNNING`, which `clapforge/__init__.py` reads through
`sys.modules`; the package then skips the registration, and `clapforge.cli.main` registers after parsing, right
before a command runs. A module attribute rather than an environment variable: child processes (accelerate workers,
spawned DataLoader workers) would inherit a variable and skip a registration they need; they never import this
module, so they import clapforge as usual.

A process that needs no model may set `RUNNING` itself before importing clapforge, for the same saving: one that
searches a LanceDB table with query vectors it already has (`clapforge.tools.table_search.search_table`), such as
the query process of benchmarks/bench_index.py, then imports numpy, pyarrow and lancedb (~100 MB resident) instead of
torch and transformers (~750 MB). It must not use the Auto classes, or must call
`clapforge.auto_classes.register_auto_classes()` first.
"""

from __future__ import annotations

import sys

RUNNING = False  # True once `main` runs (or set by a process without a model): read by clapforge/__init__.py


def main(argv: list[str] | None = None) -> int:
    global RUNNING
    RUNNING = True
    from clapforge.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
