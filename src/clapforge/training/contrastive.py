"""The contrastive objective of `train(recipe)` (the default, `objective: contrastive`): LAION-CLAP's training.

Audio-caption pairs from the shard stream, LAION's augmentation (random crops or fusion chunks, SpecAugment,
`promote_longer`), the symmetric contrastive loss over the global batch with the learned temperature `logit_scale_a`
(clamped to [0, ln 100] after every step, as LAION does), retrieval and zero-shot validation, and a Hub-ready export.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.labels import read_labels_table, rename_labels
from ..data.stream import stream_dataset
from ..evaluation.evaluate import evaluate_clap
from .augment import promote_longer, spec_augment
from .loss import global_contrastive_loss
from .objective import TrainingObjective, register_objective
from .weights import build_model

MAX_LOGIT_SCALE = math.log(100)  # LAION clamps exp(logit_scale_a) to [1, 100] after every step


@register_objective("contrastive")
class ContrastiveObjective(TrainingObjective):
    def build(self) -> tuple[nn.Module, Any, tuple[str, ...]]:
        model, processor, pretrained = build_model(self.recipe)
        model.logit_scale_t.requires_grad_(False)  # LAION never trains it (both directions use logit_scale_a)
        if self.recipe.train.freeze_text:
            # eval mode too: a frozen tower's dropout would only add noise to the targets the audio tower chases.
            model.text_model.requires_grad_(False).eval()
        self.model, self.class_names = model, None
        return model, processor, pretrained

    def stream(self, source: str, split: str, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        data = self.recipe.data
        return stream_dataset(source, split=split, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle,
                              shuffle_buffer=data.shuffle_buffer if shuffle else 0, columns=data.columns)

    def validation_set(self) -> list[dict]:
        """The first `max_validation_clips` validation examples, labels renamed to the zero-shot class names."""
        data = self.recipe.data
        examples = self.first_validation_examples()
        labels_file = Path(data.labels) if data.labels else Path(data.validation) / "labels.json"
        if labels_file.is_file():
            self.class_names, names = read_labels_table(labels_file)
            rename_labels(examples, names)
        return examples

    def make_batch(self, processor: Any, examples: list[dict], generator: torch.Generator) -> dict[str, torch.Tensor]:
        augment = self.recipe.augment
        inputs = processor(
            text=[e["caption"] for e in examples],
            audio=[e["audio"] for e in examples],
            sampling_rate=examples[0]["sampling_rate"],
            random_crop=augment.random_crop,
            generator=generator,
        )
        if augment.spec_augment:
            inputs["input_features"] = spec_augment(inputs["input_features"], generator)
        if self.model.config.enable_fusion and augment.promote_longer:
            inputs["is_longer"] = promote_longer(inputs["is_longer"], generator)
        return dict(inputs)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output = model(**batch)
        return global_contrastive_loss(
            output.audio_embeds.float(),
            output.text_embeds.float(),
            self.model.logit_scale_a,  # the same parameter as in the wrapped model
            local_loss=self.recipe.train.local_loss,
        )

    def after_step(self) -> None:
        with torch.no_grad():
            self.model.logit_scale_a.clamp_(0, MAX_LOGIT_SCALE)

    def step_logs(self) -> dict[str, float]:
        return {"train/logit_scale": self.model.logit_scale_a.exp().item()}

    def validate(self, model: nn.Module, processor: Any, examples: list[dict], batch_size: int) -> dict[str, Any]:
        return evaluate_clap(model, processor, examples, self.class_names, prompt=self.recipe.eval.prompt,
                             batch_size=batch_size)

    def export(self, model: nn.Module, processor: Any, metrics: dict[str, Any], out: Path) -> Path:
        from ..hub import export_hub_folder, push_folder

        recipe = self.recipe
        # The card names the data it was validated on: the corpus as the recipe gives it (a local path or a Hub id).
        folder = export_hub_folder(
            model, processor, out / "hub", recipe=recipe.to_dict(), metrics=metrics, model_name=recipe.name,
            dataset_name=recipe.data.validation, dataset_split=recipe.data.validation_split,
        )
        if recipe.push_to_hub:
            push_folder(folder, recipe.push_to_hub)
        return folder
