"""The README's examples run as written, offline, against a tiny model.

The examples read `runs/demo/hub` (what `make demo` writes) and, for sentence-transformers, two clips `dog.wav` and
`rain.oga` in the working directory. The test runs each block in a fresh process whose working directory holds a
tiny `test-tiny` model at `runs/demo/hub` and those clips: the same layout, so the code runs unchanged. The one
substitution is the push example's local Hub address, which becomes that of the test's own server.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clapforge
from clapforge import LaionClapProcessor
from conftest import make_tokenizer, randomize_, write_wav
from hub_server import HubServer

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.S | re.M)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory laid out as the README's examples expect."""
    root = tmp_path_factory.mktemp("readme")
    torch.manual_seed(0)
    model = randomize_(clapforge.create_model("test-tiny"))
    folder = root / "runs" / "demo" / "hub"
    model.save_pretrained(folder)
    LaionClapProcessor(clapforge.create_feature_extractor("test-tiny", model.config), make_tokenizer()).save_pretrained(
        folder
    )
    write_wav(root / "dog.wav", seed=1, seconds=1.0)
    shutil.copyfile(write_wav(root / "rain.wav", seed=2, seconds=1.5), root / "rain.oga")  # FFmpeg probes content
    return root


def env_for(root: Path, **extra: str) -> dict:
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_HOME=str(root / "hf-home"),
        HF_MODULES_CACHE=str(root / "modules"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    )


def run_python(code: str, root: Path) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env_for(root), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{code}\n---\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.parametrize("title", ["Quick start", "sentence-transformers and MTEB"])
def test_python_examples_run_as_written(title, workdir):
    examples = blocks(section(title), "python")
    if title != "Quick start":
        examples = examples[:1]  # the MTEB block runs benchmarks from the Hub: tests/test_mteb.py runs it locally
    assert examples, title
    for code in examples:
        out = run_python(code, workdir)
        assert "tensor(" in out, out  # each example prints its scores


def test_push_example_publishes_to_a_local_hub(workdir):
    shell = blocks(section("Hub"), "")
    push = [line for block in shell for line in block.splitlines() if "clapforge push" in line]
    assert len(push) == 1 and "HF_ENDPOINT=http://127.0.0.1:8765" in push[0], push
    with HubServer(workdir / "local-hub") as hub:
        command = push[0].replace("http://127.0.0.1:8765", hub.url)
        env = env_for(workdir)
        env.pop("HF_HUB_OFFLINE")
        result = subprocess.run(command, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert {"config.json", "model.safetensors", "modules.json"} <= hub.files("user/clap")
