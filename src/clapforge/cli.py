"""`clapforge <command>`: the command-line entry point."""

from __future__ import annotations

import argparse
import sys

from .commands import classify, convert, demo, embed, evaluate, export, index, prepare, push, search, synth, train

# In `clapforge --help` order. Each module has `register(subparsers)` and `run(args) -> int` (see commands/).
COMMANDS = [convert, prepare, synth, train, evaluate, embed, search, index, classify, export, push, demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clapforge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Under the console script `import clapforge` left this out so that parsing stayed light (clapforge_cli.py).
    from .auto_classes import register_auto_classes

    register_auto_classes()
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"clapforge {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
