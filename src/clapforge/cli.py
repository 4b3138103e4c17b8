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
    """Parse, check the arguments (each command's `check(args)`, standard library only: an argument error answers
    before torch is imported), then run the command. Every expected failure ends in one line on stderr: a ValueError
    or FileNotFoundError (exit 2), or a network failure with the offline route (`hub.network_error_line`, exit 1)."""
    args = build_parser().parse_args(argv)
    from .hub import OFFLINE_ROUTE, PUSH_ROUTE, bounded_hub_retries, network_error_line

    try:
        if (check := getattr(args, "check", None)) is not None:
            check(args)
        # Under the console script `import clapforge` left this out so that parsing stayed light (clapforge_cli.py).
        from .auto_classes import register_auto_classes

        register_auto_classes()
        with bounded_hub_retries():
            return args.run(args)
    except Exception as error:
        line = network_error_line(error, route=PUSH_ROUTE if args.command == "push" else OFFLINE_ROUTE)
        if line is not None:
            print(f"clapforge {args.command}: error: {line}", file=sys.stderr)
            return 1
        if isinstance(error, (ValueError, FileNotFoundError)):
            print(f"clapforge {args.command}: error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
