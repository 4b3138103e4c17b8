"""`clapforge embed MODEL INPUT OUT`: embed every audio file of a folder, a file list or a `datasets` source.

Shapes: B files in a batch, M windows, E joint embedding.

Work layout. The inputs are put in one deterministic order (sorted keys for a folder or a list file, row order for a
dataset) and cut into parts of `part_size` consecutive items; part p is done by rank p % world_size. A part is
decoded and featurised in DataLoader workers, batch by batch (batches never straddle parts, so the batches of a part,
and hence its floating-point results, do not depend on which rank runs it or whether the run was resumed), embedded
in the main process, and written as OUT.parts/part-XXXXX.parquet through a temporary file and a rename: a part file
exists complete or not at all. A rerun (after a kill, with any number of processes) keeps every part file whose keys
are the ones its part should hold and does the rest. After `wait_for_everyone`, rank 0 merges the parts in order into
OUT (written atomically), writes OUT.errors.json (unreadable inputs with the reason) and removes OUT.parts. A rerun
on a finished OUT whose recorded settings and inputs match does nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_json
from ..inference.embedding import audio_embeds, compile_audio_tower
from ..inference.precision import native_bf16
from .embed_inputs import AudioItems, Featurize, Item, list_inputs
from .embed_parts import merge_parts, part_keys, part_path, write_part
from .embed_table import embed_to_table
from .index import check_format, read_index, write_index
from .table import is_table

# Hidden test hook: seconds the main process sleeps after writing each part, so a test can kill a run in between.
TEST_SLEEP_ENV = "CLAPFORGE_EMBED_TEST_SLEEP"
RUN_FILE = "run.json"


@dataclass
class EmbedReport:
    out: Path
    embedded: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    computed: int = 0  # items this run read, embedded or found unreadable (not reused from part files or the table)
    removed: int = 0  # table rows of files no longer in the input, deleted by this run
    up_to_date: bool = False
    main_process: bool = True  # False on the other ranks of a launch, which print nothing


# ---------------------------------------------------------------------------------------------------- embed


def embed_files(
    model: str | os.PathLike,
    source: str | os.PathLike,
    out: str | os.PathLike,
    batch_size: int = 16,
    num_workers: int = 0,
    window: bool = False,
    part_size: int = 256,
    dataset: bool = False,
    audio_column: str = "audio",
    split: str = "train",
    key_column: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    precision: str = "fp32",
    compile: bool = False,
    table: bool = False,
    backend: str = "auto",
) -> EmbedReport:
    """Embed every input of `source` into `out` (.parquet or .safetensors); see the module docstring for the layout.
    An `out` ending in .lance, or any `out` with `table=True` (`--index DIR`), is a LanceDB table, brought up to date
    incrementally (`tools.embed_table`).

    Under `accelerate launch` every process runs this same call; the work is split by parts and rank 0 merges.
    `compile=True` runs the audio tower through `torch.compile` (see `compile_audio_tower`): slower to start, faster
    per file on long jobs. `backend="onnx"` runs the graphs of a `clapforge export` folder in ONNX Runtime instead
    (`precision` "fp32" or "int8"), through the same pipeline. Returns the report (on every rank;
    `embedded` and `errors` are filled on rank 0).
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env
    from tqdm.auto import tqdm

    from ..inference.loading import check_backend, feature_extractor_of, load_model, model_reference, resolve_backend

    if batch_size < 1 or part_size < 1:
        raise ValueError("batch_size and part_size must be at least 1")
    backend = resolve_backend(backend, precision)
    check_backend(backend, precision)
    if compile and backend != "torch":
        raise ValueError("--compile compiles the PyTorch model; the onnx backend runs ONNX Runtime's own optimiser")
    if table or is_table(out):
        return embed_to_table(
            model, source, out, batch_size=batch_size, num_workers=num_workers, window=window, part_size=part_size,
            dataset=dataset, audio_column=audio_column, split=split, key_column=key_column, overwrite=overwrite,
            progress=progress, precision=precision, compile=compile, backend=backend)
    out = Path(out)
    check_format(out)
    parts_dir = out.with_name(out.name + ".parts")
    errors_path = out.with_name(out.name + ".errors.json")
    # PartialState (unlike Accelerator) ignores ACCELERATE_USE_CPU; without it a CPU launch gives N lone processes.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    rank, world = state.process_index, state.num_processes

    items, reader = list_inputs(source, dataset, audio_column, split, key_column)
    if not items:
        raise ValueError(f"no audio inputs in {source}")
    loaded, processor = load_model(model, device=state.device, backend=backend, precision=precision)
    fe = feature_extractor_of(processor)
    settings = {
        "model": model_reference(model),
        "embedding_dim": int(loaded.config.projection_dim),
        "sampling_rate": int(fe.sampling_rate),
        "truncation": fe.truncation,
        "window": bool(window),
        "window_s": fe.nb_max_samples / fe.sampling_rate if window else None,
        "part_size": int(part_size),
        "precision": precision,  # a resumed run must not mix fp32 and bf16 (or int8) parts
        "inputs": hashlib.sha256("\n".join(i.key for i in items).encode()).hexdigest(),
    }
    report = EmbedReport(out, main_process=state.is_main_process)

    # Every rank checks before anything changes on disk, so a refusal stops all of them alike.
    if not overwrite and out.exists() and not parts_dir.exists():
        previous = read_index(out).metadata
        if previous == settings:
            report.up_to_date = True
            report.embedded = len(read_index(out))
            report.errors = json.loads(errors_path.read_text()) if errors_path.exists() else []
            return report
    run_file = parts_dir / RUN_FILE
    if not overwrite and run_file.exists() and json.loads(run_file.read_text()) != settings:
        raise ValueError(f"{parts_dir} holds parts of a run with other settings or inputs; "
                         "pass --overwrite to start again")
    state.wait_for_everyone()
    if state.is_main_process:
        if overwrite and parts_dir.exists():
            shutil.rmtree(parts_dir)
        parts_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_file, settings)
    state.wait_for_everyone()

    n_parts = math.ceil(len(items) / part_size)
    part_items = {p: items[p * part_size : (p + 1) * part_size] for p in range(rank, n_parts, world)}
    pending = {p: its for p, its in part_items.items()
               if part_keys(part_path(parts_dir, p)) != [i.key for i in its]}
    report.computed = sum(len(its) for its in pending.values())
    total = sum(len(its) for its in part_items.values())
    bar = tqdm(total=total, initial=total - report.computed, unit="file", desc=f"embed {out.name}",
               disable=not (progress and state.is_main_process))
    embed_parts(loaded, fe, reader, pending, lambda part, rows: write_part(part_path(parts_dir, part), rows),
                batch_size=batch_size, num_workers=num_workers, window=window, precision=precision,
                compile=compile, device=state.device, bar=bar)
    bar.close()

    state.wait_for_everyone()
    if state.is_main_process:
        missing = [p for p in range(n_parts) if not part_path(parts_dir, p).exists()]
        if missing:
            raise RuntimeError(f"parts {missing} are missing after every process finished")
        index, errors = merge_parts(parts_dir, n_parts, settings, window)
        write_index(index, out)
        atomic_write_json(errors_path, errors)
        shutil.rmtree(parts_dir)
        report.embedded, report.errors = len(index), errors
    state.wait_for_everyone()
    return report


def embed_parts(
    loaded: Any,
    fe: Any,
    reader: Any,
    parts: dict[int, list[Item]],
    on_part: Callable[[int, list[dict[str, Any]]], None],
    *,
    batch_size: int,
    num_workers: int,
    window: bool,
    precision: str,
    compile: bool,
    device: torch.device,
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
    model_idle = context.Event() if device.type == "cpu" and num_workers > 0 else None
    if model_idle is not None:
        model_idle.set()
    loader = torch.utils.data.DataLoader(
        AudioItems(todo, reader, fe.sampling_rate, model_idle),
        batch_sampler=batches,
        collate_fn=Featurize(fe, window, model_idle),
        num_workers=num_workers,
        multiprocessing_context=context if num_workers > 0 else None,
    )
    sleep = float(os.environ.get(TEST_SLEEP_ENV, "0"))
    part_of = {item.index: p for p, items in parts.items() for item in items}
    rows: dict[int, list[dict[str, Any]]] = {p: [] for p in parts}
    loaded.eval()
    # bf16 autocast: ~2x faster HTS-AT / PANN steps on CPUs with AVX-512 BF16 or AMX (and on GPUs), at a cosine
    # of ~0.9999 to fp32 (benchmarks/RESULTS.md); the embeddings are stored as float32 either way.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(f"--precision bf16 on a {device.type} without bf16 kernels (AVX-512 BF16 or AMX) is emulated "
                      "and several times slower than fp32; use fp32 (or --backend onnx) here", stacklevel=2)
    compiled = compile_audio_tower(loaded) if compile else None
    with torch.inference_mode(), autocast:
        for batch in loader:
            with _model_running(model_idle):
                grouped = _embed_batch(loaded, compiled, batch, batch_size, device, part_of)
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
    model: Any,
    compiled: Any,
    batch: dict[str, Any],
    batch_size: int,
    device: torch.device,
    part_of: dict[int, int],
) -> dict[int, list[dict[str, Any]]]:
    """Rows for the part files of one featurised batch, in item order, grouped by part."""
    rows = {item.index: {"index": item.index, "key": item.key} for item in batch["items"]}
    for index, reason in batch["errors"].items():
        rows[index]["error"] = reason
    if batch["ok"]:
        embeds = _embed_features(model, compiled, batch["features"], batch_size, device)  # (B, E)
        for j, index in enumerate(batch["ok"]):
            rows[index]["embedding"] = embeds[j]
            rows[index]["duration"] = batch["durations"][j]
        if "window_features" in batch:
            window_embeds = _embed_features(model, compiled, batch["window_features"], batch_size, device)  # (M, E)
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


def _embed_features(model: Any, compiled: Any, features: Any, batch_size: int, device: torch.device) -> np.ndarray:
    """(B, E) float32 numpy embeddings of featurised clips, `batch_size` clips per model call."""
    out = []
    for s in range(0, features["input_features"].shape[0], batch_size):
        x = features["input_features"][s : s + batch_size].to(device)
        longer = features["is_longer"][s : s + batch_size].to(device)
        out.append(audio_embeds(model, x, longer, compiled).float().cpu())  # (B, E)
    return torch.cat(out).numpy()
