"""`clapforge push MODEL_DIR REPO [--space SPACE_REPO] [--private]`: publish a model folder, optionally with a Space.

The Space is the demo app shipped with clapforge (`clapforge.push` has the details).
"""

from __future__ import annotations

import argparse

from ..push import DEFAULT_SPACE_DIR


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "push",
        help="upload a model folder to the Hub, optionally with a demo Space",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("model_dir", help="Hub-ready model folder (config.json, *.safetensors, code, README.md)")
    parser.add_argument("repo", help="model repo id, e.g. user/clap-small")
    parser.add_argument("--space", metavar="SPACE_REPO", help="also create or update this demo Space (user/name)")
    parser.add_argument("--private", action="store_true", help="create the repos as private")
    parser.add_argument("--space-dir", default=str(DEFAULT_SPACE_DIR), help="demo app folder (default: %(default)s)")
    parser.add_argument("--results", action="append", default=[], metavar="RESULTS_JSON",
                        help="add an evaluation to the card: a results JSON of `clapforge eval --out` (its "
                             "model-index, and mteb's result files for --benchmark); repeat for several")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..push import push

    urls = push(args.model_dir, args.repo, args.space, private=args.private, space_dir=args.space_dir,
                results=args.results)
    for kind, url in urls.items():
        print(f"{kind}: {url}")
    return 0
