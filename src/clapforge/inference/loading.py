"""Loading a model and its processor (one loader, cached per process and device), and the embedding engine over them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .engine import EmbeddingEngine, feature_extractor_of, tokenizer_of
from .onnx_backend import MANIFEST, ONNX_DIR, OnnxClapModel, read_manifest
from .precision import BACKENDS, PrecisionChoice, check_backend, choose_precision

ModelLike = str | os.PathLike | tuple[Any, Any]

_LOADED: dict[tuple, tuple[Any, Any]] = {}
_ENGINES: dict[tuple, EmbeddingEngine] = {}


def model_reference(model: str | os.PathLike) -> str:
    """How an index records its model: the absolute path of a local folder, else the Hub id as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else str(model)


__all__ = ["BACKENDS", "check_backend", "feature_extractor_of", "load_engine", "load_model", "model_reference",
           "tokenizer_of", "weights_hash"]

def choose(
    model: str | os.PathLike, device: str | torch.device | None = None, backend: str = "auto", precision: str = "auto"
) -> tuple[PrecisionChoice, torch.device]:
    """The precision and backend `load_engine` runs a folder or Hub id with, and the device (see
    `inference.precision.choose_precision`); refuses a backend that cannot run an explicit precision."""
    check_backend(backend, precision)
    wants_gpu = backend != "onnx" and precision != "int8"
    device = torch.device(device or ("cuda" if torch.cuda.is_available() and wants_gpu else "cpu"))
    choice = choose_precision(precision, device, backend, int8_export=has_int8_export(model))
    check_backend(choice.backend, choice.precision)
    if choice.backend == "onnx" and device.type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU (ONNX Runtime's CPU provider), not on {device}")
    return choice, device


def load_model(
    model: ModelLike, device: str | torch.device | None = None, backend: str = "auto", precision: str = "fp32"
) -> tuple[Any, Any]:
    """(model in eval mode, processor) for a folder or Hub id, cached per process (until the folder's weights change);
    a `(model, processor)` pair is returned as is.

    The processor is a `LaionClapProcessor`, or the bare `LaionClapFeatureExtractor` for a folder saved without a
    tokenizer (enough to embed audio). The model is a `LaionClapModel` in PyTorch, or an `OnnxClapModel` (ONNX Runtime
    on the CPU) for a folder written by `clapforge export` when the backend is onnx: asked for, or chosen by
    `precision` (int8, or "auto" on a CPU without bf16 kernels beside an int8 export). A precision is applied when
    the model runs (`load_engine` and its `EmbeddingEngine`), not here.
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
    choice, device = choose(model, device, "torch" if torch_only else backend, precision)
    loaded, processor = _load(model, device, choice.backend, choice.precision)
    key = (id(loaded), choice, compile)
    if key not in _ENGINES:
        _ENGINES[key] = EmbeddingEngine(loaded, processor, choice, compile=compile)
    return _ENGINES[key]


def _load(model: str | os.PathLike, device: torch.device, backend: str, precision: str) -> tuple[Any, Any]:
    name = model_reference(model)
    cache_key = (name, str(device), backend, precision if backend == "onnx" else "", _weights_stamp(name))
    if cache_key not in _LOADED:
        from ..processing.feature_extraction_laion_clap import LaionClapFeatureExtractor
        from ..processing.processing_laion_clap import LaionClapProcessor

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
