"""`clapforge train --config RECIPE [dotted.key=value ...]`: train a CLAP from a recipe, in one process or many.

    accelerate launch -m clapforge.train --config recipes/NAME.yaml [dotted.key=value ...]

RECIPE is a YAML file, or the name of a recipe shipped with clapforge (`demo`, `test-tiny`, ...; the repository's
`recipes/` folder), so `--config recipes/demo.yaml` also works where that folder is absent, e.g. after `pip install`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..resources import RECIPES_DIR, recipe_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help=f"recipe YAML, or a shipped recipe: {', '.join(recipe_names())} (see recipes/)"
    )
    parser.add_argument("--resume", help="'latest' or a checkpoint folder")
    parser.add_argument("--push-to-hub", dest="push_to_hub", help="upload the final model folder to this repo id")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value recipe overrides, e.g. train.max_steps=100")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a CLAP from a recipe (one process; see accelerate launch)")
    add_arguments(parser)
    parser.set_defaults(run=run)


def resolve_config(config: str) -> str:
    """The recipe file: `config` itself when it exists, else the shipped recipe of that name (or file name)."""
    if Path(config).is_file():
        return config
    shipped = RECIPES_DIR / (Path(config).stem + ".yaml")
    if Path(config).suffix in ("", ".yaml") and shipped.is_file():
        print(f"clapforge train: {config} is not a file here; using the shipped recipe {shipped}", file=sys.stderr)
        return str(shipped)
    return config  # load_recipe names the missing file


def run(args: argparse.Namespace) -> int:
    from ..training.recipe import RecipeError, load_recipe
    from ..training.train import train
    from ._logging import configure_logging

    configure_logging()

    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"resume={args.resume}")
    if args.push_to_hub:
        overrides.append(f"push_to_hub={args.push_to_hub}")
    try:
        recipe = load_recipe(resolve_config(args.config), overrides)
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
    """`python -m clapforge.train` (what `accelerate launch -m clapforge.train` runs in each process)."""
    parser = argparse.ArgumentParser(
        prog="clapforge.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
