"""`clapforge --help`, every sub-command's `--help` and argument errors answer without importing the heavy stack.

The installed console script is run in a subprocess with `PYTHONPROFILEIMPORTTIME=1`, so its stderr lists every
module the process imported; the assertions are on those modules, never on timings (those are in
benchmarks/RESULTS.md, "CLI start-up"). A command that does run still sees the Auto classes registered, and a plain
`import clapforge` still registers them on import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clapforge import cli

BIN = Path(sys.executable).parent
HEAVY = ("torch", "transformers", "numpy", "datasets", "huggingface_hub", "accelerate", "gradio", "onnx", "onnxruntime")
COMMANDS = ["convert", "prepare", "synth", "train", "eval", "embed", "search", "index", "classify", "export", "push",
            "demo"]


def run_console_script(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `clapforge ARGS`; returns the result and the top-level names of the modules the process imported."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(BIN / "clapforge"), *args], capture_output=True, text=True, env=env, timeout=120)
    # -X importtime lines: "import time: <self us> | <cumulative us> | <indentation><module name>"
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    return done, imported - {"imported package"}


def test_the_parser_knows_every_command():
    parser = cli.build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]
    assert list(actions[0].choices) == COMMANDS


def test_help_imports_neither_torch_nor_transformers():
    done, imported = run_console_script("--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: clapforge" in done.stdout and all(name in done.stdout for name in COMMANDS)
    assert "clapforge_cli" in imported  # the import list was captured at all
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_sub_command_help_is_light(command):
    done, imported = run_console_script(command, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"usage: clapforge {command}" in done.stdout
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed"], "the following arguments are required: model, input"),  # OUT is optional with --index DIR
        (["eval", "model", "--data", "x", "--task", "nope"], "argument --task: invalid choice"),
        (["nope"], "invalid choice"),
    ],
)
def test_argument_errors_are_light(args, message):
    done, imported = run_console_script(*args)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_a_running_command_has_the_auto_classes_registered(tmp_path):
    """Under the launcher, `clapforge/__init__` skips the registration and `cli.main` does it before the command."""
    script = """
        import sys
        import clapforge_cli
        code = clapforge_cli.main(["search", "missing.parquet", "a dog barking"])  # FileNotFoundError -> 2
        from transformers import AutoConfig
        print(code, type(AutoConfig.for_model("laion_clap")).__name__)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["2", "LaionClapConfig"]
    assert "clapforge search: error:" in done.stderr


def test_import_clapforge_alone_registers_the_auto_classes(tmp_path, tokenizer):
    """Outside the CLI, `import clapforge` registers on import: no trust_remote_code for a folder or a config."""
    import clapforge

    processor = clapforge.LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), tokenizer)
    processor.save_pretrained(tmp_path / "processor")
    script = """
        import sys
        import clapforge
        from transformers import AutoConfig, AutoModel, AutoProcessor
        config = clapforge.load_preset_config("test-tiny")
        print(type(AutoConfig.for_model("laion_clap")).__name__, type(AutoModel.from_config(config)).__name__,
              type(AutoProcessor.from_pretrained(sys.argv[1])).__name__)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(tmp_path / "processor")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["LaionClapConfig", "LaionClapModel", "LaionClapProcessor"]


def test_public_names_are_all_reachable():
    import clapforge

    assert sorted(clapforge.__all__) == sorted(clapforge._EXPORTS) and set(clapforge.__all__) <= set(dir(clapforge))
    for name in clapforge.__all__:
        assert getattr(clapforge, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        clapforge.no_such_name  # noqa: B018


def test_python_m_clapforge_train_still_parses(capsys):
    """`accelerate launch -m clapforge.train --config ...` (README): the module keeps its own parser."""
    from clapforge import train as train_module

    with pytest.raises(SystemExit) as exit_info:
        train_module.main(["--help"])
    assert exit_info.value.code == 0 and "usage: clapforge.train" in capsys.readouterr().out


def test_constants_restated_for_a_light_parser_match_the_library():
    from clapforge.commands import prepare
    from clapforge.data.prepare_inputs import DEFAULT_CAPTION_FILES

    assert prepare.DEFAULT_CAPTION_FILES == DEFAULT_CAPTION_FILES
