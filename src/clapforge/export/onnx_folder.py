"""`clapforge export MODEL OUT --format onnx`: a model folder (or Hub id) -> a folder ONNX Runtime serves without
PyTorch's model code: config, processor files, `onnx/` graphs (`inference.onnx_backend` has the layout), a manifest
and a model card.

Every graph is checked against PyTorch on clips longer and shorter than 10 s (and captions of two lengths) before
the folder is committed; the manifest records the figures. The folder is built beside OUT and renamed into place
(a failed export leaves OUT as it was). OUT may be MODEL itself: then only its `onnx/` folder is (re)written, and one
Hub repo then serves both backends, as transformers.js repos do.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_text
from ..inference.onnx_backend import GRAPH_FILES, MANIFEST, ONNX_DIR, open_session
from .onnx_graphs import (
    DEFAULT_OPSET,
    FP32_MIN_COSINE,
    audio_sample,
    check_opset,
    export_tower,
    parity,
    text_sample,
)
from .quantize import DEFAULT_METHOD, METHODS, calibration_inputs, quantize_graph

FORMATS = ("onnx",)
QUANTIZE = ("int8",)


def export_model(
    model: str | Path,
    out: str | Path,
    format: str = "onnx",
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    method: str = DEFAULT_METHOD,
    log: Any = print,
) -> dict[str, Any]:
    """Export `model` to `out` (see the module docstring); returns the manifest. `quantize="int8"` adds int8 graphs
    made by `method` ("dynamic" or "static", see `export.quantize`)."""
    import onnx
    import onnxruntime
    import torch

    from ..inference.loading import load_model, model_reference, weights_hash

    if format not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {format!r}")
    if quantize not in (None, *QUANTIZE):
        raise ValueError(f"--quantize must be one of {QUANTIZE}, got {quantize!r}")
    if method not in METHODS:
        raise ValueError(f"--method must be one of {METHODS}, got {method!r}")
    check_opset(opset)
    out = Path(out).absolute()
    in_place = Path(model).is_dir() and Path(model).resolve() == out.resolve()
    loaded, processor = load_model(model, device="cpu")
    has_tokenizer = getattr(processor, "tokenizer", None) is not None

    manifest: dict[str, Any] = {
        "format": "onnx",
        "opset": opset,
        "source_model": model_reference(model),
        "weights_sha256": weights_hash(loaded),
        "enable_fusion": bool(loaded.config.audio_config.enable_fusion),
        "projection_dim": int(loaded.config.projection_dim),
        "logit_scale_a": float(loaded.logit_scale_a.detach()),  # log of zero-shot's inverse temperature
        "precisions": ["fp32"] + ([quantize] if quantize else []),
        "quantization": {"method": method, "weights": "int8 per channel"} if quantize else None,
        "graphs": {},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    stage = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=_parent(out)))
    stage.chmod(0o755)  # mkdtemp's 0700 would become the export folder's mode
    try:
        graphs = stage / ONNX_DIR
        graphs.mkdir()
        towers = ["audio"] + (["text"] if has_tokenizer else [])
        if not has_tokenizer:
            log(f"{model} has no tokenizer: exporting the audio tower only (text needs a folder with a tokenizer)")
        for tower in towers:
            sample = audio_sample(processor) if tower == "audio" else text_sample(processor)
            path = graphs / GRAPH_FILES[(tower, "fp32")]
            log(f"exporting the {tower} tower to {ONNX_DIR}/{path.name} (opset {opset})")
            export_tower(loaded, tower, sample, path, opset)
            session = open_session(path)
            check = parity(loaded, tower, session, sample)
            if check["min_cosine"] < FP32_MIN_COSINE:
                raise ValueError(f"the exported {tower} graph does not match PyTorch (min cosine "
                                 f"{check['min_cosine']:.6f} < {FP32_MIN_COSINE}): not written")
            manifest["graphs"][f"{tower}_fp32"] = _graph_entry(path, session, check)
            if quantize:
                int8_path = graphs / GRAPH_FILES[(tower, quantize)]
                log(f"quantising the {tower} tower to int8 ({method}) -> {ONNX_DIR}/{int8_path.name}")
                names = {i.name for i in session.get_inputs()}
                calibration = calibration_inputs(processor, tower, names) if method == "static" else None
                quantize_graph(path, int8_path, method, calibration)
                int8_session = open_session(int8_path)
                manifest["graphs"][f"{tower}_{quantize}"] = _graph_entry(
                    int8_path, int8_session, parity(loaded, tower, int8_session, sample))
        atomic_write_json(graphs / MANIFEST, manifest)
        if not in_place:
            loaded.config.save_pretrained(stage)
            processor.save_pretrained(stage)
            atomic_write_text(stage / "README.md", onnx_card(out.name, manifest, has_tokenizer))
        _commit(stage, out, in_place)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return manifest


def _parent(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent


def _commit(stage: Path, out: Path, in_place: bool) -> None:
    """Move the staged export into place; whatever it replaces is moved aside first and deleted last."""
    target, source = (out / ONNX_DIR, stage / ONNX_DIR) if in_place else (out, stage)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
        target.rename(old / target.name)
    source.rename(target)
    for leftover in (old, stage if in_place else None):
        if leftover is not None:
            shutil.rmtree(leftover, ignore_errors=True)


def _graph_entry(path: Path, session: Any, check: dict[str, float]) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {
        "file": f"{ONNX_DIR}/{path.name}",
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
        "inputs": {i.name: {"shape": i.shape, "type": i.type} for i in session.get_inputs()},
        "outputs": {o.name: {"shape": o.shape, "type": o.type} for o in session.get_outputs()},
        "parity_to_pytorch": check,
    }


def onnx_card(name: str, manifest: dict[str, Any], has_tokenizer: bool) -> str:
    """The README.md of an export folder: what is in it, how it was checked, how to run it."""
    rows = "\n".join(
        f"| `{g['file']}` | {g['bytes'] / 1e6:.1f} MB | {', '.join(g['inputs'])} -> {', '.join(g['outputs'])} | "
        f"{g['parity_to_pytorch']['min_cosine']:.6f} |"
        for g in manifest["graphs"].values()
    )
    fused = manifest["enable_fusion"]
    int8 = " --precision int8" if "int8" in manifest["precisions"] else ""
    text_note = "" if has_tokenizer else "\nThis export has no tokenizer and no text graph: it embeds audio only.\n"
    return f"""---
library_name: onnx
tags: [clap, clapforge, onnx, audio, zero-shot-audio-classification]
pipeline_tag: zero-shot-audio-classification
---

# {name} (ONNX)

The two towers of the CLAP model `{manifest['source_model']}` as ONNX graphs (opset {manifest['opset']}), exported by
clapforge from weights with sha256 `{manifest['weights_sha256'][:16]}...`. Embeddings are L2-normalised, so a dot
product is a cosine similarity.

| file | size | inputs -> outputs | min cosine to PyTorch fp32 |
|---|---|---|---|
{rows}
{text_note}
Features: `input_features` are the log-mel features of this folder's feature extractor
(`preprocessor_config.json`, {'4 channels: the whole clip and three 10 s crops, fused for clips longer than 10 s'
if fused else '1 channel'}); `is_longer` (B, 1) bool marks the clips longer than 10 s{'' if fused else
' (this unfused graph takes no `is_longer`)'}. Text: `input_ids` and `attention_mask` from this folder's tokenizer, at
most 77 tokens.

## Use

```bash
pip install clapforge
clapforge embed {name} my_sounds/ sounds.parquet --backend onnx{int8}
clapforge classify {name} dog.wav --labels "dog,cat,rain" --backend onnx
```

Without clapforge (features from clapforge's processor code, `trust_remote_code`, or your own port of it):

```python
import onnxruntime as ort
audio = ort.InferenceSession("{name}/onnx/audio_model.onnx")
embeds = audio.run(["audio_embeds"], {{"input_features": features{', "is_longer": is_longer' if fused else ''}}})[0]
```

`onnx/manifest.json` lists every file with its sha256, its inputs and outputs, and how it matched PyTorch.
"""
