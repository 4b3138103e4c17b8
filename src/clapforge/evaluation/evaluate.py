"""Score a CLAP model on a stream of examples: retrieval both ways and zero-shot accuracy (embedding: `inference`).

Shapes: N clips, N_t captions, K classes, E joint embedding, B batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

from ..inference.engine import EmbeddingEngine, as_engine
from ..inference.zero_shot import class_embeddings
from ..prompts import DEFAULT_PROMPT
from .metrics import chance_levels, retrieval_metrics, zero_shot_accuracy


def evaluate_clap(
    model: torch.nn.Module | EmbeddingEngine,
    processor: Any,
    examples: Iterable[Mapping[str, Any]],
    class_names: Sequence[str] | None = None,
    prompt: str = DEFAULT_PROMPT,
    batch_size: int = 16,
    ks: Sequence[int] = (1, 5, 10),
    zero_shot_ks: Sequence[int] = (1, 5),
    autocast_dtype: torch.dtype | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """Retrieval and zero-shot scores of `model` on `examples`, with the chance level of each.

    Args:
        model: an `EmbeddingEngine`, or a `LaionClapModel` (anything with `get_audio_embeds` and `get_text_embeds`)
            run by an engine at `precision` (fp32 by default: training validation and the demo report fp32 scores;
            `autocast_dtype=torch.bfloat16` is the older spelling of precision "bf16").
        processor: a `LaionClapProcessor` (ignored with an engine, which has its own).
        examples: dicts in the stream format of `clapforge.data.stream` ({"key", "audio", "sampling_rate",
            "captions", "labels"}), read once and lazily; every example must have the same `sampling_rate`.
        class_names: the zero-shot label set. Clips whose first label is one of them are classified among all of
            them with `prompt`; other clips only take part in retrieval. None skips zero-shot.
        prompt: zero-shot text template with `{label}` (`format_prompt`; default LAION's "This is a sound of {label}.").
        ks, zero_shot_ks: the k of retrieval R@k and of zero-shot top-k.

    Returns:
        `t2a_R@k`, `t2a_mAP@10`, `a2t_R@k`, `a2t_mAP@10` with every caption of every clip as a text->audio query
        (see `retrieval_metrics`); `zero_shot_top{k}` when `class_names` is given (k > K omitted); `n_clips`,
        `n_captions` (and `n_zero_shot`, `n_classes`); and `chance/<metric>` for each metric.
    """
    engine = as_engine(model, processor, "bf16" if autocast_dtype == torch.bfloat16 else precision)
    stream = iter(examples)
    first = next(stream, None)
    if first is None:
        raise ValueError("evaluate_clap got no examples")
    # The feature extractor needs the rate up front; it is the first example's, and every other must match.
    sampling_rate = int(first["sampling_rate"])
    captions: list[str] = []
    caption_clip: list[int] = []
    first_labels: list[str | None] = []

    def clips() -> Iterator[Any]:
        # Collects the text side while the audio side is embedded batch by batch, so the stream is read once.
        for i, example in enumerate(_chain(first, stream)):
            name = example.get("key", i)
            if int(example["sampling_rate"]) != sampling_rate:
                raise ValueError(f"example {name!r} is at {example['sampling_rate']} Hz, the first one at "
                                 f"{sampling_rate} Hz: resample the examples to one rate first")
            if not example["captions"]:
                raise ValueError(f"example {name!r} has no caption")
            captions.extend(example["captions"])
            caption_clip.extend([i] * len(example["captions"]))
            labels = example.get("labels") or []
            first_labels.append(labels[0] if labels else None)
            yield example["audio"]

    audio_embeds = engine.embed_audio(clips(), sampling_rate, batch_size)  # (N, E)
    text_embeds = engine.embed_text(captions, batch_size)  # (N_t, E)
    text_to_audio = torch.tensor(caption_clip, dtype=torch.long)  # (N_t,)

    out = retrieval_metrics(audio_embeds, text_embeds, text_to_audio, ks=ks)
    chance = chance_levels(text_to_audio=text_to_audio, n_audio=len(first_labels), ks=ks)
    out.update({"n_clips": len(first_labels), "n_captions": len(captions)})

    if class_names is not None:
        index = {name: k for k, name in enumerate(class_names)}
        rows = [i for i, label in enumerate(first_labels) if label in index]
        if not rows:
            raise ValueError(f"no example's first label is one of the {len(class_names)} class_names")
        targets = torch.tensor([index[first_labels[i]] for i in rows], dtype=torch.long)  # (N',)
        class_embeds = class_embeddings(engine, class_names, [prompt], batch_size)  # (K, E)
        picked = audio_embeds[torch.tensor(rows, device=audio_embeds.device)]  # (N', E)
        accuracy = zero_shot_accuracy(picked, class_embeds, targets, ks=zero_shot_ks)
        out.update({f"zero_shot_{key}": value for key, value in accuracy.items()})
        zs_chance = chance_levels(n_classes=len(class_names), zero_shot_ks=zero_shot_ks)
        chance.update({f"zero_shot_{key}": value for key, value in zs_chance.items()})
        out.update({"n_zero_shot": len(rows), "n_classes": len(class_names)})

    out.update({f"chance/{key}": value for key, value in chance.items()})
    return out


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
