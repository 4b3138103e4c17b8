"""`clapforge convert SRC DST`: a LAION-CLAP .pt or a transformers ClapModel folder -> a Hub-ready clapforge folder.

`--to transformers` converts a clapforge folder back to transformers' `ClapModel`.
"""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("convert", help="convert a LAION-CLAP .pt or a transformers ClapModel folder")
    parser.add_argument("src", help="LAION-CLAP .pt file or transformers ClapModel folder (with --to transformers, "
                        "also a clapforge folder)")
    parser.add_argument("dst", help="output folder (Hub-ready)")
    parser.add_argument("--tokenizer", help="tokenizer name or folder to save with the model (e.g. roberta-base)")
    parser.add_argument(
        "--no-tokenizer",
        action="store_true",
        help="write the folder without a tokenizer: it embeds audio but not text (no zero-shot, no text search)",
    )
    parser.add_argument(
        "--to", choices=["clapforge", "transformers"], default="clapforge", help="output format (default: clapforge)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint

    report = convert_checkpoint(
        args.src, args.dst, tokenizer=args.tokenizer, to=args.to, no_tokenizer=args.no_tokenizer
    )
    print(report.summary())
    print(f"wrote {args.dst}")
    return 0
