"""What `train()` asks of a training objective. Each objective is a class with this interface, so the loop in
`train.py` reads top to bottom with no per-objective branches (as open_clip's training tasks do).

Objectives: `contrastive` (CLAP pre-training or fine-tuning, `contrastive.py`) and `classification` (LAION's linear
probe / fine-tune, `classification.py`). A new one subclasses `TrainingObjective` in a module of its own and joins the
registry with `@register_objective(name)`, `name` being one of `recipe.OBJECTIVES` (recipes are checked against those
names before any objective is imported). This module imports no objective, since each imports it; `train.py` imports
them all, which registers them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .recipe import OBJECTIVES, Recipe, RecipeError


class TrainingObjective:
    """One instance per run; `build` comes first, the other methods follow the loop's stages."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def build(self) -> tuple[nn.Module, Any, tuple[str, ...]]:
        """(model in train mode, its processor or feature extractor, name prefixes of parameters that start
        pretrained, which train at `train.pretrained_lr`)."""
        raise NotImplementedError

    def stream(self, source: str, split: str, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        """The examples of `source` for this process (a `datasets.IterableDataset` with a `skip_counter`)."""
        raise NotImplementedError

    def validation_set(self) -> list[dict]:
        """The validation examples, read once before training (and checked, so bad data fails before step 1)."""
        raise NotImplementedError

    def first_validation_examples(self) -> list[dict]:
        """The first `data.max_validation_clips` examples of the validation split (all when it is unset), in order."""
        data = self.recipe.data
        stream = self.stream(data.validation, data.validation_split, shuffle=False)
        return list(itertools.islice(stream, data.max_validation_clips or None))

    def make_batch(self, processor: Any, examples: list[dict], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Examples of the stream -> model inputs, with the training augmentation drawn from `generator`."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar loss of one batch (`model` may be wrapped for distributed training)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Runs after each optimizer step (e.g. clamping a learned temperature)."""

    def step_logs(self) -> dict[str, float]:
        """Objective-specific values logged with every step, beside the loss and learning rate."""
        return {}

    def validate(self, model: nn.Module, processor: Any, examples: list[dict], batch_size: int) -> dict[str, Any]:
        """Validation metrics of the unwrapped model on `examples`."""
        raise NotImplementedError

    def loggable(self, metrics: dict[str, Any]) -> dict[str, float]:
        """The part of `validate`'s metrics a tracker takes (numbers only)."""
        return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}

    def export(self, model: nn.Module, processor: Any, metrics: dict[str, Any], out: Path) -> Path:
        """Write the final model folder under `out` (and push it when the recipe asks); returns the folder."""
        raise NotImplementedError


# name -> class, filled as the objective modules are imported.
_REGISTERED: dict[str, type[TrainingObjective]] = {}


def register_objective(name: str) -> Callable[[type[TrainingObjective]], type[TrainingObjective]]:
    """Class decorator: recipes with `objective: <name>` train with the decorated class."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective {name!r} is not one of recipe.OBJECTIVES {OBJECTIVES}: name it there first")

    def register(cls: type[TrainingObjective]) -> type[TrainingObjective]:
        if name in _REGISTERED:
            raise ValueError(f"objective {name!r} is already registered, by {_REGISTERED[name].__qualname__}")
        _REGISTERED[name] = cls
        return cls

    return register


def objective_for(recipe: Recipe) -> TrainingObjective:
    """The objective a recipe names (`objective:`)."""
    if recipe.objective not in _REGISTERED:
        raise RecipeError(
            f"objective: {recipe.objective!r} is not a registered objective; registered: {sorted(_REGISTERED)} "
            "(an objective registers when its module is imported, as clapforge.training.train does)"
        )
    return _REGISTERED[recipe.objective](recipe)
