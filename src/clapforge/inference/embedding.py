"""Batched audio and text embedding with a CLAP model, the way every job runs it: eval and inference mode, the
feature extractor's deterministic crop, a few clips per call on a CPU, optional `torch.compile` and autocast.

Shapes: N clips, N_t texts, E joint embedding, B batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from transformers import ProcessorMixin

from ..processing.processing_laion_clap import TEXT_MAX_LENGTH

# On a CPU the audio towers run faster a few clips per call: the activations of 4 clips stay in the caches, those of
# 16 go out to memory (htsat-tiny, 16 clips on 2 EPYC cores, alternating timings: 0.80 s against 0.93 s in bf16,
# 1.44 s against 1.73 s in fp32).
CPU_CLIPS_PER_CALL = 4


def compile_audio_tower(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`model.get_audio_embeds` compiled by torch.compile for inference, with the weights frozen into the graph.

    Compiling takes tens of seconds per process (FX graphs are cached on disk, so a rerun compiles faster) and pays
    for itself on long jobs: ~20% less time per htsat-tiny step on a CPU (benchmarks/RESULTS.md "Embed"). Use it
    under `torch.inference_mode()` only, through `audio_embeds(..., compiled=...)`, which keeps the shapes fixed.
    """
    import torch._inductor.config

    if _device(model).type == "cpu":
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


def audio_embeds(
    model: torch.nn.Module,
    input_features: torch.Tensor,
    is_longer: torch.Tensor,
    compiled: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """(B, E) `model.get_audio_embeds` of a featurised batch, `CPU_CLIPS_PER_CALL` clips per call on a CPU.

    With `compiled` (from `compile_audio_tower`), a short last chunk on a CPU is padded with silent clips, whose
    embeddings are dropped: a compiled graph is specialised to its input shape, and a new shape would compile again.
    """
    n = len(input_features)
    step = CPU_CLIPS_PER_CALL if input_features.device.type == "cpu" else max(n, 1)
    embed = model.get_audio_embeds
    if compiled is not None:
        embed = compiled
        # Padded by a copy even when nothing is missing: every chunk is then a view of a tensor made here (under
        # inference mode), and so passes the compiled graph's guards (they check the tensor kind, not just shape).
        pad = -n % step
        input_features = torch.cat([input_features, input_features.new_zeros((pad, *input_features.shape[1:]))])
        is_longer = torch.cat([is_longer, is_longer.new_zeros((pad, *is_longer.shape[1:]))])
    out = [embed(input_features[s : s + step], is_longer[s : s + step]) for s in range(0, n, step)]
    return torch.cat(out)[:n]  # (B, E)


def embed_audio_batches(
    model: torch.nn.Module,
    feature_extractor: Any,
    clips: Iterable[np.ndarray | torch.Tensor],
    batch_size: int = 16,
    sampling_rate: int = 48000,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(N, E) float32 audio embeddings of `clips`, on the model's device, in input order.

    `clips` is consumed lazily, `batch_size` at a time, so a stream never sits in memory whole. `feature_extractor`
    is a `LaionClapFeatureExtractor` or a processor holding one; features are computed on the model's device with
    its deterministic crop (no random crop), so results are reproducible. The model runs in eval mode under
    `torch.inference_mode()` (and `torch.autocast(dtype=autocast_dtype)` if given); its previous train/eval modes
    are restored on return.
    """
    feature_extractor = getattr(feature_extractor, "feature_extractor", feature_extractor)
    device = _device(model)
    embeds = []
    with evaluating(model), _autocast(device, autocast_dtype):
        for batch in _batches(clips, batch_size):
            features = feature_extractor(batch, sampling_rate=sampling_rate, device=device)
            embeds.append(audio_embeds(model, features["input_features"], features["is_longer"]).float())  # (B, E)
    return _concat(embeds, model, device)  # (N, E)


def embed_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Iterable[str],
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(N_t, E) float32 text embeddings, on the model's device, in input order.

    `tokenizer` is a `LaionClapProcessor` (which rejects empty texts) or a bare tokenizer, which is then called
    with the processor's settings (pad to the longest, truncate at 77 tokens). Eval mode, inference mode, autocast
    and mode restoring as in `embed_audio_batches`.
    """
    device = _device(model)
    embeds = []
    with evaluating(model), _autocast(device, autocast_dtype):
        for batch in _batches(texts, batch_size):
            if isinstance(tokenizer, ProcessorMixin):
                tokens = tokenizer(text=batch)
            else:
                tokens = tokenizer(
                    batch, padding=True, truncation=True, max_length=TEXT_MAX_LENGTH, return_tensors="pt"
                )
            inputs = {name: tokens[name].to(device) for name in ("input_ids", "attention_mask", "token_type_ids")
                      if name in tokens}
            embeds.append(model.get_text_embeds(**inputs).float())  # (B, E)
    return _concat(embeds, model, device)  # (N_t, E)


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _device(model: torch.nn.Module) -> torch.device:
    device = getattr(model, "device", None)  # transformers' models and the ONNX backend (which has no parameters)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def _concat(embeds: list[torch.Tensor], model: torch.nn.Module, device: torch.device) -> torch.Tensor:
    if embeds:
        return torch.cat(embeds)
    return torch.empty(0, model.config.projection_dim, device=device)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and inference mode for the duration, then every submodule's own train/eval flag back.

    Per module rather than `model.train(was_training)`: a training run may keep part of the model in eval mode
    (a frozen text tower, frozen BatchNorm), and a blanket `train(True)` would silently switch it back on.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, training in modes:
            module.training = training


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
