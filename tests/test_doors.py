"""The doors around the main paths answer in one line (issue 24): what a model reference is (`inference.references`),
a Hub that cannot be reached, and arguments that can only be nonsense.

The console script runs in subprocesses where it matters that an answer comes before torch is imported, or from an
unreachable Hub endpoint (huggingface_hub reads HF_ENDPOINT at import); the rest calls `clapforge.cli.main` in this
process. Seconds are printed (`pytest -s`), never asserted (benchmarks/ holds speed goals).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import clapforge
from clapforge.cli import main as cli_main
from clapforge.export.onnx_folder import export_model
from clapforge.inference.loading import load_engine, load_model
from clapforge.inference.onnx_backend import OnnxClapModel
from clapforge.inference.references import is_hub_id, resolve_model
from clapforge.tools.embeddings_file import EmbeddingIndex, read_index, write_index
from conftest import make_tokenizer, randomize_, write_wav

BIN = Path(sys.executable).parent
HEAVY = {"torch", "transformers", "huggingface_hub", "numpy"}


def run_console_script(*args: str, cwd: Path, env: dict[str, str] | None = None):
    """(result, seconds, top-level modules imported) of `clapforge ARGS`."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", **(env or {})}
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "clapforge"), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)
    seconds = time.perf_counter() - start
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    return done, seconds, imported, errors


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny model folder, a clip, and an embeddings file that records the model."""
    root = tmp_path_factory.mktemp("doors")
    model = root / "model"
    torch.manual_seed(0)
    clapforge.LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), make_tokenizer()).save_pretrained(
        model)
    randomize_(clapforge.create_model("test-tiny"), seed=1, scale=0.2).save_pretrained(model)
    write_wav(root / "audio" / "a.wav", seed=1, seconds=0.5)
    index = EmbeddingIndex(["a.wav"], torch.ones(1, 8), torch.ones(1, dtype=torch.float64),
                           metadata={"model": str(model.resolve())})
    write_index(index, root / "idx.parquet")
    write_index(index, root / "idx.safetensors")
    return root


# ------------------------------------------------------------------------------------------ model references


@pytest.mark.parametrize("reference", ["nosuchmodel", "./model-typo", "~/nosuch-model", "runs/model-typo",
                                       "a/b/c", "owner/model.pt", "/abs/nosuch", "owner/--bad"])
def test_a_path_that_does_not_exist_is_never_taken_for_a_hub_id(work, reference, monkeypatch):
    (work / "runs").mkdir(exist_ok=True)  # `runs/model-typo` beside a runs/ folder is a mistyped path
    monkeypatch.chdir(work)
    assert not is_hub_id(reference)
    with pytest.raises(FileNotFoundError, match=f"^no such model folder: {re.escape(reference)}"):
        resolve_model(reference)
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_model(reference)


def test_hub_ids_stay_hub_ids(work, monkeypatch):
    monkeypatch.chdir(work)
    for repo in ("laion/clap-htsat-fused", "user/model.v2", "my_org/clap_small-1"):
        assert is_hub_id(repo) and resolve_model(repo).kind == "hub", repo


def test_a_mistyped_model_answers_before_torch_and_without_the_network(work, tmp_path):
    """The console script answers a mistyped model path at once: no Hub request (the endpoint is a closed port that
    would refuse it, after retries), and neither torch nor huggingface_hub imported."""
    (tmp_path / "runs").mkdir()
    done, seconds, imported, errors = run_console_script(
        "embed", "runs/model-tpyo", str(work / "audio"), "out.parquet", cwd=tmp_path,
        env={"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    print(f"mistyped model path: {seconds:.2f} s")
    assert done.returncode == 2, done.stderr[-2000:]
    assert errors == ["clapforge embed: error: no such model folder: runs/model-tpyo (runs/ is a folder here, so this "
                      "is a path, not a Hub id)"]
    assert not imported & HEAVY, sorted(imported & HEAVY)
    assert not (tmp_path / "out.parquet").exists()


def _transformers_folder(folder: Path) -> Path:
    from transformers import ClapConfig, ClapModel

    config = ClapConfig(
        text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=32,
                         vocab_size=300),
        audio_config=dict(depths=[1, 1, 1, 1], patch_embeds_hidden_size=8, hidden_size=64,
                          num_attention_heads=[1, 1, 1, 1]),
    )
    ClapModel(config).save_pretrained(folder)
    return folder


def _corpus(folder: Path) -> Path:
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "shard-00000.tar").write_bytes(b"")
    (folder / "manifest.json").write_text(json.dumps({"clips": 0}))
    (folder / "labels.json").write_text("{}")
    return folder


def _laion_checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"module.logit_scale_a": torch.tensor(1.0)}}, path)
    return path


def _training_run(folder: Path, model: Path) -> Path:
    import shutil

    (folder / "checkpoints").mkdir(parents=True)
    shutil.copytree(model, folder / "hub")
    return folder


# What each wrong kind of model reference is answered with: what it is, and what to do instead.
WRONG_KINDS = {
    "embeddings parquet": (lambda w, t: w / "idx.parquet",
                           r"idx\.parquet is an embeddings file, not a model: pass the model folder \(the index "
                           r"records it: .*model\)"),
    "embeddings safetensors": (lambda w, t: w / "idx.safetensors",
                               r"idx\.safetensors is an embeddings file, not a model: pass the model folder \(the "
                               r"index records it: .*model\)"),
    "corpus": (lambda w, t: _corpus(t / "corpus"), r"corpus is a corpus of audio shards .* train one on it"),
    "transformers folder": (lambda w, t: _transformers_folder(t / "hf"),
                            r"hf is a transformers ClapModel folder, not a clapforge one: convert it once with "
                            r"`clapforge convert .*hf OUT` and pass OUT"),
    "LAION .pt": (lambda w, t: _laion_checkpoint(t / "630k-audioset-best.pt"),
                  r"630k-audioset-best\.pt is a checkpoint file .*: convert it once with `clapforge convert "
                  r".*630k-audioset-best\.pt OUT` and pass OUT"),
    "audio file": (lambda w, t: w / "audio" / "a.wav", r"a\.wav is an audio file, not a model"),
    "audio folder": (lambda w, t: w / "audio", r"audio is a folder of audio files, not a model"),
    "training run": (lambda w, t: _training_run(t / "run", w / "model"), r"run is a training run's folder: its model "
                     r"is .*run/hub"),
    "empty folder": (lambda w, t: Path(t / "empty").mkdir() or t / "empty",
                     r"empty is a folder without config.json, not a model folder: a model folder holds config.json"),
}


@pytest.mark.parametrize("kind", list(WRONG_KINDS))
def test_a_wrong_kind_of_model_gets_one_line_naming_the_fix(work, tmp_path, kind, capsys):
    make, message = WRONG_KINDS[kind]
    path = make(work, tmp_path)
    capsys.readouterr()  # what making it printed
    with pytest.raises(ValueError, match=message):
        load_model(path)
    assert cli_main(["classify", str(path), str(work / "audio" / "a.wav"), "--labels", "dog,rain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clapforge classify: error: "), err
    assert re.search(message, err[0]), err[0]


def test_convert_of_a_clapforge_folder_says_there_is_nothing_to_convert(work, tmp_path, capsys):
    assert cli_main(["convert", str(work / "model"), str(tmp_path / "copy")]) == 2
    assert "is already a clapforge model folder: nothing to convert" in capsys.readouterr().err
    assert not (tmp_path / "copy").exists()


@pytest.fixture(scope="module")
def export_only(work):
    """`clapforge export MODEL OUT`: config, processor files and onnx/, without PyTorch weights."""
    out = work / "onnx-export"
    export_model(work / "model", out, log=lambda _: None)
    assert not list(out.glob("*.safetensors")) and (out / "onnx" / "manifest.json").is_file()
    return out


def test_an_export_only_folder_runs_in_onnx_runtime_under_the_default_backend(work, export_only, tmp_path, capsys):
    assert resolve_model(export_only).kind == "export"
    engine = load_engine(export_only)  # backend "auto", precision "auto"
    assert isinstance(engine.model, OnnxClapModel) and engine.choice.backend == "onnx"
    assert isinstance(load_model(export_only)[0], OnnxClapModel)
    wav = str(work / "audio" / "a.wav")
    assert cli_main(["classify", str(export_only), wav, "--labels", "dog,rain"]) == 0
    assert "onnx backend" in capsys.readouterr().err
    # an index that records the export folder is searched with it, as it was made
    index = tmp_path / "onnx.parquet"
    assert cli_main(["embed", str(export_only), str(work / "audio"), str(index), "--quiet"]) == 0
    assert read_index(index).metadata["model"] == str(export_only.resolve())
    capsys.readouterr()
    assert cli_main(["search", str(index), "a dog", "--top-k", "1"]) == 0
    assert "a.wav" in capsys.readouterr().out
    # PyTorch has nothing to load there: asked for anyway, it is refused, naming the backend that runs it
    with pytest.raises(ValueError, match="ONNX export without PyTorch weights .* use the onnx backend"):
        load_model(export_only, backend="torch")


# ------------------------------------------------------------------------------------------ the network


def _closed_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["hub model", "push"])
def test_an_unreachable_hub_ends_in_one_line_with_the_offline_route(work, tmp_path, command):
    """A Hub id whose files are not cached, and a push, against an endpoint that refuses connections: one line naming
    the cause without the host and the way to work without the network, after one short retry (the seconds are
    printed: huggingface_hub's own retries took ~23 s of sleeping per file)."""
    args = {
        "hub model": ["classify", "clapforge-tests/not-cached", str(work / "audio" / "a.wav"), "--labels", "dog"],
        "push": ["push", str(work / "model"), "clapforge-tests/tiny"],
    }[command]
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "HF_HOME": str(tmp_path / "hf-home"),
           "HF_TOKEN": "hf_dummy", "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": ""}
    done, seconds, _, errors = run_console_script(*args, cwd=tmp_path, env=env)
    print(f"unreachable Hub ({command}): {seconds:.2f} s")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = [line for line in errors if line.startswith(f"clapforge {args[0]}: error:")]
    assert len(last) == 1 and errors[-1] == last[0], errors
    assert "could not reach the Hugging Face Hub" in last[0] and "127.0.0.1" not in last[0]
    assert ("HF_HUB_OFFLINE=1" if command == "hub model" else "HF_ENDPOINT=URL") in last[0]
    assert not [line for line in errors if "Retrying in" in line]  # the retry says nothing the line does not


def test_offline_mode_without_the_model_in_the_cache_says_so(monkeypatch):
    from huggingface_hub import constants

    from clapforge.hub_network import HubUnreachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachable, match="HF_HUB_OFFLINE is set and the Hugging Face cache does not hold model "
                                             "clapforge-tests/never-downloaded"):
        load_model("clapforge-tests/never-downloaded")


def test_network_failures_are_told_from_other_errors():
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError

    from clapforge.hub_network import is_network_error, network_error_line

    def caused(error: BaseException, by: BaseException) -> BaseException:
        try:
            raise error from by
        except BaseException as raised:
            return raised

    refused = httpx2.ConnectError("[Errno 111] Connection refused")
    assert is_network_error(caused(OSError("We couldn't connect to 'https://x'"), refused))
    assert is_network_error(caused(LocalEntryNotFoundError("not cached"), refused))
    assert is_network_error(ConnectionError("Couldn't reach 'x' on the Hub"))  # datasets
    line = network_error_line(caused(OSError("boom"), refused), "model a/b")
    assert line.startswith("could not reach the Hugging Face Hub to fetch model a/b") and "ConnectError" in line
    for other in (BrokenPipeError(), TimeoutError(), ValueError("x"), FileNotFoundError("no such file"),
                  OSError("disk full")):
        assert not is_network_error(other) and network_error_line(other) is None, other


def test_the_bounded_retries_are_undone_after_the_command():
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    from clapforge.hub_network import CLI_RETRIES, bounded_hub_retries

    before = dict(_http.http_backoff.__kwdefaults__), constants.HF_HUB_ETAG_TIMEOUT
    with bounded_hub_retries():
        assert _http.http_backoff.__kwdefaults__["max_retries"] == CLI_RETRIES
    assert (dict(_http.http_backoff.__kwdefaults__), constants.HF_HUB_ETAG_TIMEOUT) == before


# ------------------------------------------------------------------------------------------ arguments


@pytest.mark.parametrize(("args", "message"), [
    (["search", "idx.parquet", "a dog", "--top-k", "0"], "argument --top-k: must be at least 1, got 0"),
    (["search", "idx.parquet", "a dog", "--top-k", "-3"], "argument --top-k: must be at least 1, got -3"),
    (["embed", "model", "audio", "out.parquet", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
    (["embed", "model", "audio", "out.parquet", "--num-workers", "-1"], "argument --num-workers: must be at least 0"),
    (["classify", "model", "a.wav", "--labels", "dog", "--batch-size", "x"], "argument --batch-size: expected an "
     "integer, got 'x'"),
    (["synth", "out", "--clips", "0"], "argument --clips: must be at least 1"),
    (["synth", "out", "--test-fraction", "1.5"], "argument --test-fraction: must be in [0, 1)"),
    (["eval", "model", "--task", "esc50", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
])
def test_impossible_numbers_are_refused_while_parsing(args, message, tmp_path):
    done, seconds, imported, _ = run_console_script(*args, cwd=tmp_path)
    print(f"argument error {args[0]} {args[-2]} {args[-1]}: {seconds:.2f} s")
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert not imported & HEAVY, sorted(imported & HEAVY)


def test_top_k_below_one_is_refused_in_process(work, capsys):
    for top_k in ("0", "-3"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["search", str(work / "idx.parquet"), "a dog", "--top-k", top_k])
        assert exit_info.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_an_input_without_audio_is_an_error_not_zero_embeddings(work, tmp_path, capsys):
    not_audio = tmp_path / "notaudio.wav"
    not_audio.write_text("hello, not a wav")
    assert cli_main(["embed", str(work / "model"), str(not_audio), str(tmp_path / "o.parquet"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: no audio in" in err and "none of its 1 input(s) could be decoded" in err
    # a file that is no audio at all (here: an embeddings file in the input's place) is refused before any work
    assert cli_main(["embed", str(work / "model"), str(work / "idx.parquet"), str(tmp_path / "p.parquet")]) == 2
    assert "idx.parquet is not an audio file" in capsys.readouterr().err
    assert not (tmp_path / "p.parquet").exists()


def test_constants_restated_for_a_light_resolver_match_the_library():
    from clapforge.commands import evaluate
    from clapforge.evaluation.mteb_tasks import SYNTHETIC
    from clapforge.inference import onnx_backend, references
    from clapforge.modeling_clap.configuration_laion_clap import LaionClapConfig
    from clapforge.tools import embeddings_file

    assert (references.ONNX_DIR, references.MANIFEST) == (onnx_backend.ONNX_DIR, onnx_backend.MANIFEST)
    assert LaionClapConfig.model_type == references.MODEL_TYPE
    assert references.EMBEDDINGS_KEY == embeddings_file.METADATA_KEY
    assert evaluate.SYNTHETIC == SYNTHETIC
