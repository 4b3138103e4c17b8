"""Python API: embed audio and text, classify zero-shot, search an embeddings file or a table.

`model` is a clapforge model folder or Hub id (loaded once per process and cached by `inference.loading`), an
already loaded `(model, processor)` pair, or an `EmbeddingEngine`. `precision` is "auto" by default: the fastest
precision whose embeddings stay within cosine 0.999 of fp32 on this machine (bf16 where the device has bf16 kernels,
the int8 ONNX graphs of an export folder on a CPU without them, fp32 otherwise; `inference.precision`); "fp32",
"bf16" and "int8" mean exactly that. `backend` "torch" or "onnx" (a folder written by `clapforge export`) narrows
the choice; "auto" lets the precision decide. What "auto" chose is logged (logger `clapforge.inference.precision`).
Shapes: N clips, T texts, K labels, E joint embedding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..inference.engine import EmbeddingEngine
from ..inference.loading import ModelLike, load_engine, load_model, model_reference, weights_hash
from ..inference.references import resolve_model
from ..inference.zero_shot import zero_shot_probabilities
from ..prompts import DEFAULT_PROMPT
from .embeddings_file import EmbeddingIndex, read_index
from .table import FILES, is_table, open_tables, table_settings
from .table_search import search_table
from .windows import best_window_per_file

__all__ = ["classify", "embed_audio", "embed_text", "load_engine", "load_model", "search"]

AudioLike = str | os.PathLike | np.ndarray | torch.Tensor
ModelOrEngine = ModelLike | EmbeddingEngine


def _as_list(items: Any) -> list[Any]:
    if isinstance(items, str | os.PathLike | bytes):
        return [items]
    if isinstance(items, np.ndarray | torch.Tensor) and items.ndim == 1:
        return [items]
    return list(items)


def embed_audio(
    paths_or_arrays: AudioLike | Sequence[AudioLike],
    model: ModelOrEngine,
    sampling_rate: int | None = None,
    batch_size: int = 16,
    backend: str = "auto",
    precision: str = "auto",
) -> torch.Tensor:
    """(N, E) float32 L2-normalised audio embeddings on the CPU, in input order.

    Paths (any format FFmpeg decodes) are decoded and resampled to the model's rate and downmixed to mono; arrays
    (1-D mono, or (C, T) multi-channel) must come with their `sampling_rate`. A long clip gets the model's own
    whole-file treatment (fusion for fused models, a centred 10 s crop otherwise).
    """
    from ..data.shards import decode_audio

    items = _as_list(paths_or_arrays)
    paths = [i for i, item in enumerate(items) if isinstance(item, str | os.PathLike)]
    arrays = [i for i in range(len(items)) if i not in set(paths)]
    if arrays and sampling_rate is None:
        raise ValueError("arrays need their sampling_rate, e.g. embed_audio(arrays, model, sampling_rate=16000)")
    engine = load_engine(model, backend=backend, precision=precision)
    rate = engine.feature_extractor.sampling_rate
    out = torch.empty(len(items), engine.config.projection_dim)
    if paths:
        clips = (decode_audio(items[i], rate) for i in paths)
        out[paths] = engine.embed_audio(clips, rate, batch_size).cpu()
    if arrays:
        out[arrays] = engine.embed_audio((items[i] for i in arrays), sampling_rate, batch_size).cpu()
    return out


def embed_text(
    texts: str | Sequence[str],
    model: ModelOrEngine,
    batch_size: int = 64,
    backend: str = "auto",
    precision: str = "auto",
) -> torch.Tensor:
    """(T, E) float32 L2-normalised text embeddings on the CPU, in input order."""
    engine = load_engine(model, backend=backend, precision=precision)
    return engine.embed_text([texts] if isinstance(texts, str) else list(texts), batch_size).cpu()


def classify(
    paths_or_arrays: AudioLike | Sequence[AudioLike],
    labels: Sequence[str],
    model: ModelOrEngine,
    prompt: str = DEFAULT_PROMPT,
    sampling_rate: int | None = None,
    batch_size: int = 16,
    backend: str = "auto",
    precision: str = "auto",
) -> torch.Tensor:
    """(N, K) zero-shot probabilities: softmax over labels of `logit_scale_a.exp() * cosine(audio, prompt(label))`
    (`inference.zero_shot`)."""
    if not labels:
        raise ValueError("classify needs at least one label")
    engine = load_engine(model, backend=backend, precision=precision)
    audio = embed_audio(paths_or_arrays, engine, sampling_rate=sampling_rate, batch_size=batch_size)  # (N, E)
    return zero_shot_probabilities(engine, audio, list(labels), [prompt]).cpu()  # (N, K)


def search(
    index: EmbeddingIndex | str | os.PathLike,
    text: str | None = None,
    audio: AudioLike | None = None,
    model: ModelOrEngine | None = None,
    top_k: int = 10,
    windows: bool = False,
    sampling_rate: int | None = None,
    where: str | None = None,
    exact: bool = False,
    backend: str = "auto",
    precision: str = "auto",
    allow_other_model: bool = False,
) -> list[dict[str, Any]]:
    """Nearest files of an embeddings file or a LanceDB table (OUT.lance) by cosine similarity to a text or audio query.

    `model` defaults to the one the index was made with (recorded at embed time). Another `model` must have the same
    weights (`_query_model`: an ONNX export of the index's model, a copy of its folder, the same weights on the Hub);
    one with other weights is refused, naming both, unless `allow_other_model` (scores of two models mean nothing).
    With `windows=True` (an index made with `--window`), files are ranked by their best-matching window, and each
    result says where it is (`start`, `end` in seconds). Returns [{"rank", "score", "key"(, "start", "end")}], best
    first; a table's results also carry "path" and "duration". On a table, `where` is a LanceDB SQL filter (e.g.
    "duration > 5", "key LIKE 'birds/%'") applied before the top k, and the search uses the table's ANN index when it
    has one (`clapforge index build`) unless `exact`. `backend`/`precision` embed the query (see the module docstring).
    """
    if (text is None) == (audio is None):
        raise ValueError("search needs exactly one query: text or audio")
    if not isinstance(index, EmbeddingIndex) and is_table(index):
        settings = table_settings(open_tables(index)[FILES])
        model = _query_model(index, model, settings.get("model"), settings.get("model_hash"), backend, precision,
                             allow_other_model)
        query = _query(text, audio, model, sampling_rate, backend, precision)
        return search_table(index, query.numpy(), top_k=top_k, where=where, exact=exact, windows=windows)
    if where is not None:
        raise ValueError("filters (where) need a LanceDB table: embed into OUT.lance")
    label = "the index" if isinstance(index, EmbeddingIndex) else index
    if not isinstance(index, EmbeddingIndex):
        index = read_index(index)
    model = _query_model(label, model, index.metadata.get("model"), index.metadata.get("model_hash"), backend,
                         precision, allow_other_model)
    query = _query(text, audio, model, sampling_rate, backend, precision)
    if windows:
        if not index.has_windows:
            raise ValueError("this index has no windows: make it with `clapforge embed --window`")
        scores = torch.nn.functional.normalize(index.window_embeddings.float(), dim=-1) @ query  # (M,)
        best, where_ = best_window_per_file(scores, index.window_rows, len(index))  # (N,), (N,)
        order = best.argsort(descending=True, stable=True)[:top_k]
        return [
            {"rank": rank + 1, "score": float(best[i]), "key": index.keys[i],
             "start": float(index.window_bounds[where_[i], 0]), "end": float(index.window_bounds[where_[i], 1])}
            for rank, i in enumerate(order.tolist())
        ]
    scores = torch.nn.functional.normalize(index.embeddings.float(), dim=-1) @ query  # (N,)
    order = scores.argsort(descending=True, stable=True)[:top_k]
    return [{"rank": rank + 1, "score": float(scores[i]), "key": index.keys[i]}
            for rank, i in enumerate(order.tolist())]


def _query_model(index: Any, model: ModelOrEngine | None, recorded: str | None, recorded_hash: str | None,
                 backend: str, precision: str, allow_other_model: bool) -> ModelOrEngine | None:
    """The model to embed the query with: the index's own (`recorded`) unless `model` is given; a given model only if
    it is the index's model or `allow_other_model`.

    The rule: a model is the index's when its name is the recorded one (`model_reference`: a folder's absolute path,
    a Hub id as given), or else when its weights hash (`weights_hash`: an ONNX export answers with the hash of the
    weights it was exported from) equals the index's. A table records that hash (`model_hash`); an embeddings file
    records only the name, so the recorded model is loaded to hash it when it is a local folder still there. When the
    weights differ, or cannot be compared (a file whose model is a Hub id, or gone), the search is refused in one
    line naming both models. Same name is trusted: a folder retrained in place is caught by `embed`, not here."""
    if model is None or not (recorded or recorded_hash) or allow_other_model:
        return model or recorded
    if isinstance(model, str | os.PathLike) and recorded and model_reference(model) == recorded:
        return model
    engine = load_engine(model, backend=backend, precision=precision)
    given = weights_hash(engine.model)
    if recorded_hash is None:
        recorded_hash = _local_weights_hash(recorded)
    if given == recorded_hash:
        return engine
    name = str(model) if isinstance(model, str | os.PathLike) else f"the given {type(model).__name__}"
    theirs = f"weights {recorded_hash[:12]}" if recorded_hash else "weights unknown here"
    raise ValueError(f"{index} was embedded with model {recorded!r} ({theirs}), not with {name!r} (weights "
                     f"{given[:12]}): scores of two models are not comparable. Omit the model to search with the "
                     "index's own, or pass --allow-other-model (allow_other_model=True) to rank anyway")


def _local_weights_hash(recorded: str | None) -> str | None:
    """The weights hash of an index's recorded model when it is a local folder still there, else None. Loaded with
    the backend that folder runs in (not the query's: an index made with PyTorch may be searched through an export)."""
    if not recorded:
        return None
    try:
        if not resolve_model(recorded).local:
            return None  # the Hub is not asked: a search refused for want of the network would be worse
    except (FileNotFoundError, ValueError):
        return None
    return weights_hash(load_engine(recorded, precision="fp32").model)


def _query(text: str | None, audio: AudioLike | None, model: ModelOrEngine | None, sampling_rate: int | None,
           backend: str, precision: str) -> torch.Tensor:
    """(E,) L2-normalised embedding of the text or audio query."""
    if not model:
        raise ValueError("the index does not record its model; pass one (--model)")
    if text is not None:
        query = embed_text([text], model, backend=backend, precision=precision)[0]  # (E,)
    else:
        query = embed_audio([audio], model, sampling_rate=sampling_rate, backend=backend, precision=precision)[0]
    return torch.nn.functional.normalize(query, dim=0)
