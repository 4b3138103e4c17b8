"""The table doors of issue 24: `.lance` paths that are missing, a file, or a folder of other files; a query model
other than the index's; `index build` without torch or transformers; `--quiet` without "Loading weights".

The console script runs in subprocesses where what the process imported matters (PYTHONPROFILEIMPORTTIME lists it);
the rest calls `clapforge.cli.main` in this process. Seconds are never asserted (benchmarks/RESULTS.md, "CLI
start-up").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clapforge.cli import main as cli_main
from clapforge.tools import api
from conftest import save_tiny_model, write_wav

BIN = Path(sys.executable).parent
HEAVY = {"torch", "transformers"}


def run_console_script(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str], list[str]]:
    """(result, top-level modules imported, stderr lines but the import list) of `clapforge ARGS`."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(BIN / "clapforge"), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    return done, imported, errors


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two tiny models of other weights (`model`, `other`), a copy of `model` elsewhere (`copy`: same weights), a few
    clips, and `model`'s embeddings as a file and as a table."""
    root = tmp_path_factory.mktemp("doors_tables")
    save_tiny_model(root / "model", seed=1)
    save_tiny_model(root / "other", seed=2)
    shutil.copytree(root / "model", root / "copy")
    for i in range(3):
        write_wav(root / "audio" / f"{i}.wav", seed=i, seconds=0.5)
    for out in ("idx.parquet", "idx.lance"):
        assert cli_main(["embed", str(root / "model"), str(root / "audio"), str(root / out), "--quiet",
                         "--num-workers", "0", "--precision", "fp32"]) == 0
    return root


# ------------------------------------------------------------------------------------------------ .lance paths


def test_a_missing_table_is_reported_and_nothing_is_created(work, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done, imported, errors = run_console_script("search", "nothere.lance", "a dog", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert errors == ["clapforge search: error: nothere.lance is not a clapforge table: no such table (make it with "
                      "`clapforge embed MODEL INPUT OUT.lance`)"]
    assert not (tmp_path / "nothere.lance").exists()
    assert not imported & HEAVY, sorted(imported & HEAVY)  # answered from the command line alone
    for command in (["index", "build", "nothere.lance"], ["search", "nothere.lance", "a dog"]):
        assert cli_main([*command]) == 2
        assert not (tmp_path / "nothere.lance").exists()
    with pytest.raises(FileNotFoundError, match="no such table"):
        api.search(tmp_path / "gone.lance", text="a dog", model=work / "model")
    assert not (tmp_path / "gone.lance").exists()


def test_a_file_named_like_a_table_is_an_error_naming_it(work, tmp_path, capsys):
    (tmp_path / "x.lance").write_text("not a table")
    assert cli_main(["search", str(tmp_path / "x.lance"), "a dog"]) == 2
    assert cli_main(["index", "build", str(tmp_path / "x.lance")]) == 2
    assert cli_main(["embed", str(work / "model"), str(work / "audio"), str(tmp_path / "x.lance"), "--quiet",
                     "--num-workers", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(f"{tmp_path / 'x.lance'} is a file, not a table" in line for line in lines), lines
    assert (tmp_path / "x.lance").read_text() == "not a table"


def test_a_folder_of_other_files_is_not_written_into(work, tmp_path, capsys):
    out = tmp_path / "out.lance"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        code = cli_main(["embed", str(work / "model"), str(work / "audio"), str(out), "--quiet", "--num-workers", "0",
                         *extra])
        assert code == 2
        err = capsys.readouterr().err
        assert f"{out} is a folder holding other files (notes.txt), not a clapforge table" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_an_empty_folder_and_an_existing_table_still_take_a_table(work, tmp_path):
    """The refusals above do not catch the ordinary cases: a new empty folder, and a rerun into a table."""
    out = tmp_path / "empty.lance"
    out.mkdir()
    args = ["embed", str(work / "model"), str(work / "audio"), str(out), "--quiet", "--num-workers", "0",
            "--precision", "fp32"]
    assert cli_main(args) == 0 and cli_main(args) == 0
    assert (out / "files.lance").is_dir()


# ------------------------------------------------------------------------------------------ the query's model


@pytest.mark.parametrize("index", ["idx.parquet", "idx.lance"])
def test_another_models_query_is_refused_naming_both(work, index, capsys):
    assert cli_main(["search", str(work / index), "dog", "--model", str(work / "other"), "--precision", "fp32"]) == 2
    err = "\n".join(line for line in capsys.readouterr().err.splitlines() if line and "Loading weights" not in line)
    assert len(err.splitlines()) == 1 and err.startswith("clapforge search: error: "), err
    assert str((work / "model").resolve()) in err and str(work / "other") in err and "--allow-other-model" in err, err

    assert cli_main(["search", str(work / index), "dog", "--model", str(work / "other"), "--allow-other-model",
                     "--precision", "fp32"]) == 0
    assert "rank" in capsys.readouterr().out

    with pytest.raises(ValueError, match="not comparable"):
        api.search(work / index, text="dog", model=work / "other", precision="fp32")
    assert len(api.search(work / index, text="dog", model=work / "other", precision="fp32",
                          allow_other_model=True)) == 3


@pytest.mark.parametrize("index", ["idx.parquet", "idx.lance"])
def test_the_same_weights_under_another_name_are_the_same_model(work, index):
    """A copy of the folder (like an ONNX export of it, or the same weights on the Hub) is the index's model: its
    weights hash is the index's (tables record it; a file's recorded folder is hashed)."""
    own = api.search(work / index, text="dog", precision="fp32")
    copied = api.search(work / index, text="dog", model=work / "copy", precision="fp32")
    assert [r["key"] for r in copied] == [r["key"] for r in own]
    assert [r["score"] for r in copied] == pytest.approx([r["score"] for r in own], abs=1e-6)


# ------------------------------------------------------------------------------------------ start-up and output


def test_index_build_imports_neither_torch_nor_transformers(work, tmp_path):
    done, imported, errors = run_console_script("index", "build", str(work / "idx.lance"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "left exact" in done.stdout and errors == [], (done.stdout, errors)
    assert "lancedb" in imported  # the import list was captured at all
    assert not imported & HEAVY, sorted(imported & HEAVY)


def test_quiet_prints_no_loading_weights(work, tmp_path, capfd):
    """A fresh copy of the model each time, so that the process' model cache does not hide the loading. Without
    --quiet the bar does print (else this test could not fail)."""
    for quiet in (False, True):
        model = shutil.copytree(work / "model", tmp_path / f"model-{quiet}")
        args = ["embed", str(model), str(work / "audio"), str(tmp_path / f"out-{quiet}.parquet"), "--num-workers", "0"]
        assert cli_main(args + (["--quiet"] if quiet else [])) == 0
        captured = capfd.readouterr()
        assert ("Loading weights" in captured.err + captured.out) is not quiet, captured.err[-2000:]
