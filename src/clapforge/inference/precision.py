"""The one precision policy: what a device runs natively, and which precision `"auto"` stands for on it.

Precisions: "fp32"; "bf16" (PyTorch under bfloat16 autocast); "int8" (the int8 ONNX graphs of a `clapforge export
--quantize int8` folder, in ONNX Runtime on the CPU). `"auto"` is the fastest of them whose embeddings stay within
cosine 0.999 of fp32 on this device (benchmarks/RESULTS.md "Embed", "ONNX backends"):
- bf16 where the device has bf16 kernels (a CUDA device with bf16, a CPU with AMX or AVX-512 BF16): 2-4x fp32;
- int8 where the folder holds an int8 export and the CPU has no bf16 kernels (there bf16 is emulated, several
  times slower than fp32, and ONNX Runtime's int8 audio graph was the fastest faithful setting);
- fp32 otherwise.
Training's `mixed_precision` asks `native_bf16` the same question (`training.train`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .onnx_backend import ONNX_PRECISIONS

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "int8")

BACKENDS = ("auto", "torch", "onnx")
# The precisions each backend runs: torch in float32 or under bfloat16 autocast, ONNX Runtime the fp32 graphs or the
# int8 ones (`clapforge export --quantize int8`).
BACKEND_PRECISIONS = {"torch": ("fp32", "bf16"), "onnx": ONNX_PRECISIONS}


def check_backend(backend: str, precision: str = "auto") -> None:
    """Refuse an unknown backend, or a precision the backend does not run, naming what it does run."""
    check_precision(precision)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto" or precision == "auto":
        return
    if precision not in BACKEND_PRECISIONS[backend]:
        raise ValueError(
            f"precision {precision!r} is not run by the {backend} backend: it runs {BACKEND_PRECISIONS[backend]}"
            + (" (int8 needs --backend onnx and an export made with --quantize int8)" if precision == "int8" else "")
        )


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved precision, the backend that runs it, and why (`"auto"` says what it saw)."""

    precision: str  # fp32, bf16 or int8
    backend: str  # torch or onnx
    requested: str  # as asked: auto, fp32, bf16 or int8
    reason: str

    def metadata(self) -> dict[str, str]:
        """What an output records: the precision its embeddings were computed at, and how it was chosen."""
        return {"precision": self.precision, "precision_requested": self.requested, "backend": self.backend}


def native_bf16(device: torch.device | str) -> bool:
    """True on a CUDA device with bf16, or on a CPU whose oneDNN has bf16 kernels (AVX-512 BF16 or AMX).

    Elsewhere bf16 autocast is emulated and slow, not fast: on a 2-core AMD EPYC with AVX2 only, a PANN training
    step (16 clips) took 10.4 s under bf16 autocast against 1.1 s in fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return True


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def choose_precision(
    requested: str, device: torch.device | str, backend: str = "auto", int8_export: bool = False
) -> PrecisionChoice:
    """The precision and backend to run `requested` with on `device` (see the module docstring).

    `backend` is "auto", "torch" or "onnx" (an explicit backend narrows what "auto" may pick); `int8_export` says
    whether the model folder holds int8 ONNX graphs. An explicit precision is returned as asked, with the backend
    that runs it; whether that backend can run it is checked by `check_backend`.
    """
    check_precision(requested)
    device = torch.device(device)
    if requested != "auto":
        chosen_backend = backend if backend != "auto" else ("onnx" if requested == "int8" else "torch")
        return PrecisionChoice(requested, chosen_backend, requested, "asked for")
    bf16 = device.type != "cpu" or native_bf16(device)
    if bf16 and backend != "onnx":
        where = "this GPU" if device.type == "cuda" else "this CPU (AMX or AVX-512 BF16)"
        choice = PrecisionChoice("bf16", "torch", "auto", f"{where} has bf16 kernels")
    elif int8_export and device.type == "cpu" and backend != "torch":
        choice = PrecisionChoice("int8", "onnx", "auto", "no bf16 kernels on this CPU; the folder has an int8 export")
    else:
        why = "no bf16 kernels on this CPU" if not bf16 else "the onnx backend has no bf16"
        choice = PrecisionChoice("fp32", "onnx" if backend == "onnx" else "torch", "auto",
                                 why + ("" if int8_export else "; no int8 export in the folder"))
    logger.info("precision auto -> %s (%s backend): %s", choice.precision, choice.backend, choice.reason)
    return choice
