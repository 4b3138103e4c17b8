"""`clapforge embed MODEL INPUT OUT`: audio files (a folder, a file list or a `datasets` source) -> an embeddings file.

Resumable (a rerun skips finished parts) and splits the work under `accelerate launch`.
"""

from __future__ import annotations

import argparse

from ._backend import add_backend_arguments, describe_precision
from ._format import format_table
from ._types import non_negative_int, positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "embed",
        help="embed audio files (a folder, a file list or a datasets source) into a parquet/safetensors file or a "
        "LanceDB table (.lance)",
        description="Resumable (a rerun skips finished parts) and splits the work under `accelerate launch`.",
    )
    parser.add_argument("model", help="clapforge model folder or Hub id")
    parser.add_argument(
        "input",
        help="folder (recursive), .txt/.lst file of paths, audio file, or with --dataset a "
        "datasets source (parquet file, local folder, Hub id)",
    )
    parser.add_argument(
        "out",
        nargs="?",
        help="output .parquet or .safetensors, or a LanceDB table OUT.lance (local or object storage), updated "
        "incrementally: a rerun embeds only new or changed files and drops the rows of deleted ones",
    )
    parser.add_argument(
        "--index",
        metavar="DIR",
        help="write the LanceDB table into DIR (a folder or an object-storage URI of any name) instead of OUT; "
        "`search DIR` and `index build DIR` read it",
    )
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--num-workers", type=non_negative_int, default=2,
                        help="DataLoader workers decoding (default 2)")
    parser.add_argument(
        "--window",
        action="store_true",
        help="also embed consecutive 10 s windows of each file (for `search --windows`)",
    )
    parser.add_argument("--part-size", type=positive_int, default=256,
                        help="inputs per part file (the unit of resuming)")
    parser.add_argument("--dataset", action="store_true", help="INPUT is a datasets source")
    parser.add_argument("--audio-column", default="audio")
    parser.add_argument("--split", default="train")
    parser.add_argument("--key-column", help="dataset column naming each row (default: file name#row)")
    parser.add_argument("--overwrite", action="store_true", help="discard earlier parts and output and start again")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_backend_arguments(parser)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the audio tower: tens of seconds to start, ~20%% faster per file after (for long jobs)",
    )
    parser.set_defaults(run=run, check=check)


def check(args: argparse.Namespace) -> None:
    """What the arguments alone tell (before torch is imported)."""
    from ..inference.references import resolve_model

    if (args.out is None) == (args.index is None):
        raise ValueError("give exactly one output: OUT, or --index DIR")
    resolve_model(args.model)  # a mistyped path or a data file given as the model answers now


def run(args: argparse.Namespace) -> int:
    from ..tools.embed import embed_files

    check(args)
    out = args.out or args.index
    report = embed_files(
        args.model,
        args.input,
        out,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        window=args.window,
        part_size=args.part_size,
        dataset=args.dataset,
        audio_column=args.audio_column,
        split=args.split,
        key_column=args.key_column,
        overwrite=args.overwrite,
        progress=not args.quiet,
        precision=args.precision,
        compile=args.compile,
        table=args.index is not None,
        backend=args.backend,
    )
    if not report.main_process:
        return 0
    if report.precision is not None:
        print(describe_precision(report.precision))
    if report.up_to_date:
        print(f"{out} is up to date ({report.embedded} embeddings); --overwrite to redo it")
    elif report.removed or args.index or out.rstrip("/").endswith(".lance"):
        print(f"wrote {out}: {report.embedded} embeddings ({report.computed} input(s) read by this run, "
              f"{report.removed} removed)")
    else:
        print(f"wrote {out}: {report.embedded} embeddings")
    if report.errors:
        print(f"{len(report.errors)} input(s) could not be read and were skipped (listed in {out}.errors.json):")
        print(format_table(["key", "reason"], [(e["key"], e["reason"]) for e in report.errors]))
    if report.errors and not report.embedded:
        raise ValueError(f"no audio in {args.input}: none of its {len(report.errors)} input(s) could be decoded "
                         "(listed above)")
    return 0
