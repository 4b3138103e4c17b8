"""The README's examples run as written, offline, against a tiny model.

The examples read `runs/demo/hub` (what `make demo` writes) and the files a reader would have at hand (clips, a
folder of audio, a captions table, a tokenizer folder, a transformers CLAP folder, `make demo`'s corpus). The tests
run each Python block in a fresh process, and every command of every shell block in README order, in one working
directory that holds a tiny `test-tiny` model at `runs/demo/hub` and those files: the same layout, so the examples run
unchanged. A shell command is skipped only if NOT_RUN names it with the reason; the one substitution is the push
example's local Hub address, which becomes that of the test's own server.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clapforge
from clapforge import LaionClapProcessor
from clapforge.data.shards import encode_flac
from clapforge.data.synth import synthesize_corpus
from conftest import make_tokenizer, randomize_, tone, wav_bytes, write_csv, write_wav
from hub_server import HubServer

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


SHELL = ("", "bash", "sh", "shell")  # the README leaves its shell blocks unlabelled


def blocks(text: str, *languages: str) -> list[str]:
    """The code blocks of `text` labelled with one of `languages`, in order."""
    fenced = re.findall(r"^```(\w*)\n(.*?)^```$", text, flags=re.S | re.M)  # every block, so fences pair up
    return [code for label, code in fenced if label in languages]


def commands(block: str) -> list[str]:
    """The block's commands, comments dropped: a line ending in a backslash continues, as does an open quote."""
    found, pending = [], ""
    for line in block.splitlines():
        line = re.sub(r"(^|\s+)#\s.*$", "", line).rstrip()
        if pending.endswith(" "):  # after a backslash: the continuation's indentation is layout
            line = line.lstrip()
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        pending += line
        try:
            shlex.split(pending)
        except ValueError:  # a quoted string spans lines
            pending += "\n"
            continue
        if pending.strip():
            found.append(pending.strip())
        pending = ""
    assert not pending, pending
    return found


# Every other command of the README's shell blocks runs in test_shell_examples_run_as_written.
NOT_RUN = {
    "make demo": "minutes of training: tests/test_demo.py runs the demo job on a tiny budget",
    "make test": "the suite this test belongs to",
    "make test-fast": "the suite this test belongs to",
    "clapforge convert 630k-audioset-fusion-best.pt out/ --tokenizer roberta-base":
        "the released checkpoint and roberta-base's tokenizer come from the network: tests/test_convert.py converts "
        "LAION .pt files of the released layout offline",
    "accelerate launch --multi_gpu --num_processes 2 -m clapforge.train --config recipes/demo.yaml "
    "train.batch_size=64": "two GPUs: tests/test_train_distributed.py launches 2 CPU processes",
    "clapforge train --config recipes/demo.yaml --resume latest":
        "continues the demo recipe's run (minutes of training): tests/test_train.py resumes a tiny run",
    "accelerate launch --num_machines 2 --machine_rank $RANK --main_process_ip $HOST --num_processes 16 "
    "-m clapforge embed MODEL /shared/library /shared/clips.lance": "two machines with 8 GPUs each",
    "clapforge eval runs/demo/hub --benchmark MAEB --out maeb.json":
        "MAEB's tasks are downloaded from the Hub: tests/test_mteb.py runs the bridge on local tasks",
    "python -c \"import sys, time; sys.path.insert(0, 'tests'); from hub_server import HubServer\n"
    "HubServer('local-hub', port=8765).start(); time.sleep(3600)\" &":
        "an hour-long server on a fixed port: test_push_example_publishes_to_a_local_hub starts it on a free one",
    "sleep 2": "waits for that server",
    "HF_ENDPOINT=http://127.0.0.1:8765 HF_TOKEN=local HF_HUB_DISABLE_XET=1 clapforge push runs/demo/hub user/clap":
        "run by test_push_example_publishes_to_a_local_hub against the test's own server",
}


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


@pytest.fixture(scope="module")
def shell_workdir(workdir):
    """`workdir` plus what the shell blocks name besides the model: clips, folders of audio, data to prepare, a
    tokenizer, a transformers CLAP folder and `make demo`'s corpus."""
    import datasets
    from transformers import ClapConfig, ClapModel

    root = workdir
    for seed, name in enumerate(["a.wav", "query.wav", "audio/x.wav", "audio/sub/y.wav", "my_sounds/one.wav",
                                 "my_sounds/two.wav"]):
        write_wav(root / name, seed=seed + 3, seconds=1.0)
    (root / "b.flac").write_bytes(encode_flac(tone(1.0, freq=330.0)))
    for seed, seconds in enumerate([1.0, 3.0, 6.0, 7.5]):  # two clips pass the README's `--where "duration > 5"`
        write_wav(root / "library" / f"clip{seed}.wav", seed=seed + 10, seconds=seconds)
    write_csv(root / "captions.csv", ["file_name", "caption"], [["one.wav", "a low hum"], ["two.wav", "a high beep"]])
    table = datasets.Dataset.from_dict(
        {"audio": [{"bytes": wav_bytes(1.0, seed=i), "path": f"c{i}.wav"} for i in range(2)],
         "caption": ["a hum", "a beep"]},
        features=datasets.Features({"audio": datasets.Audio(), "caption": datasets.Value("string")}),
    )
    table.to_parquet(str(root / "data.parquet"))
    make_tokenizer().save_pretrained(root / "my_tokenizer")
    # A transformers ClapModel folder with its tokenizer, as `clapforge convert` expects one from the Hub.
    torch.manual_seed(0)
    transformers_folder = root / "path" / "to" / "laion-clap-htsat-fused"
    ClapModel(ClapConfig(
        text_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=128,
                         vocab_size=300),
        audio_config=dict(depths=[2, 2, 2, 2], patch_embeds_hidden_size=8, hidden_size=64,
                          num_attention_heads=[1, 2, 4, 8], enable_fusion=True),
    )).save_pretrained(transformers_folder)
    make_tokenizer().save_pretrained(transformers_folder)
    synthesize_corpus(root / "runs" / "demo" / "corpus", 30, seed=1, workers=1, progress=False, test_fraction=0.5)
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


@pytest.mark.slow  # 2-3 minutes: about twenty commands, each starting torch
def test_shell_examples_run_as_written(shell_workdir):
    """Every command of every shell block, in README order, in one directory: a later section may use what an
    earlier one wrote (training reads the Data section's corpus), as a reader following the README would."""
    listed = [command for block in blocks(README.read_text(encoding="utf-8"), *SHELL) for command in commands(block)]
    assert set(NOT_RUN) <= set(listed), f"NOT_RUN names commands the README no longer has: {set(NOT_RUN) - set(listed)}"
    assert len(listed) > len(NOT_RUN), listed
    for command in listed:
        if command in NOT_RUN:
            continue
        result = subprocess.run(command, shell=True, executable="/bin/bash", cwd=shell_workdir,
                                env=env_for(shell_workdir), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n---\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{command}\n---\n{result.stderr[-3000:]}"


def test_push_example_publishes_to_a_local_hub(workdir):
    shell = blocks(section("Hub"), *SHELL)
    push = [line for block in shell for line in block.splitlines() if "clapforge push" in line]
    assert len(push) == 1 and "HF_ENDPOINT=http://127.0.0.1:8765" in push[0], push
    with HubServer(workdir / "local-hub") as hub:
        command = push[0].replace("http://127.0.0.1:8765", hub.url)
        env = env_for(workdir)
        env.pop("HF_HUB_OFFLINE")
        result = subprocess.run(command, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert {"config.json", "model.safetensors", "modules.json"} <= hub.files("user/clap")
