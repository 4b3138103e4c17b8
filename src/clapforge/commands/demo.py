"""`clapforge demo` (= `make demo`): the main job on the built-in default, on a CPU, in under ten minutes.

Synthesises a corpus, trains the shipped demo recipe that fits the CPU on it (`recipes/demo.yaml` in bf16 where the CPU
has bf16 kernels, `recipes/demo-fp32.yaml` elsewhere) and evaluates the exported model on held-out phrasings
(`clapforge.demo` has the steps).
"""

from __future__ import annotations

import argparse

from ..demo import DEFAULT_CLIPS, DEFAULT_OUT
from ._types import positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="the main job on the built-in default: synthesise a corpus, train a small CLAP on the CPU, evaluate",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--clips", type=positive_int, default=DEFAULT_CLIPS,
                        help=f"corpus size when it is made (default {DEFAULT_CLIPS})")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--recipe", default=None, help="training recipe (default: recipes/demo.yaml where the CPU has "
                        "bf16 kernels, recipes/demo-fp32.yaml elsewhere)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads (default: the cores left free)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value recipe overrides, e.g. train.max_steps=100")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ._logging import configure_logging

    configure_logging()
    run_demo(
        args.out,
        clips=args.clips,
        seed=args.seed,
        recipe=args.recipe,
        overrides=args.overrides,
        threads=args.threads,
        resume=args.resume,
    )
    return 0
