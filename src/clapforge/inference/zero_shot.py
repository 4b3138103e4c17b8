"""THE zero-shot scorer: class prompts -> text embeddings -> scaled cosine -> softmax.

The Python API's `classify`, `evaluate_clap` (training validation, the demo), the paper's benchmarks
(`evaluation.tasks`) and the MTEB tasks' candidate texts all build their classes here. The prompt rule itself is
`clapforge.prompts.format_prompt`.

Shapes: N clips, K classes, P prompt templates, E joint embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..prompts import DEFAULT_PROMPT, format_prompt
from .engine import EmbeddingEngine


def class_prompts(class_names: Sequence[str], template: str = DEFAULT_PROMPT) -> list[str]:
    """The text of each class under one template (K texts), refusing an empty or repeated class list."""
    if not class_names:
        raise ValueError("zero-shot classification needs at least one class name")
    if len(set(class_names)) != len(class_names):
        raise ValueError("the class names hold duplicates")
    return [format_prompt(template, name) for name in class_names]


def class_embeddings(
    engine: EmbeddingEngine,
    class_names: Sequence[str],
    templates: Sequence[str] = (DEFAULT_PROMPT,),
    batch_size: int = 64,
) -> torch.Tensor:
    """(K, E) one L2-normalised text embedding per class, on the engine's device: the mean over templates of the
    normalised prompt embeddings (CLIP's prompt ensembling, Radford et al. 2021, sec. 3.1.4); with one template, just
    its normalised embedding."""
    templates = list(templates) or [DEFAULT_PROMPT]
    per_template = [F.normalize(engine.embed_text(class_prompts(class_names, t), batch_size), dim=-1)  # (K, E)
                    for t in templates]
    return F.normalize(torch.stack(per_template).mean(0), dim=-1)  # (K, E)


def zero_shot_logits(audio_embeds: torch.Tensor, class_embeds: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """(N, K) `logit_scale * cosine(audio, class)`, as `LaionClapModel.logits_per_audio` scores a clip against texts."""
    audio = F.normalize(audio_embeds.float(), dim=-1)
    classes = F.normalize(class_embeds.float(), dim=-1).to(audio.device)
    return logit_scale.to(audio.device) * audio @ classes.T  # (N, K)


def zero_shot_probabilities(
    engine: EmbeddingEngine,
    audio_embeds: torch.Tensor,
    class_names: Sequence[str],
    templates: Sequence[str] = (DEFAULT_PROMPT,),
) -> torch.Tensor:
    """(N, K) softmax over the classes of the zero-shot logits of (N, E) audio embeddings made by `engine`."""
    classes = class_embeddings(engine, class_names, templates)  # (K, E)
    return zero_shot_logits(audio_embeds, classes, engine.logit_scale()).softmax(dim=-1)  # (N, K)
