"""Loading a model and its processor: one loader, cached per process and device."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .onnx_backend import ONNX_PRECISIONS, OnnxClapModel

ModelLike = str | os.PathLike | tuple[Any, Any]

_LOADED: dict[tuple[str, str, tuple], tuple[Any, Any]] = {}


def model_reference(model: str | os.PathLike) -> str:
    """How an index records its model: the absolute path of a local folder, else the Hub id as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else str(model)


BACKENDS = ("auto", "torch", "onnx")
# The precisions each backend runs: torch in float32 or under bfloat16 autocast, ONNX Runtime the fp32 graphs or the
# int8 ones (`clapforge export --quantize int8`).
BACKEND_PRECISIONS = {"torch": ("fp32", "bf16"), "onnx": ONNX_PRECISIONS}


def resolve_backend(backend: str, precision: str) -> str:
    """The backend `"auto"` stands for: the one that runs the precision, and PyTorch for fp32.

    From the measurement (benchmarks/RESULTS.md "ONNX backends", 2 AVX2 cores without bf16 kernels): ONNX Runtime's
    fp32 graphs ran the htsat-tiny tower 1.1x faster than PyTorch fp32 eager but `clapforge embed` end to end no
    faster, so fp32 stays in PyTorch (which also runs on GPUs); int8 exists only as ONNX graphs (ONNX Runtime, CPU)
    and bf16 only in PyTorch. An explicit backend is returned as given."""
    if backend != "auto":
        return backend
    return "onnx" if precision == "int8" else "torch"


def check_backend(backend: str, precision: str = "fp32") -> None:
    """Refuse an unknown backend, or a precision the backend does not run, naming what it does run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if not any(precision in runs for runs in BACKEND_PRECISIONS.values()):
            raise ValueError(f"precision must be fp32, bf16 or int8, got {precision!r}")
        return
    if precision not in BACKEND_PRECISIONS[backend]:
        raise ValueError(
            f"precision {precision!r} is not run by the {backend} backend: it runs {BACKEND_PRECISIONS[backend]}"
            + (" (int8 needs --backend onnx and an export made with --quantize int8)" if precision == "int8" else "")
        )


def load_model(
    model: ModelLike, device: str | torch.device | None = None, backend: str = "auto", precision: str = "fp32"
) -> tuple[Any, Any]:
    """(model in eval mode, processor) for a folder or Hub id, cached per process (until the folder's weights change);
    a `(model, processor)` pair is returned as is.

    The processor is a `LaionClapProcessor`, or the bare `LaionClapFeatureExtractor` for a folder saved without a
    tokenizer (enough to embed audio; `tokenizer_of` refuses it for text). `backend="onnx"` loads a folder written by
    `clapforge export` as an `OnnxClapModel` (ONNX Runtime on the CPU) at `precision` "fp32" or "int8"; for torch,
    `precision` is applied when the model runs (bf16 autocast), not here. `"auto"`: see `resolve_backend`.
    """
    if isinstance(model, tuple):
        if len(model) != 2:
            raise ValueError("model must be a folder, a Hub id or a (model, processor) pair")
        return model
    backend = resolve_backend(backend, precision)
    check_backend(backend, precision)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() and backend == "torch" else "cpu"))
    if backend == "onnx" and device.type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU (ONNX Runtime's CPU provider), not on {device}")
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


def _weights_stamp(name: str) -> tuple:
    """Size and modification time of a local folder's weights: a folder written again (a new training run into the
    same output folder) is loaded again, not served stale from the cache. Hub ids: ()."""
    folder = Path(name)
    if not folder.is_dir():
        return ()
    weights = [*folder.glob("*.safetensors"), *folder.glob("onnx/*.onnx")]
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(weights))


def feature_extractor_of(processor: Any) -> Any:
    """The feature extractor of a processor (or the extractor itself)."""
    return getattr(processor, "feature_extractor", processor)


def tokenizer_of(processor: Any) -> Any:
    """The processor, checked to hold a tokenizer (a folder saved without one can only embed audio)."""
    if getattr(processor, "tokenizer", None) is None:
        raise ValueError("this model folder has no tokenizer: text needs a model saved with its tokenizer")
    return processor


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
