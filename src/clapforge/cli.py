"""`clapforge <command>`: the command-line entry point."""

import argparse
import importlib
import sys

# Modules that add their own sub-command: each has `register(commands)` taking the sub-parsers object and setting
# `run=<function(args) -> int>` as the parser default. Imported only to build the parser, so keep their imports light.
COMMAND_MODULES = [
    "clapforge.data.prepare",
    "clapforge.data.synth",
    "clapforge.train",
    "clapforge.evaluation.cli",
    "clapforge.tools.cli",
    "clapforge.push",
    "clapforge.demo",
]


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    report = convert_checkpoint(args.src, args.dst, tokenizer=args.tokenizer, to=args.to)
    print(report.summary())
    print(f"wrote {args.dst}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clapforge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a LAION-CLAP .pt or a transformers ClapModel folder")
    convert.add_argument("src", help="LAION-CLAP .pt file, transformers ClapModel folder, or clapforge folder")
    convert.add_argument("dst", help="output folder (Hub-ready)")
    convert.add_argument("--tokenizer", help="tokenizer name or folder to save with the model (e.g. roberta-base)")
    convert.add_argument(
        "--to", choices=["clapforge", "transformers"], default="clapforge", help="output format (default: clapforge)"
    )
    convert.set_defaults(run=_convert)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"clapforge {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
