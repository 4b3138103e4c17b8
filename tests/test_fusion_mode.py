"""Fusion has one switch, `audio_config.enable_fusion`: every feature extractor is derived from it, and a model refuses
features made for the other mode instead of returning wrong embeddings."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import clapforge
from clapforge import LaionClapConfig, LaionClapFeatureExtractor
from clapforge.presets import PRESETS, preset_dir
from clapforge.training.classification import ClassificationObjective
from clapforge.training.recipe import load_recipe
from conftest import randomize_

PROBE_RECIPE = Path(__file__).parents[1] / "recipes" / "synth-linear-probe.yaml"


def features(truncation: str, seconds: list[float]) -> dict:
    clips = [0.1 * np.random.default_rng(i).standard_normal(int(48000 * s)).astype(np.float32) for i, s in
             enumerate(seconds)]
    return LaionClapFeatureExtractor(truncation=truncation)(clips, sampling_rate=48000)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_files_state_fusion_once(preset):
    config = json.loads((preset_dir(preset) / "config.json").read_text())
    preprocessor = json.loads((preset_dir(preset) / "preprocessor_config.json").read_text())
    assert "enable_fusion" not in config and "enable_fusion" in config["audio_config"]
    assert "truncation" not in preprocessor


@pytest.mark.parametrize("preset", ["test-tiny", "htsat-tiny-fused", "pann-cnn14"])
@pytest.mark.parametrize("fusion", [False, True], ids=["unfused", "fused"])
def test_switching_fusion_switches_the_extractor(preset, fusion):
    config = clapforge.load_preset_config(preset, enable_fusion=fusion)
    extractor = clapforge.create_feature_extractor(preset, config)
    assert extractor.truncation == ("fusion" if fusion else "rand_trunc")
    assert extractor.feature_size == config.audio_config.num_mel_bins
    out = extractor([np.zeros(48000 * 12, dtype=np.float32)], sampling_rate=48000)
    assert out["input_features"].shape[1] == (4 if fusion else 1)


def test_preset_extractor_follows_the_preset_config():
    assert clapforge.create_feature_extractor("htsat-tiny-fused").truncation == "fusion"
    assert clapforge.create_feature_extractor("htsat-tiny").truncation == "rand_trunc"


def test_a_contradicting_extractor_setting_is_an_error():
    fused = clapforge.load_preset_config("test-tiny", enable_fusion=True)
    with pytest.raises(ValueError, match="truncation='rand_trunc' contradicts the model config.*'fusion'"):
        clapforge.create_feature_extractor("test-tiny", fused, truncation="rand_trunc")
    with pytest.raises(ValueError, match="feature_size=128 contradicts"):
        LaionClapFeatureExtractor.for_model_config(fused, feature_size=128)


@pytest.mark.parametrize("preset", ["test-tiny", "pann-mini-minilm"], ids=["htsat", "pann"])
def test_fused_model_refuses_rand_trunc_features(preset):
    torch.manual_seed(0)
    model = randomize_(clapforge.create_model(preset, enable_fusion=True))
    batch = features("rand_trunc", [3, 12])
    with pytest.raises(ValueError, match=r"built with fusion.*4-channel 'fusion'.*1-channel.*'rand_trunc'"):
        model.get_audio_embeds(batch["input_features"], batch["is_longer"])
    good = features("fusion", [3, 12])
    assert model.get_audio_embeds(good["input_features"], good["is_longer"]).shape == (2, model.config.projection_dim)


@pytest.mark.parametrize("preset", ["test-tiny", "pann-mini-minilm"], ids=["htsat", "pann"])
def test_unfused_model_refuses_fusion_features(preset):
    model = clapforge.create_model(preset).eval()
    batch = features("fusion", [3, 12])
    with pytest.raises(ValueError, match=r"built without fusion.*1-channel 'rand_trunc'.*4-channel.*'fusion'"):
        model.get_audio_embeds(batch["input_features"], batch["is_longer"])


def test_fusion_lives_in_the_audio_config_only(tmp_path):
    config = LaionClapConfig(enable_fusion=True)
    assert config.enable_fusion and config.audio_config.enable_fusion
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "enable_fusion" not in saved and saved["audio_config"]["enable_fusion"] is True
    assert LaionClapConfig.from_pretrained(tmp_path).enable_fusion


def test_configs_written_before_the_move_still_load(tmp_path):
    """Folders saved by earlier clapforge versions state the switch twice (equal); both readings agree."""
    old = LaionClapConfig(enable_fusion=True).to_dict()
    old["enable_fusion"] = True
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert LaionClapConfig.from_pretrained(tmp_path).audio_config.enable_fusion
    old["enable_fusion"] = False  # a hand-edited file that contradicts itself
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="enable_fusion=False contradicts audio_config.enable_fusion=True"):
        LaionClapConfig.from_pretrained(tmp_path)


def test_classification_extractor_follows_the_loaded_encoder(tiny_fused_model, tmp_path):
    """A probe on a fused CLAP gets fusion features, whatever the recipe's preset says."""
    tiny_fused_model.save_pretrained(tmp_path / "clap")
    recipe = load_recipe(PROBE_RECIPE, [f"init.model={tmp_path / 'clap'}", "classification.labels=[dog, rain]",
                                        f"output_dir={tmp_path / 'run'}"])
    model, extractor, _ = ClassificationObjective(recipe).build()
    assert model.config.enable_fusion and extractor.truncation == "fusion"
