"""`clapforge eval MODEL --task NAME --data PATH`: a benchmark as the paper reports it.

The protocols are in `clapforge.evaluation.tasks`; tasks and the layouts they read are described in
`clapforge.data.benchmark_sets`. Prints the paper-style table; `--out results.json` also writes `results.md` and
`results.model-index.yaml` beside it.
"""

from __future__ import annotations

import argparse
import os
import sys

TASK_CHOICES = ("esc50", "urbansound8k", "us8k", "zero-shot", "audiocaps", "clotho")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="clapforge model folder or Hub id")
    parser.add_argument(
        "--task",
        required=True,
        choices=TASK_CHOICES,
        help="esc50, urbansound8k (us8k), zero-shot (any datasets source with a label column), audiocaps, clotho",
    )
    parser.add_argument("--data", required=True, help="the benchmark's local folder, CSV, or datasets source")
    parser.add_argument(
        "--fold",
        type=int,
        help="evaluate one fold only (esc50 1-5, urbansound8k 1-10, or a "
        "datasets source's `fold` column); default: every clip",
    )
    parser.add_argument(
        "--split",
        help="audiocaps: test (default), val, train; clotho: evaluation (default), "
        "validation, development; zero-shot: the datasets split (default test)",
    )
    parser.add_argument("--audio-dir", help="audiocaps/clotho: the audio folder, if not the default places")
    parser.add_argument(
        "--prompt",
        action="append",
        dest="prompts",
        metavar="TEMPLATE",
        help="zero-shot prompt template with {label}; repeat to average several (prompt "
        "ensembling). Default: 'This is a sound of {label}.'",
    )
    parser.add_argument("--label-column", default="label", help="zero-shot: the label column (default label)")
    parser.add_argument("--audio-column", default="audio", help="zero-shot: the audio column (default audio)")
    parser.add_argument(
        "--map-variant",
        choices=("sorted", "laion"),
        default="sorted",
        help="audio->text mAP@10: sorted (correct average precision, default) or laion (the value "
        "LAION-CLAP's code publishes: caption ranks left unsorted)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--num-workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="DataLoader workers decoding audio (default min(4, CPUs); 0 decodes in this process)",
    )
    parser.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    parser.add_argument("--model-name", help="the model's name in tables and the model-index (default: MODEL)")
    parser.add_argument("--out", help="write results JSON here, plus <stem>.md and <stem>.model-index.yaml")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="zero-shot classification or audio-text retrieval benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.benchmark_sets import load_benchmark
    from ..evaluation.tasks import markdown_table, run_benchmark, write_results
    from ..inference.loading import load_model, tokenizer_of
    from ..inference.prompts import DEFAULT_PROMPT, format_prompt

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.prompts and args.task not in ("esc50", "urbansound8k", "us8k", "zero-shot"):
        raise ValueError("--prompt applies to zero-shot tasks only")
    for template in args.prompts or []:
        format_prompt(template, "dog")  # a template without a placeholder fails now, not after embedding the audio
    benchmark = load_benchmark(
        args.task,
        args.data,
        fold=args.fold,
        split=args.split,
        audio_dir=args.audio_dir,
        label_column=args.label_column,
        audio_column=args.audio_column,
    )
    model, processor = load_model(args.model, args.device)
    processor = tokenizer_of(processor)  # every task embeds text (prompts or captions)
    local = os.path.isdir(args.model)
    name = args.model_name or (os.path.basename(os.path.abspath(args.model)) if local else args.model)
    results = run_benchmark(
        model,
        processor,
        benchmark,
        model_name=name,
        prompts=args.prompts or [DEFAULT_PROMPT],
        a2t_map=args.map_variant,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    results["model_path"] = os.path.abspath(args.model) if local else args.model
    print(markdown_table(results), end="")
    if results["skipped"]:
        print(
            f"{len(results['skipped'])} clips skipped (first: {results['skipped'][0]['key']}: "
            f"{results['skipped'][0]['reason']})",
            file=sys.stderr,
        )
    if args.out:
        paths = write_results(results, args.out)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
