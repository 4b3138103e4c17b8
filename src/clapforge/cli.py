"""`clapforge <command>`: the command-line entry point."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

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
    or FileNotFoundError (exit 2), or a network failure with the offline route (`hub_network.network_error_line`,
    exit 1).

    A command that loads no model (`index`) says so with `set_defaults(uses_model=False)`: it runs without the Auto
    classes and the Hub client's retry bounds, so neither torch nor transformers nor huggingface_hub is imported for
    it (a table's index is built with lancedb alone). `--quiet` (where a command has it) also silences the library
    progress bars, transformers' "Loading weights" among them, for the command's duration."""
    args = build_parser().parse_args(argv)
    from .hub_network import OFFLINE_ROUTE, PUSH_ROUTE, network_error_line

    try:
        if (check := getattr(args, "check", None)) is not None:
            check(args)
        if not getattr(args, "uses_model", True):
            return args.run(args)
        # Under the console script `import clapforge` left this out so that parsing stayed light (clapforge_cli.py).
        from .auto_classes import register_auto_classes
        from .hub_network import bounded_hub_retries

        register_auto_classes()
        with bounded_hub_retries(), _progress_bars(enabled=not getattr(args, "quiet", False)):
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


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Within the block, transformers' and huggingface_hub's progress bars ("Loading weights", downloads) are off
    unless `enabled`; as they were after it (a test or a library caller of `main` keeps its own setting)."""
    if enabled:
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    saved = are_progress_bars_disabled(), transformers_logging.is_progress_bar_enabled()
    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not saved[0]:
            enable_progress_bars()
        if saved[1]:
            transformers_logging.enable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
