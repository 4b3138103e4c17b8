"""`clapforge prepare SRC OUT`: audio files or any `datasets` source -> LAION-Audio-630K-style shards.

Output: OUT/<split>/shard-NNNNN.tar (48 kHz mono 16-bit FLAC + json per sample), OUT/<split>/sizes.json and
OUT/manifest.json (clips, hours, skipped sources with reasons).

Resumable: a rerun after a kill continues from the last finished shard, and its shards are identical to an
uninterrupted run's; each distinct audio is written once (see `clapforge.data.prepare`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._types import positive_float, positive_int

# = clapforge.data.prepare.DEFAULT_CAPTION_FILES, restated so that `--help` does not import numpy (a test compares)
DEFAULT_CAPTION_FILES = ["metadata.csv", "metadata.jsonl", "captions.csv", "captions.jsonl"]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "prepare",
        help="audio files + captions, or a `datasets` source -> 48 kHz FLAC shards",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "src",
        help="folder of audio files (searched recursively), or with --dataset any `datasets` "
        "source: a local folder, parquet file(s)/glob, or a Hub id",
    )
    parser.add_argument("out", help="output folder (shards go to OUT/<split>/)")
    parser.add_argument(
        "--captions",
        help=f"CSV/TSV/JSONL captions table (default: the first of {', '.join(DEFAULT_CAPTION_FILES)} in SRC)",
    )
    parser.add_argument("--file-column", default="file_name", help="table column with paths relative to SRC")
    parser.add_argument(
        "--caption-column",
        default="caption",
        help="caption column: a string or a JSON list; repeated rows add captions",
    )
    parser.add_argument("--label-column", default="labels", help="label column: comma-separated or a list")
    parser.add_argument("--dataset", action="store_true", help="SRC is a `datasets` source, not a folder of files")
    parser.add_argument("--audio-column", default="audio", help="audio column of a --dataset source")
    parser.add_argument("--dataset-config", help="configuration name of a --dataset source")
    parser.add_argument("--dataset-split", default="train", help="split of the --dataset source to read")
    parser.add_argument("--split", default="train", help="split to write under OUT (train, validation, test)")
    parser.add_argument("--shard-size", type=positive_float, default=64, help="target shard size in MB (default 64)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count(),
                        help="decoding processes (default: all CPUs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.prepare import prepare

    manifest = prepare(
        args.src,
        args.out,
        captions=args.captions,
        file_column=args.file_column,
        caption_column=args.caption_column,
        label_column=args.label_column,
        dataset=args.dataset,
        audio_column=args.audio_column,
        dataset_config=args.dataset_config,
        dataset_split=args.dataset_split,
        split=args.split,
        shard_size_mb=args.shard_size,
        workers=args.workers,
        progress=not args.no_progress,
    )
    split = manifest["splits"][args.split]
    skipped = [entry for entry in manifest["skipped"] if entry.get("split") == args.split]
    print(
        f"wrote {split['clips']} clips ({split['hours']:.3f} h) in {split['shards']} shards to "
        f"{Path(args.out) / args.split}; skipped {len(skipped)} (see {Path(args.out) / 'manifest.json'})"
    )
    return 0
