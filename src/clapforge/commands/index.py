"""`clapforge index build TABLE [--exact]`: the ANN index of a LanceDB table written by `clapforge embed ... OUT.lance`.

Why a separate step: an index is worth building once a table is large (an exact scan of a few thousand rows takes
milliseconds) and after a large batch of new rows (rows added later are searched exactly until the next build).
"""

from __future__ import annotations

import argparse

from ._format import format_table


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("index", help="build or drop the ANN index of a LanceDB table (OUT.lance)")
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser(
        "build",
        help="build an IVF-RQ index sized for the table (partitions of ~4096 rows, 4 bits per dimension)",
        description="Tables under 1000 rows are left exact. Searches use the index unless `search --exact`.",
    )
    build.add_argument("table", help="OUT.lance written by `clapforge embed`")
    build.add_argument("--exact", action="store_true", help="no index: drop any existing one (searches scan exactly)")
    parser.set_defaults(run=run, uses_model=False)  # cli.main: no Auto classes, so no torch or transformers


def run(args: argparse.Namespace) -> int:
    from ..tools.table import build_index

    reports = build_index(args.table, exact=args.exact)
    rows = [(r["table"], r["rows"], r["action"], r.get("num_partitions", ""), f"{r['seconds']:.1f}") for r in reports]
    print(format_table(["table", "rows", "index", "partitions", "seconds"], rows))
    return 0
