"""`torch.compile` of the audio tower for inference (`EmbeddingEngine(..., compile=True)`, `embed --compile`)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def compile_audio_tower(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`model.get_audio_embeds` compiled by torch.compile for inference, with the weights frozen into the graph.

    Compiling takes tens of seconds per process (FX graphs are cached on disk, so a rerun compiles faster) and pays
    for itself on long jobs: ~20% less time per htsat-tiny step on a CPU (benchmarks/RESULTS.md "Embed"). Use it
    under `torch.inference_mode()` only, with fixed shapes: `EmbeddingEngine.embed_features` does both.
    """
    import torch._inductor.config

    device = getattr(model, "device", None) or next(model.parameters()).device
    if torch.device(device).type == "cpu":
        _check_cpp_compiler()
    compiled = torch.compile(model.get_audio_embeds)

    def run(input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        # Graphs compile at the first calls, and read the setting then. `torch.compile(options={"freezing": True})`
        # is not enough: measured, it left the step as slow as eager.
        with torch._inductor.config.patch(freezing=True):
            return compiled(input_features, is_longer)

    return run


def _check_cpp_compiler() -> None:
    """On a CPU, torch.compile builds C++ kernels: say so up front rather than deep inside the first model call."""
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler as error:
        raise ValueError(
            "compiling the model on a CPU needs a C++ compiler (e.g. `apt-get install g++`, or set CXX); "
            f"torch found none: {error}. Run without compile instead."
        ) from error
