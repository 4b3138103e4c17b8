"""The embeddings file `clapforge embed` writes and `clapforge search` reads: parquet or safetensors.

Shapes: N files, M windows (over all files), E joint embedding.

- parquet: one row per file with `key` (string), `embedding` (list<float32>, length E) and `duration` (seconds);
  in window mode also `window_start`, `window_end` (list<float64>) and `window_embeddings` (list<list<float32>>).
  The run's metadata (model, window length, ...) is JSON under the schema metadata key `clapforge`.
- safetensors: tensor `embeddings` (N, E) float32 and `durations` (N,) float64; in window mode `window_embeddings`
  (M, E), `window_rows` (M,) int64 (the file each window belongs to) and `window_bounds` (M, 2) float64 seconds.
  The header metadata holds `keys` (a JSON list) and `clapforge` (the run's metadata as JSON).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path

FORMATS = (".parquet", ".safetensors")
METADATA_KEY = "clapforge"


@dataclass
class EmbeddingIndex:
    """Keys and L2-normalised embeddings of files, with the windows of window mode when present."""

    keys: list[str]
    embeddings: torch.Tensor  # (N, E) float32
    durations: torch.Tensor  # (N,) float64 seconds
    metadata: dict[str, Any] = field(default_factory=dict)
    window_embeddings: torch.Tensor | None = None  # (M, E)
    window_rows: torch.Tensor | None = None  # (M,) int64, row of `keys`
    window_bounds: torch.Tensor | None = None  # (M, 2) float64, start and end in seconds

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def has_windows(self) -> bool:
        return self.window_embeddings is not None


def check_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: the output must end in .parquet or .safetensors, not {suffix or 'nothing'!r}")
    return suffix


def write_index(index: EmbeddingIndex, path: str | os.PathLike) -> None:
    """Write `index` to `path` (format from the suffix) through a temporary file and an atomic rename."""
    path = Path(path)
    suffix = check_format(path)
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            _write_parquet(index, tmp)
        else:
            _write_safetensors(index, tmp)


def read_index(path: str | os.PathLike) -> EmbeddingIndex:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file {path} does not exist")
    return _read_parquet(path) if check_format(path) == ".parquet" else _read_safetensors(path)


def window_lists(index: EmbeddingIndex) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per file, (bounds (M_i, 2), embeddings (M_i, E)) of its windows, in window order."""
    out = []
    rows = index.window_rows.numpy()
    for i in range(len(index)):
        picked = np.nonzero(rows == i)[0]
        out.append((index.window_bounds.numpy()[picked], index.window_embeddings.numpy()[picked]))
    return out


def list_column(array: np.ndarray, value_type: Any) -> Any:
    """(N, E) array -> a pyarrow list<value_type> array of N rows."""
    import pyarrow as pa

    n = array.shape[0]
    offsets = np.arange(n + 1, dtype=np.int32) * (array.shape[1] if array.ndim > 1 else 0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(array.reshape(-1), type=value_type))


def column_matrix(column: Any, width: int | None = None) -> np.ndarray:
    """A pyarrow list<float> column of N equal-length rows -> (N, E) numpy array."""
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = column.flatten().to_numpy(zero_copy_only=False)
    n = len(column)
    if width is None:
        width = values.size // n if n else 0
    return values.reshape(n, width)


def _write_parquet(index: EmbeddingIndex, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "key": pa.array(index.keys, type=pa.string()),
        "embedding": list_column(index.embeddings.float().numpy(), pa.float32()),
        "duration": pa.array(index.durations.double().numpy(), type=pa.float64()),
    }
    if index.has_windows:
        starts, ends, embeds = [], [], []
        for bounds, window_embeds in window_lists(index):
            starts.append(bounds[:, 0].tolist())
            ends.append(bounds[:, 1].tolist())
            embeds.append([row for row in window_embeds.astype(np.float32)])
        columns["window_start"] = pa.array(starts, type=pa.list_(pa.float64()))
        columns["window_end"] = pa.array(ends, type=pa.list_(pa.float64()))
        columns["window_embeddings"] = pa.array(embeds, type=pa.list_(pa.list_(pa.float32())))
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(index.metadata)})
    pq.write_table(table, path)


def _read_parquet(path: Path) -> EmbeddingIndex:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    metadata = json.loads((table.schema.metadata or {}).get(METADATA_KEY.encode(), b"{}"))
    width = metadata.get("embedding_dim")
    index = EmbeddingIndex(
        keys=table.column("key").to_pylist(),
        embeddings=torch.from_numpy(column_matrix(table.column("embedding"), width).astype(np.float32)),
        durations=torch.from_numpy(table.column("duration").to_numpy().astype(np.float64)),
        metadata=metadata,
    )
    if "window_embeddings" in table.column_names:
        starts, ends = table.column("window_start").to_pylist(), table.column("window_end").to_pylist()
        embeds = table.column("window_embeddings").to_pylist()
        rows = [i for i, s in enumerate(starts) for _ in s]
        width = width or (len(embeds[0][0]) if rows else 0)
        index.window_rows = torch.tensor(rows, dtype=torch.long)
        index.window_bounds = torch.tensor([[a, b] for s, e in zip(starts, ends, strict=True)
                                            for a, b in zip(s, e, strict=True)], dtype=torch.float64).view(-1, 2)
        index.window_embeddings = torch.tensor([w for e in embeds for w in e], dtype=torch.float32).view(-1, width)
    return index


def _write_safetensors(index: EmbeddingIndex, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"embeddings": index.embeddings.float().contiguous(), "durations": index.durations.double().contiguous()}
    if index.has_windows:
        tensors["window_embeddings"] = index.window_embeddings.float().contiguous()
        tensors["window_rows"] = index.window_rows.long().contiguous()
        tensors["window_bounds"] = index.window_bounds.double().contiguous()
    save_file(tensors, str(path), metadata={"keys": json.dumps(index.keys), METADATA_KEY: json.dumps(index.metadata)})


def _read_safetensors(path: Path) -> EmbeddingIndex:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    if "embeddings" not in tensors or "keys" not in header:
        raise ValueError(f"{path} is not a clapforge embeddings file (no 'embeddings' tensor or 'keys' metadata)")
    return EmbeddingIndex(
        keys=json.loads(header["keys"]),
        embeddings=tensors["embeddings"],
        durations=tensors.get("durations", torch.zeros(tensors["embeddings"].shape[0], dtype=torch.float64)),
        metadata=json.loads(header.get(METADATA_KEY, "{}")),
        window_embeddings=tensors.get("window_embeddings"),
        window_rows=tensors.get("window_rows"),
        window_bounds=tensors.get("window_bounds"),
    )
