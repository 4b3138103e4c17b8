"""Named architectures. Each folder is a Hub repo minus weights: `config.json` + `preprocessor_config.json`."""

import json
from pathlib import Path
from typing import Any

from ..modeling_clap.configuration_laion_clap import LaionClapConfig

PRESETS_DIR = Path(__file__).parent
PRESETS = sorted(p.name for p in PRESETS_DIR.iterdir() if (p / "config.json").is_file())


def preset_dir(name: str) -> Path:
    """The folder of a named preset, or an existing folder given by path."""
    if name in PRESETS:
        return PRESETS_DIR / name
    if (Path(name) / "config.json").is_file():
        return Path(name)
    raise ValueError(f"unknown preset {name!r}: expected one of {PRESETS} or a folder holding a config.json")


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_preset_config(name: str, **overrides: Any) -> LaionClapConfig:
    """The preset's config with `overrides` applied; a dict for `audio_config`/`text_config` updates those keys only.

    Switching `enable_fusion` also switches the preset's feature extractor when built with `create_feature_extractor`.
    """
    config_dict = json.loads((preset_dir(name) / "config.json").read_text())
    config_dict.pop("model_type", None)
    return LaionClapConfig(**_merge(config_dict, overrides))


def create_model(name: str, **overrides: Any):
    """A randomly initialised `LaionClapModel` of a named preset (see `PRESETS`), e.g. `create_model("htsat-tiny")`."""
    from ..modeling_clap.modeling_laion_clap import LaionClapModel

    return LaionClapModel(load_preset_config(name, **overrides))


def create_feature_extractor(name: str, **overrides: Any):
    """The preset's `LaionClapFeatureExtractor` (rand_trunc for unfused presets, fusion for fused ones)."""
    from ..processing.feature_extraction_laion_clap import LaionClapFeatureExtractor

    kwargs = json.loads((preset_dir(name) / "preprocessor_config.json").read_text())
    kwargs.pop("feature_extractor_type", None)
    return LaionClapFeatureExtractor(**{**kwargs, **overrides})
