"""What both outputs of `clapforge embed` share (`tools.embed_file`: an embeddings file; `tools.embed_table`: a
LanceDB table): the options, the report, the launch, the settings a run records, the part files, and the one loop that
decodes, featurises and embeds the inputs of some parts.

Shapes: B files in a batch, M windows, E joint embedding.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path
from ..inference.engine import EmbeddingEngine
from ..inference.precision import PrecisionChoice
from .embed_inputs import AudioItems, Featurize, Item

# Hidden test hook: seconds the main process sleeps after writing each part, so a test can kill a run in between.
TEST_SLEEP_ENV = "CLAPFORGE_EMBED_TEST_SLEEP"


@dataclass(frozen=True)
class EmbedOptions:
    """How to read the inputs and run the model: `embed_files`'s keyword arguments, passed on as one value."""

    batch_size: int = 16
    num_workers: int = 0
    window: bool = False
    part_size: int = 256
    dataset: bool = False
    audio_column: str = "audio"
    split: str = "train"
    key_column: str | None = None
    overwrite: bool = False
    progress: bool = True
    precision: str = "auto"
    compile: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.part_size < 1:
            raise ValueError("batch_size and part_size must be at least 1")


@dataclass
class EmbedReport:
    out: Path
    embedded: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    computed: int = 0  # items this run read, embedded or found unreadable (not reused from part files or the table)
    removed: int = 0  # table rows of files no longer in the input, deleted by this run
    up_to_date: bool = False
    main_process: bool = True  # False on the other ranks of a launch, which print nothing
    precision: PrecisionChoice | None = None  # what the embeddings were computed at, and why


def launch_state() -> Any:
    """accelerate's process state: one process, or every process of an `accelerate launch`."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState (unlike Accelerator) ignores ACCELERATE_USE_CPU; without it a CPU launch gives N lone processes.
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def load_run_engine(model: str | os.PathLike, options: EmbedOptions, device: torch.device) -> EmbeddingEngine:
    from ..inference.loading import load_engine

    return load_engine(model, device=device, backend=options.backend, precision=options.precision,
                       compile=options.compile)


def run_settings(model: str | os.PathLike, engine: EmbeddingEngine, options: EmbedOptions) -> dict[str, Any]:
    """What an output records of its run, and what a rerun must match to reuse it."""
    from ..inference.loading import model_reference

    fe = engine.feature_extractor
    return {
        "model": model_reference(model),
        "embedding_dim": int(engine.config.projection_dim),
        "sampling_rate": int(fe.sampling_rate),
        "truncation": fe.truncation,
        "window": bool(options.window),
        "window_s": fe.nb_max_samples / fe.sampling_rate if options.window else None,
        # The precision the embeddings were computed at ("auto" resolved): bf16 and int8 embeddings differ slightly
        # from fp32 ones, and one output never mixes them. The backend is not recorded: ONNX Runtime's fp32 graphs
        # give PyTorch's fp32 embeddings (cosine > 0.99999).
        "precision": engine.precision,
    }


# ---------------------------------------------------------------------------------------------------- part files


def part_path(parts_dir: Path, part: int) -> Path:
    return parts_dir / f"part-{part:05d}.parquet"


def part_keys(path: Path) -> list[str] | None:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=["key"]).column("key").to_pylist()
    except (OSError, ValueError, KeyError):
        return None  # unreadable: done again


def write_part(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    f32 = pa.list_(pa.float32())
    table = pa.table({
        "index": pa.array([r["index"] for r in rows], type=pa.int64()),
        "key": pa.array([r["key"] for r in rows], type=pa.string()),
        "embedding": pa.array([r.get("embedding") for r in rows], type=f32),
        "duration": pa.array([r.get("duration") for r in rows], type=pa.float64()),
        "error": pa.array([r.get("error") for r in rows], type=pa.string()),
        "window_start": pa.array([r.get("window_start", []) for r in rows], type=pa.list_(pa.float64())),
        "window_end": pa.array([r.get("window_end", []) for r in rows], type=pa.list_(pa.float64())),
        "window_embeddings": pa.array([r.get("window_embeddings", []) for r in rows], type=pa.list_(f32)),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)



# ---------------------------------------------------------------------------------------------------- the loop


def embed_parts(
    engine: EmbeddingEngine,
    reader: Any,
    parts: dict[int, list[Item]],
    on_part: Callable[[int, list[dict[str, Any]]], None],
    options: EmbedOptions,
    bar: Any = None,
    start_method: str | None = None,
) -> None:
    """Embed the items of `parts` (part number -> its items, in order) and hand each part's rows, in item order, to
    `on_part(part, rows)` as soon as the part is complete: the one loop behind every output (a part file, a table).

    A row is {"index", "key"} plus "embedding" and "duration" (and the window fields in window mode), or "error".
    Batches never straddle parts, so a part's floating-point results do not depend on which run or rank made it.
    `start_method` starts the decoding workers another way than the platform's default (see `embed_table`).
    """
    todo = [item for items in parts.values() for item in items]
    if not todo:
        return
    batch_size, num_workers, fe = options.batch_size, options.num_workers, engine.feature_extractor
    batches, start = [], 0
    for items in parts.values():
        n = len(items)
        batches += [list(range(start + b, start + min(b + batch_size, n))) for b in range(0, n, batch_size)]
        start += n
    # On a CPU, workers decoding while the model runs take a core from one of its threads, and the others then
    # wait for it at every op: the model step slows by more than the work the worker does. So workers wait while
    # the model runs and use every core between its steps (benchmarks/RESULTS.md "Embed").
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # The server imports the workers' code once; each worker is then a fork of it, not a fresh interpreter.
        context.set_forkserver_preload([AudioItems.__module__])
    model_idle = context.Event() if engine.device.type == "cpu" and num_workers > 0 else None
    if model_idle is not None:
        model_idle.set()
    loader = torch.utils.data.DataLoader(
        AudioItems(todo, reader, fe.sampling_rate, model_idle),
        batch_sampler=batches,
        collate_fn=Featurize(fe, options.window, model_idle),
        num_workers=num_workers,
        multiprocessing_context=context if num_workers > 0 else None,
    )
    sleep = float(os.environ.get(TEST_SLEEP_ENV, "0"))
    part_of = {item.index: p for p, items in parts.items() for item in items}
    rows: dict[int, list[dict[str, Any]]] = {p: [] for p in parts}
    for batch in loader:
        with _model_running(model_idle):
            grouped = _embed_batch(engine, batch, batch_size, part_of)
        for part, part_rows in grouped.items():
            rows[part] += part_rows
            if len(rows[part]) == len(parts[part]):
                on_part(part, rows.pop(part))
                if sleep:
                    time.sleep(sleep)
        if bar is not None:
            bar.update(len(batch["items"]))


@contextlib.contextmanager
def _model_running(model_idle: Any) -> Iterator[None]:
    """Clears `model_idle` (if any) for the duration, and sets it again even on an error (workers wait on it)."""
    if model_idle is None:
        yield
        return
    model_idle.clear()
    try:
        yield
    finally:
        model_idle.set()


def _embed_batch(
    engine: EmbeddingEngine, batch: dict[str, Any], batch_size: int, part_of: dict[int, int]
) -> dict[int, list[dict[str, Any]]]:
    """Rows for the part files of one featurised batch, in item order, grouped by part."""
    rows = {item.index: {"index": item.index, "key": item.key} for item in batch["items"]}
    for index, reason in batch["errors"].items():
        rows[index]["error"] = reason
    if batch["ok"]:
        embeds = _embed_features(engine, batch["features"], batch_size)  # (B, E)
        for j, index in enumerate(batch["ok"]):
            rows[index]["embedding"] = embeds[j]
            rows[index]["duration"] = batch["durations"][j]
        if "window_features" in batch:
            window_embeds = _embed_features(engine, batch["window_features"], batch_size)  # (M, E)
            start = 0
            for index, count in zip(batch["ok"], batch["window_counts"], strict=True):
                bounds = batch["window_bounds"][start : start + count]
                rows[index]["window_start"] = [b[0] for b in bounds]
                rows[index]["window_end"] = [b[1] for b in bounds]
                rows[index]["window_embeddings"] = list(window_embeds[start : start + count])
                start += count
    grouped: dict[int, list[dict[str, Any]]] = {}
    for item in batch["items"]:
        grouped.setdefault(part_of[item.index], []).append(rows[item.index])
    return grouped


def _embed_features(engine: EmbeddingEngine, features: Any, batch_size: int) -> Any:
    """(B, E) float32 numpy embeddings of featurised clips, at most `batch_size` clips per engine call (a file's
    windows can make a batch of many clips)."""
    out = []
    for s in range(0, features["input_features"].shape[0], batch_size):
        clips = features["input_features"][s : s + batch_size], features["is_longer"][s : s + batch_size]
        out.append(engine.embed_features(*clips).cpu())  # (B, E)
    return torch.cat(out).numpy()
