"""The two towers of a CLAP model as ONNX graphs, and the check that ONNX Runtime computes what PyTorch computes.

Export goes through torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): the dynamo
exporter of torch 2.14 fails on HTS-AT's window attention (a reshape of a transposed SDPA output is decomposed into
an invalid view). Fusion exports for any mix of long and short clips: under export, `modeling_fusion` fuses every
clip and selects the fused map of the longer ones, the same numbers clip by clip.

Shapes: B batch, C channels, T frames, F mel bins, L tokens, E joint embedding.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path

# Opsets ONNX Runtime 1.32 runs and torch's exporter writes; 17 is the default: LayerNormalization is one op from 17
# on, and ONNX Runtime >= 1.11 (and onnxruntime-web) understand it.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 14, 20
# Below this cosine to PyTorch an fp32 export is wrong, not rounded differently: the export is refused.
FP32_MIN_COSINE = 0.9999
SAMPLE_CAPTIONS = ["a dog barks twice", "rain falls on a tin roof while thunder rolls far away"]


class TowerGraph(torch.nn.Module):
    """One tower of a CLAP model as the module the exporter traces: `get_audio_embeds` (input_features (B, C, T, F),
    is_longer (B, 1) -> audio_embeds (B, E)) or `get_text_embeds` (input_ids, attention_mask (B, L) -> text_embeds)."""

    def __init__(self, model: torch.nn.Module, tower: str) -> None:
        super().__init__()
        self.model, self.method = model, f"get_{tower}_embeds"

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(*inputs)


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET} (default {DEFAULT_OPSET}), got {opset}")
    return opset


def sample_clips(sampling_rate: int, seconds: tuple[float, ...] = (14.0, 3.0)) -> list[np.ndarray]:
    """Deterministic test audio (tones with a little noise): by default one clip longer than 10 s and one shorter,
    so that a fused model's export and check cover both paths."""
    rng = np.random.default_rng(0)
    clips = []
    for i, s in enumerate(seconds):
        t = np.arange(int(s * sampling_rate)) / sampling_rate
        wave = 0.4 * np.sin(2 * np.pi * (220 + 170 * i) * t * (1 + 0.1 * t)) + 0.05 * rng.standard_normal(t.shape)
        clips.append(wave.astype(np.float32))
    return clips


def audio_sample(processor: Any, clips: list[np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    extractor = getattr(processor, "feature_extractor", processor)
    clips = clips if clips is not None else sample_clips(extractor.sampling_rate)
    features = extractor(clips, sampling_rate=extractor.sampling_rate, return_tensors="pt")
    return {"input_features": features["input_features"], "is_longer": features["is_longer"].reshape(-1, 1)}


def text_sample(processor: Any, captions: list[str] | None = None) -> dict[str, torch.Tensor]:
    tokens = processor(text=captions or SAMPLE_CAPTIONS)
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def export_tower(model: torch.nn.Module, tower: str, sample: dict[str, torch.Tensor], path: Path, opset: int) -> None:
    """Write one tower (`"audio"` or `"text"`) as an ONNX graph at `path`, atomically; batch (and text length) are
    dynamic."""
    if tower == "audio":
        output = "audio_embeds"
        axes = {"input_features": {0: "batch"}, "is_longer": {0: "batch"}, output: {0: "batch"}}
    else:
        output = "text_embeds"
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                output: {0: "batch"}}
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about every Python `if` on a shape; the graph is checked against PyTorch right after.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TowerGraph(model, tower).eval(), tuple(sample.values()), str(tmp), input_names=list(sample),
            output_names=[output], dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True,
        )


def run_graph(session: Any, sample: dict[str, torch.Tensor]) -> np.ndarray:
    """An ONNX Runtime session on the sample inputs it declares (an unfused audio graph has no is_longer)."""
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v.numpy() for k, v in sample.items() if k in names})[0]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) row-wise cosine similarity of two (N, E) arrays."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def parity(model: torch.nn.Module, tower: str, session: Any, sample: dict[str, torch.Tensor]) -> dict[str, float]:
    """min cosine and max absolute difference of the graph's embeddings to PyTorch's on `sample`, batched and one
    row at a time (a graph that only holds for the traced batch size shows up here)."""
    embed = model.get_audio_embeds if tower == "audio" else model.get_text_embeds
    with torch.no_grad():
        reference = embed(*sample.values()).numpy()  # (B, E)
    rows = [run_graph(session, {k: v[i : i + 1] for k, v in sample.items()}) for i in range(len(reference))]
    worst_cos, worst_diff = 1.0, 0.0
    for got in (run_graph(session, sample), np.concatenate(rows)):
        worst_cos = min(worst_cos, float(cosines(reference, got).min()))
        worst_diff = max(worst_diff, float(np.abs(reference - got).max()))
    return {"min_cosine": worst_cos, "max_abs_diff": worst_diff}
