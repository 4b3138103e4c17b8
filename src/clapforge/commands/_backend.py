"""The `--backend` / `--precision` options every command that embeds shares (standard library only)."""

from __future__ import annotations

import argparse

BACKEND_HELP = (
    "auto (default): ONNX Runtime for --precision int8, PyTorch otherwise; torch runs the model folder in PyTorch; "
    "onnx runs a folder written by `clapforge export` in ONNX Runtime (CPU)"
)
PRECISION_HELP = (
    "fp32 (default); bf16 autocasts PyTorch (~2x faster on CPUs with AVX-512 BF16 or AMX, and on GPUs); "
    "int8 runs an export's int8 graphs (--backend onnx, `clapforge export --quantize int8`)"
)


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto", help=BACKEND_HELP)
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32", help=PRECISION_HELP)
