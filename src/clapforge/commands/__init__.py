"""The `clapforge` sub-commands: one module each, with `register(subparsers)` and `run(args) -> int`.

`register` adds the command's parser and sets `run` as its default; `clapforge.cli.main` parses, registers the Auto
classes, calls `run` and turns ValueError/FileNotFoundError into `clapforge <command>: error: ...` (exit 2).

These modules are imported to build the parser, so `clapforge --help` and argument errors cost what they import:
at module level they import only the standard library and clapforge modules that do the same (`resources`, `demo`,
`push`, `prompts`); torch, transformers and the library code are imported inside `run`
(tests/test_cli_startup.py checks it). A new command is a module here plus a line in `clapforge.cli.COMMANDS`.
"""
