"""`accelerate launch -m clapforge.train --config recipes/NAME.yaml [dotted.key=value ...]`."""

import argparse
import logging
import sys

from .training.recipe import RecipeError, load_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="recipe YAML (see recipes/)")
    parser.add_argument("--resume", help="'latest' or a checkpoint folder")
    parser.add_argument("--push-to-hub", dest="push_to_hub", help="upload the final model folder to this repo id")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value recipe overrides, e.g. train.max_steps=100")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a CLAP from a recipe (one process; see accelerate launch)")
    add_arguments(parser)
    parser.set_defaults(run=run)


def configure_logging() -> None:
    """INFO for clapforge (validation metrics, resume positions), warnings only from the libraries."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("accelerate", "datasets", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    from .training.train import train

    configure_logging()

    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"resume={args.resume}")
    if args.push_to_hub:
        overrides.append(f"push_to_hub={args.push_to_hub}")
    try:
        recipe = load_recipe(args.config, overrides)
    except RecipeError as error:
        print(f"clapforge train: bad recipe: {error}", file=sys.stderr)
        return 2
    try:
        train(recipe)
    except RecipeError as error:  # found while loading weights or data, before the first step
        print(f"clapforge train: bad recipe: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clapforge.train", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
