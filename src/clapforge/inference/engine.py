"""THE embedding engine: a loaded model, its processor, its device, a precision and an optional compiled audio graph.

Every job that embeds goes through an `EmbeddingEngine`: the Python API, `clapforge embed` (files and table),
`classify`, `search`, evaluation (`evaluate_clap`, the paper's benchmarks), training validation and the demo. So the
precision is applied in one place (`running`), and the CPU chunking, eval mode and inference mode in one loop.

Shapes: N clips, N_t texts, B batch, C channels, T frames, F mel bins, E joint embedding.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from transformers import ProcessorMixin

from ..processing.processing_laion_clap import TEXT_MAX_LENGTH
from .compile import compile_audio_tower
from .precision import PrecisionChoice, check_backend, choose_precision, native_bf16

# On a CPU the audio towers run faster a few clips per call: the activations of 4 clips stay in the caches, those of
# 16 go out to memory (benchmarks/RESULTS.md "Embed"). AMX's bf16 tiles want taller matrices: there 8 clips per call
# ran the htsat-tiny tower ~19% faster than 4 (16: no better than 8), while fp32 was the same at 4, 8 and 16.
CPU_CLIPS_PER_CALL = 4
AMX_BF16_CLIPS_PER_CALL = 8


class EmbeddingEngine:
    """Embeds audio and text with one model at one precision. Build it with `inference.loading.load_engine` (from a
    folder or Hub id) or `EmbeddingEngine.wrap(model, processor)` (a model already in memory, e.g. while training).

    `choice` says the precision and backend (`inference.precision.choose_precision`); the model must be the one that
    backend runs (a `LaionClapModel` for torch, an `OnnxClapModel` for onnx). `compile=True` runs the audio tower
    through `torch.compile` (`inference.compile`): tens of seconds to start, faster per clip on long jobs.
    """

    def __init__(self, model: Any, processor: Any, choice: PrecisionChoice, compile: bool = False) -> None:
        self.model = model
        self.processor = processor
        self.feature_extractor = feature_extractor_of(processor)
        self.device = model_device(model)
        self.choice = choice
        if choice.precision == "bf16" and not native_bf16(self.device):
            warnings.warn(f"precision bf16 on a {self.device.type} without bf16 kernels (AVX-512 BF16 or AMX) is "
                          "emulated and several times slower than fp32; use precision auto or fp32 here", stacklevel=3)
        if compile and choice.backend != "torch":
            raise ValueError("compile (--compile) compiles the PyTorch model; the onnx backend (precision int8) runs "
                             "ONNX Runtime's own optimiser")
        self._compiled = compile_audio_tower(model) if compile else None

    @classmethod
    def wrap(cls, model: Any, processor: Any, precision: str = "auto", compile: bool = False) -> EmbeddingEngine:
        """An engine over a model already loaded (a `LaionClapModel` or an `OnnxClapModel`) and its processor."""
        backend = "onnx" if getattr(model, "is_onnx", False) else "torch"
        choice = choose_precision(precision, model_device(model), backend=backend)
        check_backend(choice.backend, choice.precision)
        return cls(model, processor, choice, compile=compile)

    @property
    def precision(self) -> str:
        return self.choice.precision

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def tokenizer(self) -> Any:
        return tokenizer_of(self.processor)

    def logit_scale(self) -> torch.Tensor:
        """() float32 on the CPU: the zero-shot inverse temperature, `exp(logit_scale_a)`."""
        return self.model.logit_scale_a.detach().float().exp().cpu()

    def metadata(self) -> dict[str, str]:
        """What an output records of how its embeddings were computed."""
        return {**self.choice.metadata(), "device": self.device.type}

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Eval mode, inference mode and the precision (bf16 autocast) for the duration: the one place a precision is
        applied. Each submodule's train/eval flag is restored afterwards (see `evaluating`)."""
        with evaluating(self.model), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.running_bf16):
            yield

    def embed_features(self, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        """(B, C, T, F) log-mel and (B, 1) is_longer -> (B, E) float32 audio embeddings on the engine's device.

        On a CPU the clips go `CPU_CLIPS_PER_CALL` at a time (`AMX_BF16_CLIPS_PER_CALL` in bf16 on AMX). With a
        compiled graph, a short last chunk is padded with silent clips, whose embeddings are dropped: a compiled graph
        is specialised to its input shape, and a new shape would compile again.
        """
        input_features, is_longer = input_features.to(self.device), is_longer.to(self.device)
        n = len(input_features)
        step = self.clips_per_call() if self.device.type == "cpu" else max(n, 1)
        embed = self._compiled or self.model.get_audio_embeds
        with self.running():
            if self._compiled is not None:
                # Padded by a copy even when nothing is missing: every chunk is then a view of a tensor made here
                # (under inference mode), and so passes the compiled graph's guards (they check the tensor kind).
                pad = -n % step
                input_features = torch.cat([input_features, input_features.new_zeros((pad, *input_features.shape[1:]))])
                is_longer = torch.cat([is_longer, is_longer.new_zeros((pad, *is_longer.shape[1:]))])
            out = [embed(input_features[s : s + step], is_longer[s : s + step]).float()
                   for s in range(0, n, step)]
        return torch.cat(out)[:n] if out else self._empty()  # (B, E)

    def clips_per_call(self) -> int:
        """How many clips one audio-tower call takes on a CPU (see CPU_CLIPS_PER_CALL)."""
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        return AMX_BF16_CLIPS_PER_CALL if amx and self.running_bf16 else CPU_CLIPS_PER_CALL

    @property
    def running_bf16(self) -> bool:
        return self.choice.precision == "bf16" and self.choice.backend == "torch"

    def embed_audio(
        self, clips: Iterable[np.ndarray | torch.Tensor], sampling_rate: int, batch_size: int = 16
    ) -> torch.Tensor:
        """(N, E) float32 audio embeddings on the engine's device, in input order.

        `clips` (1-D mono, or (C, T) multi-channel, at `sampling_rate`) is consumed lazily, `batch_size` at a time,
        so a stream never sits in memory whole. Features are computed on the engine's device with the extractor's
        deterministic crop (no random crop), so results are reproducible.
        """
        embeds = []
        for batch in batches(clips, batch_size):
            features = self.feature_extractor(batch, sampling_rate=sampling_rate, device=self.device)
            embeds.append(self.embed_features(features["input_features"], features["is_longer"]))  # (B, E)
        return torch.cat(embeds) if embeds else self._empty()  # (N, E)

    def embed_text(self, texts: Iterable[str], batch_size: int = 64) -> torch.Tensor:
        """(N_t, E) float32 text embeddings on the engine's device, in input order.

        A `LaionClapProcessor` rejects empty texts; a bare tokenizer is called with the processor's settings (pad to
        the longest, truncate at 77 tokens).
        """
        tokenizer = self.tokenizer
        embeds = []
        for batch in batches(texts, batch_size):
            if isinstance(tokenizer, ProcessorMixin):
                tokens = tokenizer(text=batch)
            else:
                tokens = tokenizer(batch, padding=True, truncation=True, max_length=TEXT_MAX_LENGTH,
                                   return_tensors="pt")
            inputs = {name: tokens[name].to(self.device) for name in ("input_ids", "attention_mask", "token_type_ids")
                      if name in tokens}
            with self.running():
                embeds.append(self.model.get_text_embeds(**inputs).float())  # (B, E)
        return torch.cat(embeds) if embeds else self._empty()  # (N_t, E)

    def _empty(self) -> torch.Tensor:
        return torch.empty(0, self.model.config.projection_dim, device=self.device)


def as_engine(model: Any, processor: Any = None, precision: str = "fp32") -> EmbeddingEngine:
    """`model` if it is an engine, else an engine over `model` and `processor` at `precision`: for the functions that
    take either (evaluation, which reports fp32 scores unless asked otherwise)."""
    return model if isinstance(model, EmbeddingEngine) else EmbeddingEngine.wrap(model, processor, precision)


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of `size` items (the last may be shorter), read lazily."""
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


def model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)  # transformers' models and the ONNX backend (which has no parameters)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def feature_extractor_of(processor: Any) -> Any:
    """The feature extractor of a processor (or the extractor itself)."""
    return getattr(processor, "feature_extractor", processor)


def tokenizer_of(processor: Any) -> Any:
    """The processor (or a bare tokenizer), checked to tokenize: a folder saved without one only embeds audio."""
    is_bare_tokenizer = callable(getattr(processor, "batch_decode", None))
    if getattr(processor, "tokenizer", None) is None and not is_bare_tokenizer:
        raise ValueError("this model folder has no tokenizer: text needs a model saved with its tokenizer")
    return processor


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

