"""A pip-installed clapforge runs its main job: the wheel, in a fresh virtual environment, outside the checkout.

The wheel is built from a copy of the sources (so the checkout gets no build/ or egg-info), installed with `--no-deps`
into a new venv whose other packages (torch, transformers, ...) come from this project's venv through a `.pth` line
naming its site-packages. A `.pth` line only adds a directory to `sys.path`, it does not run the `.pth` files inside
it, so the editable install's hook (`__editable__.clapforge-*.pth`, which puts the checkout's src/ on the path) stays
out: clapforge comes from the wheel alone, and the test checks that it does. From a directory outside the checkout it
then runs `clapforge demo` on a tiny corpus and `clapforge push --space` against the local Hub server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from huggingface_hub import metadata_load

from hub_server import HubServer, hub_env

ROOT = Path(__file__).resolve().parents[1]
TINY_DEMO = [
    "--clips",
    "60",
    "--threads",
    "1",
    "train.max_steps=3",
    "train.batch_size=8",
    "eval.every=0",
    "checkpoint.every=2",
    "log_with=null",
]  # as tests/test_demo.py


def run(command: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONPATH", None)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip"]
    run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(source), "-w", str(tmp / "dist")],
        cwd=tmp,
    )
    (wheel,) = (tmp / "dist").glob("clapforge-*.whl")
    return wheel


def make_venv(tmp: Path, wheel: Path) -> Path:
    """A fresh venv with the wheel installed, and this venv's site-packages (minus its .pth hooks) on its path."""
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    # pip runs inside the new interpreter, before the .pth exists: it sees nothing of this venv.
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=tmp,
    )
    site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "project_venv.pth").write_text("".join(f"{path}\n" for path in sorted(ours)))
    return venv


@pytest.mark.slow
def test_the_wheel_runs_the_demo_and_pushes_the_space_outside_the_checkout(tmp_path):
    venv = make_venv(tmp_path, build_wheel(tmp_path))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    where = run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import clapforge, clapforge_cli; print(clapforge.__file__); print(clapforge_cli.__file__)",
        ],
        cwd=work,
        env=env,
    ).stdout.split()
    assert all(Path(path).is_relative_to(venv) for path in where), where  # not the checkout's src/

    demo = run([str(venv / "bin" / "clapforge"), "demo", "--out", "demo", *TINY_DEMO], cwd=work, env=env)
    assert "zero-shot accuracy" in demo.stdout and (work / "demo" / "hub" / "config.json").is_file()
    assert (work / "demo" / "demo.json").is_file()

    with HubServer(tmp_path / "hub") as hub:
        pushed = run(
            [str(venv / "bin" / "clapforge"), "push", "demo/hub", "tester/model", "--space", "tester/space"],
            cwd=work,
            env=hub_env(hub.url, tmp_path / "hf-home"),
        )
        assert "model: " in pushed.stdout and "space: " in pushed.stdout
        assert {"config.json", "model.safetensors", "README.md"} <= hub.files("tester/model")
        space_files = hub.files("tester/space", "space")
        assert {"app.py", "requirements.txt", "README.md"} <= space_files
        assert {f"examples/{p.name}" for p in (ROOT / "spaces_demo" / "examples").glob("*.flac")} <= space_files
        stored = hub.repo_dir("tester/space", "space") / "files"
        assert (stored / "app.py").read_bytes() == (ROOT / "spaces_demo" / "app.py").read_bytes()
        assert metadata_load(stored / "README.md")["models"] == ["tester/model"]
