"""`clapforge search INDEX "query"` (or `--audio FILE`): nearest neighbours in an embeddings file or a LanceDB table."""

from __future__ import annotations

import argparse

from ._backend import add_backend_arguments
from ._format import format_seconds, format_table
from ._types import positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("search", help="nearest neighbours of a text or audio query in an embeddings file")
    parser.add_argument("index", help=".parquet, .safetensors or .lance table written by `clapforge embed`")
    parser.add_argument("query", nargs="?", help="text query")
    parser.add_argument("--audio", help="audio file query instead of text")
    parser.add_argument("--top-k", type=positive_int, default=10, help="results to show (default 10)")
    parser.add_argument("--model", help="model folder or Hub id (default: the one the index was made with)")
    parser.add_argument(
        "--allow-other-model",
        action="store_true",
        help="rank with --model even if its weights are not those the index was made with (scores of two models "
        "are not comparable: refused without this flag)",
    )
    parser.add_argument(
        "--windows",
        action="store_true",
        help="rank files by their best 10 s window and say where it is (index made with --window)",
    )
    parser.add_argument(
        "--where",
        help="tables only: a LanceDB SQL filter applied before the top k, "
        "e.g. \"duration > 5\" or \"key LIKE 'dogs/%%'\"",
    )
    parser.add_argument(
        "--exact", action="store_true", help="tables only: scan every row even if the table has an ANN index"
    )
    add_backend_arguments(parser)
    parser.set_defaults(run=run, check=check)


def check(args: argparse.Namespace) -> None:
    """What the arguments alone tell (before torch is imported)."""
    from ..inference.references import resolve_model
    from ..tools.table import check_location, is_table

    if (args.query is None) == (args.audio is None):
        raise ValueError("give a text query or --audio FILE (one of them)")
    if is_table(args.index):
        check_location(args.index)  # a missing table or a file in the way answers now, and nothing is created
    if args.model is not None:
        resolve_model(args.model)


def run(args: argparse.Namespace) -> int:
    from ..tools.api import search

    check(args)
    results = search(
        args.index, text=args.query, audio=args.audio, model=args.model, top_k=args.top_k, windows=args.windows,
        where=args.where, exact=args.exact, backend=args.backend, precision=args.precision,
        allow_other_model=args.allow_other_model,
    )
    if args.windows:
        rows = [
            (r["rank"], r["score"], r["key"], format_seconds(r["start"]), format_seconds(r["end"])) for r in results
        ]
        print(format_table(["rank", "score", "key", "start", "end"], rows))
    else:
        print(format_table(["rank", "score", "key"], [(r["rank"], r["score"], r["key"]) for r in results]))
    return 0
