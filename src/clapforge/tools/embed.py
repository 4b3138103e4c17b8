"""`clapforge embed MODEL INPUT OUT`: embed every audio file of a folder, a file list or a `datasets` source.

The entry point: it reads the options and hands the work to the output's module, `tools.embed_file` (an embeddings
file, .parquet or .safetensors) or `tools.embed_table` (a LanceDB table, updated incrementally). What both share
(options, report, launch, part files, the embedding loop) lives in `tools.embed_job`.
"""

from __future__ import annotations

import os

from ..inference.precision import check_backend
from .embed_file import RUN_FILE, embed_to_file
from .embed_job import TEST_SLEEP_ENV, EmbedOptions, EmbedReport
from .embed_table import embed_to_table
from .table import is_table

__all__ = ["RUN_FILE", "TEST_SLEEP_ENV", "EmbedOptions", "EmbedReport", "embed_files"]


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
    precision: str = "auto",
    compile: bool = False,
    table: bool = False,
    backend: str = "auto",
) -> EmbedReport:
    """Embed every input of `source` into `out` (the options are `EmbedOptions`'s fields).

    `out` ending in .parquet or .safetensors is an embeddings file (`tools.embed_file`); ending in .lance, or any `out`
    with `table=True` (`--index DIR`), a LanceDB table brought up to date incrementally (`tools.embed_table`).
    `precision="auto"` (the default) embeds at the fastest precision that stays within cosine 0.999 of fp32 here
    (`inference.precision`) and records the one it chose in the output. `compile=True` runs the audio tower through
    `torch.compile`: slower to start, faster per file on long jobs. Under `accelerate launch` every process runs this
    same call; the work is split by parts and rank 0 writes the output. Returns the report (on every rank;
    `embedded` and `errors` are filled on rank 0).
    """
    options = EmbedOptions(batch_size, num_workers, window, part_size, dataset, audio_column, split, key_column,
                           overwrite, progress, precision, compile, backend)
    check_backend(backend, precision)
    if compile and (backend == "onnx" or precision == "int8"):
        raise ValueError("--compile compiles the PyTorch model; the onnx backend (precision int8) runs ONNX Runtime's "
                         "own optimiser")
    if table or is_table(out):
        return embed_to_table(model, source, out, options)
    return embed_to_file(model, source, out, options)
