"""The classification objective of `train(recipe)` (`objective: classification`): LAION's linear probe / fine-tune.

    clapforge train --config recipes/synth-linear-probe.yaml init.model=runs/clap/hub data.train=runs/corpus

`train()` keeps its loop (Accelerate, schedule, checkpoints, resume); it asks this `TrainingObjective` for the
model, the data streams, each batch, the loss, validation and the export. What LAION's `lp_main.py` /
`lp_train.py` do and we do:
- the model is the CLAP audio encoder + audio projection + a linear or MLP head (`LaionClapForAudioClassification`),
  from `init.model` (a CLAP folder; its text tower is skipped) or randomly initialised from the preset;
- `freeze_encoder`: the linear probe, encoder frozen and kept in eval mode (LAION `--lp-freeze`); otherwise full
  fine-tuning with the encoder at `train.pretrained_lr` and the new head at `train.lr` (LAION `--split-opt`);
- mixup (`--lp-mixup`): `get_mix_lambda(0.5, B)` draws one lambda per clip from Beta(0.5, 0.5), and `do_mixup`
  mixes clip i with clip B-1-i (the reversed batch), inputs and targets alike. LAION mixes after the encoder's
  BatchNorm (bn0); we mix the log-mel before it, the same thing up to bn0's per-bin affine map in eval mode;
- the loss by `problem_type`: cross-entropy (soft targets under mixup) or binary cross-entropy;
- validation: accuracy (single-label) or mAP and mAUC (multi-label), `evaluation/classification_metrics.py`.

Label checks (before a step runs, naming the sample's key): a label the classifier does not know, an empty label
list in single-label mode, or several labels in single-label mode without `first_label_only`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.labelled import read_labelled_files, stream_labelled
from ..evaluation.classification_metrics import classification_metrics
from ..modeling_clap.modeling_laion_clap import LaionClapModel
from ..modeling_clap.modeling_laion_clap_classification import LaionClapForAudioClassification
from ..presets import create_feature_extractor, load_preset_config
from .augment import promote_longer, spec_augment
from .objective import TrainingObjective, register_objective
from .recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)


class LabelError(ValueError):
    """A sample's labels do not fit the classifier; the message names the sample's key."""


def label_targets(
    keys: list[str], labels: list[list[str]], label2id: dict[str, int], multi_label: bool, first_label_only: bool
) -> torch.Tensor:
    """Label names -> (B,) class indices (single-label) or (B, K) multi-hot float targets (multi-label)."""
    targets = torch.zeros(len(keys), len(label2id)) if multi_label else torch.zeros(len(keys), dtype=torch.long)
    for row, (key, names) in enumerate(zip(keys, labels, strict=True)):
        if not multi_label:
            if not names:
                raise LabelError(f"sample {key!r} has no label; single-label classification needs exactly one")
            if len(names) > 1 and not first_label_only:
                raise LabelError(f"sample {key!r} has {len(names)} labels {names} in single-label classification; "
                                 "set classification.first_label_only or classification.multi_label")
            names = names[:1]
        for name in names:
            if name not in label2id:
                known = sorted(label2id)
                raise LabelError(f"sample {key!r} has label {name!r}, which the classifier does not know "
                                 f"(its {len(known)} classes: {known[:20]}{' ...' if len(known) > 20 else ''})")
            if multi_label:
                targets[row, label2id[name]] = 1.0
            else:
                targets[row] = label2id[name]
    return targets


def mix_lambda(alpha: float, batch: int, generator: torch.Generator) -> torch.Tensor:
    """(B,) float32 lambdas ~ Beta(alpha, alpha), one per clip (LAION `get_mix_lambda`), drawn from `generator`."""
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    return torch.from_numpy(rng.beta(alpha, alpha, batch).astype(np.float32))


def do_mixup(x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """LAION `do_mixup`: x (B, ...) mixed with its reversed batch, clip i by lam[i]."""
    lam = lam.to(x.device, x.dtype).view(-1, *([1] * (x.ndim - 1)))
    return x * lam + x.flip(0) * (1 - lam)


@register_objective("classification")
class ClassificationObjective(TrainingObjective):
    """The classification objective; one instance per run."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        self.cfg = recipe.classification
        self.class_names = self._class_names()
        self.label2id = {name: i for i, name in enumerate(self.class_names)}

    def _class_names(self) -> list[str]:
        cfg, data = self.cfg, self.recipe.data
        if cfg.labels:
            return list(cfg.labels)
        candidates = [Path(data.labels)] if data.labels else []
        if cfg.reader != "stream":
            return read_labelled_files(cfg.reader, data.train, data.train_split).class_names
        candidates.append(Path(data.train) / "labels.json")
        for path in candidates:
            if path.is_file():
                table = json.loads(path.read_text())
                return list(table["classes"] if isinstance(table, dict) else table)
        raise RecipeError("classification.labels: give the class names (or data.labels, a labels.json with "
                          "'classes', or a reader that knows them)")

    def build(self) -> tuple[LaionClapForAudioClassification, Any, tuple[str, ...]]:
        """(classifier, feature extractor, name prefixes of the parameters that start from pretrained weights)."""
        recipe, cfg = self.recipe, self.cfg
        source = recipe.init.model or recipe.init.audio
        kwargs = dict(labels=self.class_names, multi_label=cfg.multi_label, use_projection=cfg.use_projection,
                      head=cfg.head)
        if source:
            if not (Path(source) / "config.json").is_file():
                raise RecipeError(f"init.model: {source} is not a clapforge model folder (no config.json)")
            model = LaionClapForAudioClassification.from_clap(source, dtype=torch.float32, **kwargs)
            pretrained: tuple[str, ...] = ("audio_model.", "audio_projection.")
        else:
            model = LaionClapForAudioClassification.from_clap(LaionClapModel(load_preset_config(recipe.preset)),
                                                              **kwargs)
            pretrained = ()
        if cfg.freeze_encoder:
            model.freeze_encoder()
        model.train()
        self.model = model
        return model, create_feature_extractor(recipe.preset, model.config), pretrained

    def stream(self, source: str, split: str, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        return stream_labelled(self.cfg.reader, source, split, shuffle=shuffle, seed=seed, rank=rank,
                               world_size=world_size, columns=self.recipe.data.columns,
                               balanced=self.cfg.balanced and shuffle)

    def validation_set(self) -> list[dict]:
        examples = self.first_validation_examples()
        self.targets([e["key"] for e in examples], [e["labels"] for e in examples])  # fail before training starts
        return examples

    def targets(self, keys: list[str], labels: list[list[str]]) -> torch.Tensor:
        return label_targets(keys, labels, self.label2id, self.cfg.multi_label, self.cfg.first_label_only)

    def make_batch(self, feature_extractor, examples: list[dict], generator: torch.Generator) -> dict:
        """Examples -> {input_features, is_longer, labels}, with LAION's augmentation and (optional) mixup."""
        augment = self.recipe.augment
        labels = self.targets([e["key"] for e in examples], [e["labels"] for e in examples])
        inputs = dict(feature_extractor([e["audio"] for e in examples], sampling_rate=examples[0]["sampling_rate"],
                                        random_crop=augment.random_crop, generator=generator))
        if augment.spec_augment and not self.cfg.freeze_encoder:
            inputs["input_features"] = spec_augment(inputs["input_features"], generator)
        if self.model.config.enable_fusion and augment.promote_longer:
            inputs["is_longer"] = promote_longer(inputs["is_longer"], generator)
        if self.cfg.mixup:
            lam = mix_lambda(self.cfg.mixup_alpha, len(examples), generator)
            if not self.cfg.multi_label:
                labels = torch.nn.functional.one_hot(labels, len(self.class_names)).float()
            inputs["input_features"] = do_mixup(inputs["input_features"], lam)
            inputs["is_longer"] = inputs["is_longer"] | inputs["is_longer"].flip(0)
            labels = do_mixup(labels, lam)
        inputs["labels"] = labels
        return inputs

    def loss(self, model, batch: dict) -> torch.Tensor:
        return model(**batch).loss

    @torch.no_grad()
    def validate(self, model: LaionClapForAudioClassification, feature_extractor, examples: list[dict],
                 batch_size: int) -> dict[str, Any]:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        logits = []
        try:
            for i in range(0, len(examples), batch_size):
                chunk = examples[i : i + batch_size]
                inputs = feature_extractor([e["audio"] for e in chunk], sampling_rate=chunk[0]["sampling_rate"])
                logits.append(model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu())
        finally:
            model.train(was_training)
        targets = self.targets([e["key"] for e in examples], [e["labels"] for e in examples])
        return classification_metrics(torch.cat(logits), targets, self.cfg.multi_label, self.class_names)

    def loggable(self, metrics: dict[str, Any]) -> dict[str, float]:
        """The numbers, and the lists of excluded classes as counts."""
        out = {}
        for key, value in metrics.items():
            if isinstance(value, list):
                out[f"num_{key}"] = float(len(value))
            elif isinstance(value, int | float):
                out[key] = float(value)
        return out

    def export(self, model: LaionClapForAudioClassification, feature_extractor, metrics: dict[str, Any],
               out: Path) -> Path:
        folder = out / "hub"
        model.save_pretrained(folder)
        feature_extractor.save_pretrained(folder)
        return folder


__all__ = ["ClassificationObjective", "LabelError", "do_mixup", "label_targets", "mix_lambda"]
