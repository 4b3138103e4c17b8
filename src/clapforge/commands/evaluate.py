"""`clapforge eval MODEL --task NAME --data PATH`: a benchmark as the paper reports it.
`clapforge eval MODEL --benchmark NAME`: an MTEB / MAEB benchmark or task list, run by mteb.

--task: the protocols are in `clapforge.evaluation.tasks`; tasks and the layouts they read are described in
`clapforge.data.benchmark_sets`. Prints the paper-style table; `--out results.json` also writes `results.md` and
`results.model-index.yaml` beside it.

--benchmark: a named mteb benchmark ("MAEB"), a comma-separated list of mteb task names
("ESC50_Zeroshot,ClothoT2ARetrieval"), or "synthetic" with `--data CORPUS`: zero-shot classification and
text-to-audio retrieval on a split of a `clapforge synth` corpus, offline (`clapforge.evaluation.mteb_bridge`). mteb
runs the model through its sentence-transformers wrapper; its result files go to `--results-dir`, by default
`<out stem>_mteb/` beside `--out` (without `--out`: mteb's cache, $MTEB_CACHE or ~/.cache/mteb). `--out results.json`
writes the summary, `results.md` and `results.model-index.yaml` (one entry per mteb task) beside it.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..prompts import format_prompt
from ._types import non_negative_int, positive_int

TASK_CHOICES = ("esc50", "urbansound8k", "us8k", "zero-shot", "audiocaps", "clotho")
SYNTHETIC = "synthetic"  # = evaluation.mteb_tasks.SYNTHETIC, restated: checking the arguments imports no torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="clapforge model folder or Hub id")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--task",
        choices=TASK_CHOICES,
        help="esc50, urbansound8k (us8k), zero-shot (any datasets source with a label column), audiocaps, clotho",
    )
    which.add_argument(
        "--benchmark",
        metavar="NAME",
        help="run mteb instead: a benchmark (MAEB), comma-separated mteb task names, or 'synthetic' (needs --data)",
    )
    parser.add_argument("--data", help="the benchmark's local folder, CSV, or datasets source; with --benchmark "
                        "synthetic, a `clapforge synth` corpus folder")
    parser.add_argument(
        "--fold",
        type=positive_int,
        help="evaluate one fold only (esc50 1-5, urbansound8k 1-10, or a "
        "datasets source's `fold` column); default: every clip",
    )
    parser.add_argument(
        "--split",
        help="audiocaps: test (default), val, train; clotho: evaluation (default), "
        "validation, development; zero-shot and --benchmark synthetic: the split (default test)",
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
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=min(4, os.cpu_count() or 1),
        help="DataLoader workers decoding audio (default min(4, CPUs); 0 decodes in this process)",
    )
    parser.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "auto", "bf16", "int8"],
        default="fp32",
        help="fp32 (default: scores comparable across machines, as the paper reports them); auto, bf16 or int8 "
        "as for `clapforge embed` (within cosine 0.999 of fp32, faster)",
    )
    parser.add_argument("--model-name", help="the model's name in tables and the model-index (default: MODEL)")
    parser.add_argument("--out", help="write results JSON here, plus <stem>.md and <stem>.model-index.yaml")
    parser.add_argument("--results-dir", help="--benchmark: where mteb writes its result files (default "
                        "<out stem>_mteb/ beside --out, else mteb's cache)")
    parser.add_argument("--overwrite", action="store_true", help="--benchmark: run mteb tasks again even when their "
                        "results are in the results directory (local tasks always run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="zero-shot classification or audio-text retrieval benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(run=run, check=check)


def check(args: argparse.Namespace) -> None:
    """What the arguments alone tell (before torch is imported)."""
    from ..inference.references import resolve_model

    resolve_model(args.model)  # a mistyped path or a data file given as the model answers now
    if args.benchmark is not None:
        return _check_mteb(args)
    if args.data is None:
        raise ValueError(f"--task {args.task} needs --data: the benchmark's folder, CSV or datasets source")
    if args.results_dir or args.overwrite:
        raise ValueError("--results-dir and --overwrite apply to --benchmark only")
    if args.prompts and args.task not in ("esc50", "urbansound8k", "us8k", "zero-shot"):
        raise ValueError("--prompt applies to zero-shot tasks only")
    for template in args.prompts or []:
        format_prompt(template, "dog")  # a template without a placeholder fails now, not after embedding the audio


def run(args: argparse.Namespace) -> int:
    check(args)
    if args.benchmark is not None:
        return run_mteb_benchmark(args)
    from ..data.benchmark_sets import load_benchmark
    from ..evaluation.tasks import markdown_table, run_benchmark, write_results
    from ..inference.loading import load_engine, tokenizer_of
    from ..prompts import DEFAULT_PROMPT

    benchmark = load_benchmark(
        args.task,
        args.data,
        fold=args.fold,
        split=args.split,
        audio_dir=args.audio_dir,
        label_column=args.label_column,
        audio_column=args.audio_column,
    )
    engine = load_engine(args.model, args.device, precision=args.precision)
    tokenizer_of(engine.processor)  # every task embeds text (prompts or captions): no tokenizer fails now
    local = os.path.isdir(args.model)
    name = args.model_name or (os.path.basename(os.path.abspath(args.model)) if local else args.model)
    results = run_benchmark(
        engine,
        None,
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


def _check_mteb(args: argparse.Namespace) -> None:
    synthetic = args.benchmark.strip().lower() == SYNTHETIC
    for flag, given in (("--fold", args.fold is not None), ("--audio-dir", args.audio_dir is not None),
                        ("--map-variant", args.map_variant != "sorted")):
        if given:
            raise ValueError(f"{flag} applies to --task only")
    if not synthetic:
        for flag, given in (("--data", args.data is not None), ("--prompt", bool(args.prompts)),
                            ("--split", args.split is not None)):
            if given:
                raise ValueError(f"{flag} applies to --task or --benchmark {SYNTHETIC} only: mteb's own tasks bring "
                                 "their data, splits and label texts")
    elif args.data is None:
        raise ValueError(f"--benchmark {SYNTHETIC} needs --data: a `clapforge synth` corpus folder")
    if args.prompts and len(args.prompts) > 1:
        raise ValueError("--benchmark takes one --prompt: an mteb zero-shot task has one text per class")
    for template in args.prompts or []:
        format_prompt(template, "dog")  # a template without a placeholder fails now, not after loading the model


def run_mteb_benchmark(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluation.mteb_bridge import markdown_summary, run_mteb, write_mteb_results
    from ..prompts import DEFAULT_PROMPT

    _check_mteb(args)
    prompts = args.prompts or [DEFAULT_PROMPT]
    results_dir = args.results_dir
    if results_dir is None and args.out:
        out = Path(args.out)
        results_dir = out.with_name(f"{out.stem}_mteb")
    summary = run_mteb(
        args.model,
        args.benchmark,
        results_dir,
        batch_size=args.batch_size,
        data=args.data,
        split=args.split or "test",
        prompt=prompts[0],
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    local = os.path.isdir(args.model)
    summary["model_name"] = args.model_name or (os.path.basename(os.path.abspath(args.model)) if local else args.model)
    print(markdown_summary(summary), end="")
    print(f"mteb result files: {summary['results_dir']}")
    if args.out:
        paths = write_mteb_results(summary, args.out, summary["model_name"])
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
