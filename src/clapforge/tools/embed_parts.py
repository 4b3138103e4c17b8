"""The parts of an `embed` run: OUT.parts/part-XXXXX.parquet, each written atomically, checked on a rerun, and
merged in order into the output index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from .index import EmbeddingIndex


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


def merge_parts(parts_dir: Path, n_parts: int, metadata: dict[str, Any], window: bool):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .index import column_matrix

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
