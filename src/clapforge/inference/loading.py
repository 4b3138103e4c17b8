"""Loading a model and its processor (one loader, cached per process and device), and the embedding engine over them.

What a model reference names (a clapforge folder, an export-only ONNX folder, a Hub id) is decided once, by
`inference.references.resolve_model`, which answers every other kind of path in one line saying what to do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .engine import EmbeddingEngine, feature_extractor_of, tokenizer_of
from .onnx_backend import MANIFEST, ONNX_DIR, OnnxClapModel, read_manifest
from .precision import BACKENDS, PrecisionChoice, check_backend, choose_precision
from .references import ModelReference, check_model_config, resolve_model

ModelLike = str | os.PathLike | tuple[Any, Any]

_LOADED: dict[tuple, tuple[Any, Any]] = {}
_ENGINES: dict[tuple, EmbeddingEngine] = {}


def model_reference(model: str | os.PathLike) -> str:
    """How an index records its model: the absolute path of a local folder, else the Hub id as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else str(model)


__all__ = ["BACKENDS", "check_backend", "feature_extractor_of", "load_engine", "load_model", "model_reference",
           "resolve_model", "tokenizer_of", "weights_hash"]


def choose(
    model: str | os.PathLike, device: str | torch.device | None = None, backend: str = "auto", precision: str = "auto"
) -> tuple[PrecisionChoice, torch.device]:
    """The precision and backend `load_engine` runs a folder or Hub id with, and the device (see
    `inference.precision.choose_precision`); refuses a backend that cannot run an explicit precision.

    An export-only folder (`clapforge export` output without model.safetensors) has no PyTorch weights: backend
    "auto" runs it in ONNX Runtime, and "torch" is refused."""
    check_backend(backend, precision)
    reference = resolve_model(model)
    backend = _backend_for(reference, backend, precision)
    wants_gpu = backend != "onnx" and precision != "int8"
    device = torch.device(device or ("cuda" if torch.cuda.is_available() and wants_gpu else "cpu"))
    choice = choose_precision(precision, device, backend, int8_export=reference.local and has_int8_export(model))
    check_backend(choice.backend, choice.precision)
    if choice.backend == "onnx" and device.type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU (ONNX Runtime's CPU provider), not on {device}")
    return choice, device


def _backend_for(reference: ModelReference, backend: str, precision: str) -> str:
    """The backend that can run `reference` as asked: an export-only folder runs on onnx only, a Hub id on torch."""
    if reference.kind == "export":
        if backend == "torch" or precision == "bf16":
            asked = "--backend torch" if backend == "torch" else "precision bf16 (PyTorch autocast)"
            raise ValueError(f"{reference.name} is an ONNX export without PyTorch weights (no model.safetensors), so "
                             f"{asked} cannot run it: use the onnx backend (--backend onnx or auto; precision fp32 "
                             "or int8), or pass the model folder it was exported from")
        return "onnx"
    if reference.kind == "hub" and backend == "onnx":
        raise ValueError(f"the onnx backend runs a local export folder, not a Hub id: export {reference.name} once "
                         f"(`clapforge export {reference.name} OUT --format onnx`) and pass OUT")
    return backend


def load_model(
    model: ModelLike, device: str | torch.device | None = None, backend: str = "auto", precision: str = "fp32"
) -> tuple[Any, Any]:
    """(model in eval mode, processor) for a folder or Hub id, cached per process (until the folder's weights change);
    a `(model, processor)` pair is returned as is.

    The processor is a `LaionClapProcessor`, or the bare `LaionClapFeatureExtractor` for a folder saved without a
    tokenizer (enough to embed audio). The model is a `LaionClapModel` in PyTorch, or an `OnnxClapModel` (ONNX Runtime
    on the CPU) for a folder written by `clapforge export` when the backend is onnx: asked for, chosen by `precision`
    (int8, or "auto" on a CPU without bf16 kernels beside an int8 export), or, under backend "auto", because the
    folder is export-only (no PyTorch weights to load). A precision is applied when the model runs (`load_engine` and
    its `EmbeddingEngine`), not here.

    Anything else given as `model` (a transformers or LAION checkpoint, an embeddings file, a corpus, a mistyped
    path) is refused in one line naming the fix (`inference.references`); a Hub id that cannot be fetched raises
    `hub_network.HubUnreachable` with the offline route.
    """
    if isinstance(model, tuple):
        if len(model) != 2:
            raise ValueError("model must be a folder, a Hub id or a (model, processor) pair")
        return model
    choice, device = choose(model, device, backend, precision)
    return _load(model, device, choice.backend, choice.precision)


def load_engine(
    model: ModelLike | EmbeddingEngine,
    device: str | torch.device | None = None,
    backend: str = "auto",
    precision: str = "auto",
    compile: bool = False,
) -> EmbeddingEngine:
    """The `EmbeddingEngine` for a folder, a Hub id or a `(model, processor)` pair, at `precision` ("auto": the
    fastest faithful precision on the device, `inference.precision`). Engines of folders and Hub ids are cached per
    process like their models, so a compiled graph is compiled once; a pair gets a new engine (hold it to reuse its
    compiled graph). An engine is returned as is."""
    if isinstance(model, EmbeddingEngine):
        return model
    if isinstance(model, tuple):
        loaded, processor = load_model(model)
        return EmbeddingEngine.wrap(loaded, processor, precision=precision, compile=compile)
    # compile is PyTorch's: "auto" then picks among PyTorch's precisions (an explicit int8 is refused by the engine).
    torch_only = compile and backend == "auto" and precision == "auto"
    if compile and resolve_model(model).kind == "export":
        raise ValueError(f"{model} is an ONNX export without PyTorch weights: --compile compiles a PyTorch model; run "
                         "the export without it (ONNX Runtime optimises its graphs itself)")
    choice, device = choose(model, device, "torch" if torch_only else backend, precision)
    loaded, processor = _load(model, device, choice.backend, choice.precision)
    key = (id(loaded), choice, compile)
    if key not in _ENGINES:
        _ENGINES[key] = EmbeddingEngine(loaded, processor, choice, compile=compile)
    return _ENGINES[key]


def _load(model: str | os.PathLike, device: torch.device, backend: str, precision: str) -> tuple[Any, Any]:
    reference = resolve_model(model)
    name = reference.name
    cache_key = (name, str(device), backend, precision if backend == "onnx" else "", _weights_stamp(name))
    if cache_key not in _LOADED:
        from ..processing.feature_extraction_laion_clap import LaionClapFeatureExtractor
        from ..processing.processing_laion_clap import LaionClapProcessor

        with _fetching(reference):
            if reference.kind == "hub":
                _check_hub_model(name)
            if backend == "onnx":
                loaded = OnnxClapModel(name, precision)
            else:
                from ..modeling_clap.modeling_laion_clap import LaionClapModel

                loaded = LaionClapModel.from_pretrained(name).to(device).eval()
            try:
                processor = LaionClapProcessor.from_pretrained(name)
            except (OSError, ValueError, TypeError):
                processor = LaionClapFeatureExtractor.from_pretrained(name)
        _LOADED[cache_key] = (loaded, processor)
    return _LOADED[cache_key]


@contextlib.contextmanager
def _fetching(reference: ModelReference) -> Iterator[None]:
    """Network failures while a Hub model is fetched become one `HubUnreachable` line with the offline route."""
    try:
        yield
    except Exception as error:
        from ..hub_network import HubUnreachable, network_error_line

        line = None if reference.local else network_error_line(error, f"model {reference.name}")
        if line is None or isinstance(error, HubUnreachable):
            raise
        raise HubUnreachable(line) from error


def _check_hub_model(repo_id: str) -> None:
    """Fetch a Hub model's config.json (cached like every file) and refuse what is not a clapforge model, before its
    weights are downloaded; a repo that does not exist is a FileNotFoundError naming it."""
    import json

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError

    try:
        config_file = hf_hub_download(repo_id, "config.json")
    except GatedRepoError as error:
        raise ValueError(f"{repo_id} is a gated repo on the Hub: accept its terms there and log in "
                         "(`hf auth login`)") from error
    except RepositoryNotFoundError as error:
        raise FileNotFoundError(f"no such model folder or Hub repo: {repo_id} (a private repo needs `hf auth "
                                "login`)") from error
    except RemoteEntryNotFoundError as error:
        raise ValueError(f"{repo_id} on the Hub has no config.json: not a model repo") from error
    with open(config_file, encoding="utf-8") as f:
        check_model_config(json.load(f), repo_id)


def has_int8_export(model: str | os.PathLike) -> bool:
    """Whether a local folder is a `clapforge export` with int8 graphs (a Hub id is not looked up: False)."""
    folder = Path(model).expanduser()
    if not (folder / ONNX_DIR / MANIFEST).is_file():
        return False
    try:
        return "int8" in read_manifest(folder).get("precisions", [])
    except (ValueError, OSError):
        return False  # a damaged manifest: the backend that loads it says why, if it is asked for


def _weights_stamp(name: str) -> tuple:
    """Size and modification time of a local folder's weights: a folder written again (a new training run into the
    same output folder) is loaded again, not served stale from the cache. Hub ids: ()."""
    folder = Path(name)
    if not folder.is_dir():
        return ()
    weights = [*folder.glob("*.safetensors"), *folder.glob("onnx/*.onnx")]
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(weights))


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of a loaded model's parameters and buffers (names, dtypes, shapes, bytes): what an index records so that
    embeddings of two models, or of one folder before and after retraining, are never mixed. Independent of where the
    weights came from (a folder, the Hub, a conversion). An ONNX export answers with the hash of the weights it was
    exported from (its manifest), so its embeddings are recorded under the same model."""
    import hashlib

    if hasattr(model, "weights_sha256"):
        return model.weights_sha256

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
