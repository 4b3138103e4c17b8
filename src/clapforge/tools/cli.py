"""`clapforge embed`, `clapforge search`, `clapforge classify`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

DEFAULT_PROMPT = "This is a sound of {label}."  # = clapforge.evaluation.evaluate.DEFAULT_PROMPT, kept import-light


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: columns padded to their widest cell, numbers right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[c]) for row in cells]) for c, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(row[c], int | float) for row in rows) for c in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(row) for row in cells]).rstrip()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _seconds(value: float) -> str:
    minutes, seconds = divmod(value, 60)
    return f"{int(minutes)}:{seconds:05.2f}"


def run_embed(args: argparse.Namespace) -> int:
    from .embed import embed_files

    report = embed_files(
        args.model, args.input, args.out, batch_size=args.batch_size, num_workers=args.num_workers,
        window=args.window, part_size=args.part_size, dataset=args.dataset, audio_column=args.audio_column,
        split=args.split, key_column=args.key_column, overwrite=args.overwrite, progress=not args.quiet,
        precision=args.precision, compile=args.compile,
    )
    if not report.main_process:
        return 0
    if report.up_to_date:
        print(f"{args.out} is up to date ({report.embedded} embeddings); --overwrite to redo it")
    else:
        print(f"wrote {args.out}: {report.embedded} embeddings")
    if report.errors:
        print(f"{len(report.errors)} input(s) could not be read and were skipped "
              f"(listed in {args.out}.errors.json):")
        print(format_table(["key", "reason"], [(e["key"], e["reason"]) for e in report.errors]))
    return 0


def run_search(args: argparse.Namespace) -> int:
    from .api import search

    if (args.query is None) == (args.audio is None):
        raise ValueError("give a text query or --audio FILE (one of them)")
    results = search(args.index, text=args.query, audio=args.audio, model=args.model, top_k=args.top_k,
                     windows=args.windows)
    if args.windows:
        rows = [(r["rank"], r["score"], r["key"], _seconds(r["start"]), _seconds(r["end"])) for r in results]
        print(format_table(["rank", "score", "key", "start", "end"], rows))
    else:
        print(format_table(["rank", "score", "key"], [(r["rank"], r["score"], r["key"]) for r in results]))
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from .api import classify, load_model
    from .embed import AudioItems, list_inputs

    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if not labels:
        raise ValueError("--labels needs at least one label, e.g. --labels 'dog,rain,siren'")
    loaded = load_model(args.model)
    sr = getattr(loaded[1], "feature_extractor", loaded[1]).sampling_rate
    audio, names, errors = [], [], []
    for name in args.files:
        items, _ = list_inputs(name)
        for item in items:
            item, clip = AudioItems([item], None, sr)[0]
            key = name if len(items) == 1 else f"{name}/{item.key}"
            if isinstance(clip, str):
                errors.append((key, clip))
            else:
                audio.append(clip)
                names.append(key)
    rows = []
    if audio:
        probs = classify(audio, labels, loaded, prompt=args.prompt, sampling_rate=sr, batch_size=args.batch_size)
        for name, p in zip(names, probs.tolist(), strict=True):
            rows.append([name, labels[max(range(len(labels)), key=p.__getitem__)], *p])
        print(format_table(["file", "best", *labels], rows))
    if errors:
        print(f"{len(errors)} file(s) could not be read and were skipped:")
        print(format_table(["file", "reason"], errors))
    return 0 if audio else 1


def register(commands: argparse._SubParsersAction) -> None:
    embed = commands.add_parser(
        "embed", help="embed audio files (a folder, a file list or a datasets source) into a parquet/safetensors file",
        description="Resumable (a rerun skips finished parts) and splits the work under `accelerate launch`.")
    embed.add_argument("model", help="clapforge model folder or Hub id")
    embed.add_argument("input", help="folder (recursive), .txt/.lst file of paths, audio file, or with --dataset a "
                                     "datasets source (parquet file, local folder, Hub id)")
    embed.add_argument("out", help="output .parquet or .safetensors")
    embed.add_argument("--batch-size", type=int, default=16)
    embed.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding (default 2)")
    embed.add_argument("--window", action="store_true",
                       help="also embed consecutive 10 s windows of each file (for `search --windows`)")
    embed.add_argument("--part-size", type=int, default=256, help="inputs per part file (the unit of resuming)")
    embed.add_argument("--dataset", action="store_true", help="INPUT is a datasets source")
    embed.add_argument("--audio-column", default="audio")
    embed.add_argument("--split", default="train")
    embed.add_argument("--key-column", help="dataset column naming each row (default: file name#row)")
    embed.add_argument("--overwrite", action="store_true", help="discard earlier parts and output and start again")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                       help="bf16 autocasts the model: ~2x faster on CPUs with AVX-512 BF16 or AMX and on GPUs "
                       "(default fp32)")
    embed.add_argument("--compile", action="store_true",
                       help="torch.compile the audio tower: tens of seconds to start, ~20%% faster per file after "
                       "(for long jobs)")
    embed.set_defaults(run=run_embed)

    search = commands.add_parser("search", help="nearest neighbours of a text or audio query in an embeddings file")
    search.add_argument("index", help=".parquet or .safetensors written by `clapforge embed`")
    search.add_argument("query", nargs="?", help="text query")
    search.add_argument("--audio", help="audio file query instead of text")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--model", help="model folder or Hub id (default: the one the index was made with)")
    search.add_argument("--windows", action="store_true",
                        help="rank files by their best 10 s window and say where it is (index made with --window)")
    search.set_defaults(run=run_search)

    classify = commands.add_parser("classify", help="zero-shot probabilities of labels for audio files")
    classify.add_argument("model", help="clapforge model folder or Hub id")
    classify.add_argument("files", nargs="+", help="audio files (or folders)")
    classify.add_argument("--labels", required=True, help="comma-separated labels, e.g. 'dog,rain,siren'")
    classify.add_argument("--prompt", default=DEFAULT_PROMPT, help="text template with {label}")
    classify.add_argument("--batch-size", type=int, default=16)
    classify.set_defaults(run=run_classify)
