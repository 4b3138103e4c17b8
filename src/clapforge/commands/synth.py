"""`clapforge synth OUT --clips N --seed S`: the built-in synthetic corpus (see `clapforge.data.synth`)."""

from __future__ import annotations

import argparse

from ._types import fraction, positive_float, positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "synth",
        help="generate the built-in synthetic audio-caption corpus as shards",
        description="The built-in synthetic corpus: `clapforge synth OUT --clips N --seed S`.",
    )
    parser.add_argument("out", help="output folder (train/, validation/, test/, manifest.json, labels.json)")
    parser.add_argument("--clips", type=positive_int, default=2000,
                        help="number of clips over all splits (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--validation-fraction", type=fraction, default=0.1, help="share of validation clips")
    parser.add_argument("--test-fraction", type=fraction, default=0.1, help="share of held-out-phrasing test clips")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="worker processes (default: CPU count, up to 8)")
    parser.add_argument("--shard-mb", type=positive_float, default=64.0, help="target shard size in MiB (default 64)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing corpus in OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.synth import synthesize_corpus

    manifest = synthesize_corpus(
        args.out,
        args.clips,
        args.seed,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        workers=args.workers,
        shard_bytes=int(args.shard_mb * 2**20),
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for split, info in manifest["splits"].items():
        print(f"{split:>10}: {info['clips']} clips, {info['hours']:.3f} h ({info['phrasing']} phrasings)")
    print(f"wrote {args.out}: {manifest['clips']} clips, {manifest['hours']:.3f} h, {len(manifest['classes'])} classes")
    return 0
