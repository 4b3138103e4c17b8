"""int8 versions of exported graphs, by ONNX Runtime's quantisation tools.

Two methods, both with int8 weights (per output channel):
- "dynamic": activations quantised at run time from each batch's own range (`quantize_dynamic`, MatMul/Gemm);
- "static": activations quantised with ranges calibrated once on sample inputs (`quantize_static`, QDQ format),
  from clips and captions of the built-in synthetic corpus, so that no user data is needed.
Their accuracy and speed are compared in benchmarks/RESULTS.md ("ONNX backends"); `DEFAULT_METHOD` follows it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path

METHODS = ("dynamic", "static")
DEFAULT_METHOD = "dynamic"
CALIBRATION_CLIPS = 32


def quantize_graph(src: Path, dst: Path, method: str, calibration: list[dict[str, np.ndarray]] | None = None) -> None:
    """Write the int8 version of graph `src` at `dst` (atomically). `calibration`: input batches, for "static"."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ValueError(f"quantisation method must be one of {METHODS}, got {method!r}")
    with tempfile.TemporaryDirectory() as scratch, atomic_path(dst) as tmp:
        # Shape inference and graph folding first, as ONNX Runtime recommends: quantisation then sees fused ops.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        if method == "dynamic":
            quantize_dynamic(prepared, tmp, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                             weight_type=QuantType.QInt8)
        else:
            if not calibration:
                raise ValueError("static quantisation needs calibration inputs")
            quantize_static(prepared, tmp, _Batches(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["MatMul", "Gemm", "Conv"])


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = batches
        self._iter: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def calibration_inputs(processor: Any, tower: str, input_names: set[str], clips: int = CALIBRATION_CLIPS,
                       batch_size: int = 4) -> list[dict[str, np.ndarray]]:
    """Input batches for static calibration: rendered clips (or their captions) of the synthetic corpus."""
    from ..data.synth import plan_corpus, render_spec

    specs = plan_corpus(clips, seed=1234)
    batches = []
    for start in range(0, len(specs), batch_size):
        chunk = specs[start : start + batch_size]
        if tower == "audio":
            extractor = getattr(processor, "feature_extractor", processor)
            audio = [render_spec(spec, extractor.sampling_rate) for spec in chunk]
            features = extractor(audio, sampling_rate=extractor.sampling_rate, return_tensors="pt")
            inputs = {"input_features": features["input_features"], "is_longer": features["is_longer"].reshape(-1, 1)}
        else:
            inputs = dict(processor(text=[spec.captions[0] for spec in chunk]))
        batches.append({k: v.numpy() for k, v in inputs.items() if k in input_names})
    return batches
