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

    A top-level `enable_fusion=...` is shorthand for `audio_config={"enable_fusion": ...}` (fusion's one home), and
    `create_feature_extractor` follows it.
    """
    config_dict = json.loads((preset_dir(name) / "config.json").read_text())
    config_dict.pop("model_type", None)
    if "enable_fusion" in overrides:
        overrides = _merge(overrides, {"audio_config": {"enable_fusion": overrides.pop("enable_fusion")}})
    return LaionClapConfig(**_merge(config_dict, overrides))


def create_model(name: str, **overrides: Any):
    """A randomly initialised `LaionClapModel` of a named preset (see `PRESETS`), e.g. `create_model("htsat-tiny")`."""
    from ..modeling_clap.modeling_laion_clap import LaionClapModel

    return LaionClapModel(load_preset_config(name, **overrides))


def create_feature_extractor(name: str, config: LaionClapConfig | None = None, **settings: Any):
    """The `LaionClapFeatureExtractor` of a preset: its `preprocessor_config.json` settings (and `settings`), in the
    mode the model config's fusion switch selects (`config`, e.g. `model.config`, or else the preset's own config).

    The preset's files never state the mode: a fused model gets `fusion` features, any other `rand_trunc` ones.
    """
    from ..processing.feature_extraction_laion_clap import LaionClapFeatureExtractor

    preset_settings = json.loads((preset_dir(name) / "preprocessor_config.json").read_text())
    preset_settings.pop("feature_extractor_type", None)
    config = config if config is not None else load_preset_config(name)
    return LaionClapFeatureExtractor.for_model_config(config, **{**preset_settings, **settings})
