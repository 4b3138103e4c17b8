"""What a model reference is: the one resolver every loader goes through (`inference.loading`).

A model is named by
- a clapforge model folder: config.json with model_type `laion_clap` and safetensors weights (what `clapforge train`,
  `clapforge convert` and `save_pretrained` write), possibly with an ONNX export beside them (`onnx/manifest.json`);
- an export-only folder: a `clapforge export` output without PyTorch weights (config.json, processor files, `onnx/`),
  which only ONNX Runtime can run;
- a Hub id, `owner/name`, of a clapforge model repo.

Everything else is refused in one line that says what it is and what to do instead: a transformers `ClapModel` folder
or a LAION-CLAP `.pt` (convert it first), an embeddings file or a LanceDB table (pass the model it records), an audio
file, a corpus, a training run's folder (its model is `hub/` inside), a recipe. A path-like string that does not exist
is never sent to the Hub: more than one `/`, a leading `.`, `/` or `~`, a file suffix, no `owner/` part, or an `owner/`
that is a folder here all make it a path, answered at once with "no such model folder".

Standard library only (pyarrow or lancedb are imported to name the model an embeddings file records): the commands
call `resolve_model` while checking their arguments, before torch is imported.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.prepare_inputs import AUDIO_EXTENSIONS

# = onnx_backend.ONNX_DIR and MANIFEST, restated: this module imports neither torch nor numpy, so that the command
# line resolves a model reference (and answers a mistyped path) before loading them.
ONNX_DIR = "onnx"
MANIFEST = "manifest.json"

MODEL_TYPE = "laion_clap"  # = LaionClapConfig.model_type
TRANSFORMERS_MODEL_TYPE = "clap"  # transformers' ClapModel
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin"}
DATA_SUFFIXES = {".parquet", ".safetensors", ".lance", ".arrow", ".npy", ".npz", ".tar", ".csv", ".tsv", ".jsonl"}
# A Hub id with one of these endings is a file name the user meant: it is never looked up on the Hub.
FILE_SUFFIXES = (CHECKPOINT_SUFFIXES | DATA_SUFFIXES | AUDIO_EXTENSIONS
                 | {".onnx", ".json", ".yaml", ".yml", ".txt", ".lst", ".list", ".gz", ".zip"})
# huggingface_hub's repo id rule: letters, digits, `-`, `_`, `.`; no `--` or `..`; no leading or trailing `-`/`.`.
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"{_HUB_PART}/{_HUB_PART}")
EMBEDDINGS_KEY = "clapforge"  # = tools.embeddings_file.METADATA_KEY (this layer sits below tools)
MODEL_FOLDER = "a model folder holds config.json and model.safetensors (written by `clapforge train`, `clapforge "\
    "convert` or `save_pretrained`)"


@dataclass(frozen=True)
class ModelReference:
    """A model reference resolved: `name` is a local folder's absolute path or the Hub id as given."""

    name: str
    kind: str  # "folder" (PyTorch weights, maybe an export beside them), "export" (ONNX only) or "hub"
    onnx: bool = False  # the folder holds an ONNX export (onnx/manifest.json)

    @property
    def local(self) -> bool:
        return self.kind != "hub"

    @property
    def torch_weights(self) -> bool:
        """Whether PyTorch can load it (an export-only folder has no PyTorch weights)."""
        return self.kind != "export"


def is_hub_id(text: str) -> bool:
    """Whether `text`, which names nothing here, may be a Hub model id: `owner/name` in the Hub's characters, without
    a file suffix, and whose `owner` is not a folder here (`runs/model` beside a `runs/` folder is a mistyped path)."""
    if not _HUB_ID.fullmatch(text) or "--" in text or ".." in text or text.endswith(".git"):
        return False
    if Path(text).suffix.lower() in FILE_SUFFIXES:
        return False
    return not Path(text.split("/")[0]).is_dir()


def resolve_model(model: str | os.PathLike) -> ModelReference:
    """The model `model` names, or one ValueError / FileNotFoundError line saying what it is instead and what to do.

    Local paths are classified by what they hold, without loading anything; a Hub id is returned unchecked (its
    config is checked when it is downloaded: `check_model_config`)."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        return _local(path)
    if is_hub_id(text):
        return ModelReference(text, "hub")
    hint = ""
    if "/" not in text.strip("/") and not text.startswith((".", "~", "/")) and not Path(text).suffix:
        hint = " (a Hub model id has the form owner/name)"
    elif _HUB_ID.fullmatch(text) and Path(text.split("/")[0]).is_dir():
        hint = f" ({text.split('/')[0]}/ is a folder here, so this is a path, not a Hub id)"
    raise FileNotFoundError(f"no such model folder: {text}{hint}")


def check_model_config(config: dict[str, Any], name: str) -> None:
    """Refuse a config.json that is not a clapforge model's, naming what it is (`name`: the folder or Hub id)."""
    model_type = config.get("model_type")
    if model_type == MODEL_TYPE:
        return
    if model_type == TRANSFORMERS_MODEL_TYPE:
        if Path(name).expanduser().is_dir():
            raise ValueError(f"{name} is a transformers ClapModel folder, not a clapforge one: convert it once with "
                             f"`clapforge convert {name} OUT` and pass OUT")
        folder = name.split("/")[-1]
        raise ValueError(f"{name} is a transformers ClapModel repo, not a clapforge one: download and convert it once "
                         f"(`hf download {name} --local-dir {folder}`, then `clapforge convert {folder} OUT`) and "
                         "pass OUT")
    raise ValueError(f"{name} is a {model_type or 'model_type-less'} model (config.json), not a LAION-CLAP one "
                     f"(model_type {MODEL_TYPE!r}): {MODEL_FOLDER}")


def _local(path: Path) -> ModelReference:
    if path.is_dir():
        return _folder(path)
    raise ValueError(_file_message(path))


def _folder(path: Path) -> ModelReference:
    config_file = path / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{config_file} is not valid JSON ({error}): save the model again") from error
        check_model_config(config if isinstance(config, dict) else {}, str(path))
        weights = any(path.glob("*.safetensors"))
        onnx = (path / ONNX_DIR / MANIFEST).is_file()
        if weights or onnx:
            return ModelReference(str(path.resolve()), "folder" if weights else "export", onnx)
        if (path / ONNX_DIR).is_dir():
            raise ValueError(f"{path} holds {ONNX_DIR}/ without {ONNX_DIR}/{MANIFEST} and no model.safetensors: an "
                             "export that did not finish; export again (`clapforge export MODEL OUT --format onnx`)")
        raise ValueError(f"{path} has a clapforge config.json but no weights (model.safetensors): an unfinished save? "
                         "save the model again")
    if path.suffix.lower() == ".lance" or (path / "files.lance").is_dir():
        raise ValueError(f"{path} is a LanceDB table of embeddings, not a model: pass the model folder"
                         f"{_recorded_model(path, _table_model)}")
    if (path / "hub" / "config.json").is_file():
        raise ValueError(f"{path} is a training run's folder: its model is {path / 'hub'}")
    if (path / ONNX_DIR / MANIFEST).is_file():
        raise ValueError(f"{path} holds an ONNX export but no config.json: export again (`clapforge export MODEL "
                         "OUT --format onnx`)")
    if (path / "manifest.json").is_file() or any(path.glob("*/shard-*.tar")):
        raise ValueError(f"{path} is a corpus of audio shards (`clapforge synth` / `clapforge prepare`), not a model: "
                         f"train one on it (`clapforge train`) or pass a model folder; {MODEL_FOLDER}")
    if _holds_audio(path):
        raise ValueError(f"{path} is a folder of audio files, not a model: the model comes first "
                         f"(`clapforge embed MODEL {path} OUT`); {MODEL_FOLDER}")
    raise ValueError(f"{path} is a folder without config.json, not a model folder: {MODEL_FOLDER}")


def _file_message(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        recorded = _recorded_model(path, _parquet_model)
        if recorded:
            return f"{path} is an embeddings file, not a model: pass the model folder{recorded}"
        return f"{path} is a parquet file, not a model: pass a model folder (with `--dataset` it is a data source)"
    if suffix == ".safetensors":
        recorded = _recorded_model(path, _safetensors_model)
        if recorded or _safetensors_metadata(path).get("keys"):
            return f"{path} is an embeddings file, not a model: pass the model folder{recorded}"
        return f"{path} is a weights file: pass the folder that holds it and its config.json ({path.parent})"
    if suffix in CHECKPOINT_SUFFIXES:
        return (f"{path} is a checkpoint file (a LAION-CLAP .pt?): convert it once with `clapforge convert {path} OUT` "
                "and pass OUT")
    if suffix in AUDIO_EXTENSIONS:
        return f"{path} is an audio file, not a model: the model comes first (`clapforge embed MODEL INPUT OUT`)"
    if suffix == ".onnx":
        folder = path.parent.parent if path.parent.name == ONNX_DIR else path.parent
        return f"{path} is one ONNX graph: pass the export folder that holds {ONNX_DIR}/ ({folder})"
    if path.name == "config.json":
        return f"{path} is a config file: pass the folder that holds it ({path.parent})"
    if suffix in (".yaml", ".yml"):
        return f"{path} is a file, not a model: a recipe is trained with `clapforge train --config {path}`"
    if suffix == ".tar":
        return f"{path} is a shard of a corpus, not a model: {MODEL_FOLDER}"
    return f"{path} is a file, not a model folder: {MODEL_FOLDER}"


def _holds_audio(path: Path, limit: int = 2000) -> bool:
    for seen, entry in enumerate(path.rglob("*")):
        if seen >= limit:
            return False
        if entry.suffix.lower() in AUDIO_EXTENSIONS:
            return True
    return False


def _recorded_model(path: Path, read: Any) -> str:
    """" (the index records it: MODEL)" when the file records the model it was made with, else ""."""
    try:
        model = read(path)
    except Exception:  # an unreadable or foreign file records nothing; the message stays what it is
        return ""
    return f" (the index records it: {model})" if model else ""


def _parquet_model(path: Path) -> str | None:
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(EMBEDDINGS_KEY.encode(), b"{}")).get("model")


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's header metadata, read without loading a tensor (8-byte length, then JSON)."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                return {}
            return json.loads(f.read(length)).get("__metadata__") or {}
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return {}


def _safetensors_model(path: Path) -> str | None:
    return json.loads(_safetensors_metadata(path).get(EMBEDDINGS_KEY, "{}")).get("model")


def _table_model(path: Path) -> str | None:
    import lancedb

    table = lancedb.connect(str(path)).open_table("files")
    return json.loads((table.schema.metadata or {}).get(EMBEDDINGS_KEY.encode(), b"{}")).get("model")
