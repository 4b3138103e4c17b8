"""The `--backend` / `--precision` options every command that embeds shares (standard library only)."""

from __future__ import annotations

import argparse

BACKEND_HELP = (
    "auto (default): the one the precision runs on (ONNX Runtime for int8, PyTorch otherwise), and ONNX Runtime for a "
    "folder written by `clapforge export` without PyTorch weights; torch runs the model folder in PyTorch; onnx runs "
    "a folder written by `clapforge export` in ONNX Runtime (CPU)"
)
PRECISION_HELP = (
    "auto (default): the fastest precision within cosine 0.999 of fp32 on this machine: bf16 where the device has "
    "bf16 kernels (GPUs, CPUs with AMX or AVX-512 BF16), int8 on other CPUs when the folder holds an int8 export, "
    "fp32 otherwise; fp32; bf16 autocasts PyTorch; int8 runs an export's int8 graphs (`clapforge export --quantize "
    "int8`)"
)


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto", help=BACKEND_HELP)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default="auto", help=PRECISION_HELP)


def describe_precision(choice: object) -> str:
    """One line for a command's output: the precision a run used and, for auto, why."""
    reason = f"auto: {choice.reason}" if choice.requested == "auto" else "as asked"
    return f"precision {choice.precision} on the {choice.backend} backend ({reason})"
