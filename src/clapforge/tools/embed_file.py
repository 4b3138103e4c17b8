"""`clapforge embed MODEL INPUT OUT.parquet|.safetensors`: every input embedded into one embeddings file.

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

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_json
from .embed_inputs import list_inputs
from .embed_job import (
    EmbedOptions,
    EmbedReport,
    embed_parts,
    launch_state,
    load_run_engine,
    part_keys,
    part_path,
    run_settings,
    write_part,
)
from .embeddings_file import EmbeddingIndex, check_format, column_matrix, read_index, write_index

RUN_FILE = "run.json"


def embed_to_file(
    model: str | os.PathLike, source: str | os.PathLike, out: str | os.PathLike, options: EmbedOptions
) -> EmbedReport:
    """Embed every input of `source` into the embeddings file `out` (.parquet or .safetensors); see the module
    docstring. Every process of a launch runs this same call; returns the report (on every rank; `embedded` and
    `errors` are filled on rank 0)."""
    from tqdm.auto import tqdm

    out = Path(out)
    check_format(out)
    parts_dir = out.with_name(out.name + ".parts")
    errors_path = out.with_name(out.name + ".errors.json")
    state = launch_state()
    rank, world = state.process_index, state.num_processes

    items, reader = list_inputs(source, options.dataset, options.audio_column, options.split, options.key_column)
    if not items:
        raise ValueError(f"no audio inputs in {source}")
    engine = load_run_engine(model, options, state.device)
    settings = {
        **run_settings(model, engine, options),
        "part_size": int(options.part_size),
        "inputs": hashlib.sha256("\n".join(i.key for i in items).encode()).hexdigest(),
    }
    report = EmbedReport(out, main_process=state.is_main_process, precision=engine.choice)

    # Every rank checks before anything changes on disk, so a refusal stops all of them alike.
    if not options.overwrite and out.exists() and not parts_dir.exists():
        previous = read_index(out).metadata
        if previous == settings:
            report.up_to_date = True
            report.embedded = len(read_index(out))
            report.errors = json.loads(errors_path.read_text()) if errors_path.exists() else []
            return report
    run_file = parts_dir / RUN_FILE
    if not options.overwrite and run_file.exists() and json.loads(run_file.read_text()) != settings:
        raise ValueError(f"{parts_dir} holds parts of a run with other settings or inputs; "
                         "pass --overwrite to start again")
    state.wait_for_everyone()
    if state.is_main_process:
        if options.overwrite and parts_dir.exists():
            shutil.rmtree(parts_dir)
        parts_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_file, settings)
    state.wait_for_everyone()

    part_size = options.part_size
    n_parts = math.ceil(len(items) / part_size)
    part_items = {p: items[p * part_size : (p + 1) * part_size] for p in range(rank, n_parts, world)}
    pending = {p: its for p, its in part_items.items()
               if part_keys(part_path(parts_dir, p)) != [i.key for i in its]}
    report.computed = sum(len(its) for its in pending.values())
    total = sum(len(its) for its in part_items.values())
    bar = tqdm(total=total, initial=total - report.computed, unit="file", desc=f"embed {out.name}",
               disable=not (options.progress and state.is_main_process))
    embed_parts(engine, reader, pending, lambda part, rows: write_part(part_path(parts_dir, part), rows), options,
                bar=bar)
    bar.close()

    state.wait_for_everyone()
    if state.is_main_process:
        missing = [p for p in range(n_parts) if not part_path(parts_dir, p).exists()]
        if missing:
            raise RuntimeError(f"parts {missing} are missing after every process finished")
        index, errors = merge_parts(parts_dir, n_parts, settings, options.window)
        write_index(index, out)
        atomic_write_json(errors_path, errors)
        shutil.rmtree(parts_dir)
        report.embedded, report.errors = len(index), errors
    state.wait_for_everyone()
    return report


def merge_parts(parts_dir: Path, n_parts: int, metadata: dict[str, Any], window: bool):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(part_path(parts_dir, p)) for p in range(n_parts)])
    width = metadata["embedding_dim"]
    failed = pc.is_valid(table.column("error"))
    errors = [{"key": k, "reason": e} for k, e in zip(table.column("key").to_pylist(),
                                                       table.column("error").to_pylist(), strict=True) if e is not None]
    table = table.filter(pc.invert(failed))
    keys = table.column("key").to_pylist()
    index = EmbeddingIndex(
        keys=keys,
        embeddings=torch.from_numpy(column_matrix(table.column("embedding"), width).astype(np.float32)),
        durations=torch.tensor(table.column("duration").to_pylist(), dtype=torch.float64),
        metadata=metadata,
    )
    if window:
        starts, ends = table.column("window_start").to_pylist(), table.column("window_end").to_pylist()
        counts = [len(s) for s in starts]
        index.window_rows = torch.repeat_interleave(torch.arange(len(keys)), torch.tensor(counts, dtype=torch.long))
        index.window_bounds = torch.tensor([[a, b] for s, e in zip(starts, ends, strict=True)
                                            for a, b in zip(s, e, strict=True)], dtype=torch.float64).view(-1, 2)
        flat = table.column("window_embeddings").combine_chunks().flatten()
        index.window_embeddings = torch.from_numpy(column_matrix(flat, width).astype(np.float32)).view(-1, width)
    return index, errors
