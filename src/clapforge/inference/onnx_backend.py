"""The ONNX Runtime backend: the graphs `clapforge export MODEL OUT --format onnx` writes, run as a CLAP model.

An export folder holds the model's config.json and processor files (feature extractor, tokenizer) beside
`onnx/` with the two towers as separate graphs, named as transformers.js expects them:
- `audio_model.onnx`: input_features (B, C, T, F) float32, is_longer (B, 1) bool (fused models only: an unfused
  graph has no use for it and declares no such input) -> audio_embeds (B, E), L2-normalised;
- `text_model.onnx`: input_ids, attention_mask (B, L) int64 -> text_embeds (B, E), L2-normalised;
- `*_quantized.onnx`: the same graphs with int8 weights (`--quantize int8`; precision int8 runs the int8 audio graph
  with the fp32 text graph, see `graph_precision`);
- `manifest.json`: what was exported from which weights, how, and how closely it matched PyTorch.

`OnnxClapModel` answers `get_audio_embeds` / `get_text_embeds` with torch tensors, as `LaionClapModel` does, so every
embedding job (`inference.embedding`, `tools.embed`, the Python API) runs it unchanged. Features and tokens still
come from the processor. Shapes: B batch, C channels, T frames, F mel bins, L tokens, E joint embedding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

ONNX_DIR = "onnx"
MANIFEST = "manifest.json"
ONNX_PRECISIONS = ("fp32", "int8")
MANIFEST_KEYS = ("format", "opset", "weights_sha256", "enable_fusion", "logit_scale_a", "precisions", "graphs")
# The file of each tower at each precision, inside ONNX_DIR.
GRAPH_FILES = {
    ("audio", "fp32"): "audio_model.onnx",
    ("text", "fp32"): "text_model.onnx",
    ("audio", "int8"): "audio_model_quantized.onnx",
    ("text", "int8"): "text_model_quantized.onnx",
}


def graph_precision(tower: str, precision: str) -> str:
    """The graph a tower runs at `precision`: int8 runs the int8 audio graph but the fp32 text graph. Text is cheap
    (prompts and queries, a few per job) and its int8 graph cost the demo model's MiniLM captions a cosine of 0.94 to
    fp32, the audio graph 0.9999 (benchmarks/RESULTS.md "ONNX backends"); `text_model_quantized.onnx` is still
    written, for runtimes that want the smaller file."""
    return "fp32" if tower == "text" else precision


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / ONNX_DIR / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not an ONNX export: it has no {ONNX_DIR}/{MANIFEST} "
            "(write one with `clapforge export MODEL OUT --format onnx`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): export again") from error
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"{path} lacks {missing}: written by another tool or an older clapforge; export again")
    return manifest


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime settings for this machine: `threads` intra-op threads (default: torch's count, which `--threads`
    and OMP_NUM_THREADS set), one inter-op thread, full graph optimisation, and no spinning: idle ORT threads that
    spin would hold the cores the decoding workers use between two model calls (`tools.embed`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for one graph file, with errors that name the file and the way out."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ImportError("the onnx backend needs onnxruntime: pip install 'onnxruntime==1.32.0'") from error
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: export again with `clapforge export MODEL OUT --format onnx`")
    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own exception types (Fail, InvalidGraph, NotImplemented, ...)
        raise ValueError(
            f"ONNX Runtime {ort.__version__} cannot load {path} ({type(error).__name__}: {error}); a graph exported "
            "with a newer opset or a damaged file: export again (`--opset 17` is understood by ONNX Runtime >= 1.11)"
        ) from error


class OnnxClapModel(torch.nn.Module):
    """A CLAP model whose towers run in ONNX Runtime sessions (opened at first use: text-only work never loads the
    audio graph). A `torch.nn.Module` without parameters, so that the embedding engine can treat it as a model."""

    is_onnx = True  # what `EmbeddingEngine.wrap` reads: this model runs on the onnx backend

    def __init__(self, folder: str | os.PathLike, precision: str = "fp32", threads: int | None = None) -> None:
        super().__init__()
        from ..modeling_clap.configuration_laion_clap import LaionClapConfig

        if precision not in ONNX_PRECISIONS:
            raise ValueError(f"the onnx backend runs precision {ONNX_PRECISIONS}, got {precision!r}")
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.precision = precision
        self.threads = threads
        self.config = LaionClapConfig.from_pretrained(folder)
        self._sessions: dict[str, Any] = {}
        # As `LaionClapModel.logit_scale_a`: zero-shot classification scales cosines by its exponential.
        self.logit_scale_a = torch.tensor(float(self.manifest["logit_scale_a"]))
        exported = self.manifest.get("precisions", ["fp32"])
        if precision not in exported:
            raise ValueError(
                f"{folder} was exported at precision {exported}, not {precision!r}: export with `--quantize int8`"
            )

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def weights_sha256(self) -> str:
        """The hash of the PyTorch weights this export was made from (`inference.loading.weights_hash`)."""
        return self.manifest["weights_sha256"]

    def session(self, tower: str) -> Any:
        if tower not in self._sessions:
            path = self.folder / ONNX_DIR / GRAPH_FILES[(tower, graph_precision(tower, self.precision))]
            self._sessions[tower] = open_session(path, self.threads)
        return self._sessions[tower]

    def get_audio_embeds(self, input_features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T, F) log-mel -> (B, E) L2-normalised audio embeddings."""
        from ..modeling_clap.modeling_fusion import longer_clips

        enable_fusion = self.config.audio_config.enable_fusion
        longer_clips(input_features, is_longer, enable_fusion)  # refuses features of the other mode, as PyTorch does
        session = self.session("audio")
        declared = session.get_inputs()[0].shape  # [batch, C, T, F]
        if list(input_features.shape[1:]) != list(declared[1:]):
            raise ValueError(
                f"{self.folder}: the audio graph takes input_features of shape (batch, "
                f"{', '.join(map(str, declared[1:]))}), got {tuple(input_features.shape)}: use the processor saved "
                "with the export"
            )
        feed = {"input_features": _numpy(input_features, np.float32)}
        if enable_fusion:
            longer = torch.zeros(len(input_features), 1, dtype=torch.bool) if is_longer is None else is_longer
            feed["is_longer"] = _numpy(longer.reshape(-1, 1), np.bool_)
        return torch.from_numpy(session.run(["audio_embeds"], feed)[0])  # (B, E)

    def get_text_embeds(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) token ids -> (B, E) L2-normalised text embeddings. `token_type_ids` are all zeros for one sentence
        and the graph uses the encoder's default: they are accepted and not fed."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        feed = {"input_ids": _numpy(input_ids, np.int64), "attention_mask": _numpy(attention_mask, np.int64)}
        return torch.from_numpy(self.session("text").run(["text_embeds"], feed)[0])  # (B, E)


def _numpy(tensor: torch.Tensor, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy().astype(dtype, copy=False))
