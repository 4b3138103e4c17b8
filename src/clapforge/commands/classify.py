"""`clapforge classify MODEL FILES... --labels "dog,rain,siren"`: zero-shot label probabilities per audio file."""

from __future__ import annotations

import argparse
import sys

from ..prompts import DEFAULT_PROMPT, format_prompt
from ._backend import add_backend_arguments, describe_precision
from ._format import format_table
from ._types import positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("classify", help="zero-shot probabilities of labels for audio files")
    parser.add_argument("model", help="clapforge model folder or Hub id")
    parser.add_argument("files", nargs="+", help="audio files (or folders)")
    parser.add_argument("--labels", required=True, help="comma-separated labels, e.g. 'dog,rain,siren'")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="text template with {label}")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    add_backend_arguments(parser)
    parser.set_defaults(run=run, check=check)


def _labels(args: argparse.Namespace) -> list[str]:
    return [label.strip() for label in args.labels.split(",") if label.strip()]


def check(args: argparse.Namespace) -> None:
    """What the arguments alone tell (before torch is imported)."""
    from ..inference.references import resolve_model

    if not _labels(args):
        raise ValueError("--labels needs at least one label, e.g. --labels 'dog,rain,siren'")
    format_prompt(args.prompt, "dog")  # a template without {label} fails now, not after loading the model
    resolve_model(args.model)  # a mistyped path or a data file given as the model answers now


def run(args: argparse.Namespace) -> int:
    from ..inference.loading import load_engine
    from ..tools.api import classify
    from ..tools.embed_inputs import AudioItems, list_inputs

    check(args)
    labels = _labels(args)
    engine = load_engine(args.model, backend=args.backend, precision=args.precision)
    sr = engine.feature_extractor.sampling_rate
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
        probs = classify(audio, labels, engine, prompt=args.prompt, sampling_rate=sr, batch_size=args.batch_size)
        for name, p in zip(names, probs.tolist(), strict=True):
            rows.append([name, labels[max(range(len(labels)), key=p.__getitem__)], *p])
        print(format_table(["file", "best", *labels], rows))
        print(describe_precision(engine.choice), file=sys.stderr)  # stdout stays the table
    if errors:
        print(f"{len(errors)} file(s) could not be read and were skipped:")
        print(format_table(["file", "reason"], errors))
    return 0 if audio else 1
