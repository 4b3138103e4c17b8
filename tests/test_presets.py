"""Every preset builds; full sizes on the meta device, test-tiny for real."""

import pytest
import torch

import clapforge
from clapforge.presets import PRESETS

# Audio-encoder parameter counts without LAION's AudioSet heads, from the architecture tables in
# shared/reference/LAION_CLAP.md (HTS-AT-tiny is ~28M in the HTS-AT paper, PANN Cnn14 ~80M with its 527-way head).
EXPECTED_AUDIO_PARAMS_M = {
    "htsat-tiny": (25, 31), "htsat-tiny-fused": (25, 31), "htsat-base": (80, 95), "htsat-large": (300, 360),
    "pann-cnn6": (4, 5.5), "pann-cnn10": (4.5, 6), "pann-cnn14": (76, 81),
}


def test_all_presets_are_listed():
    assert set(PRESETS) == set(EXPECTED_AUDIO_PARAMS_M) | {"test-tiny"}


@pytest.mark.parametrize("name", sorted(EXPECTED_AUDIO_PARAMS_M))
def test_full_size_preset_builds_on_meta(name):
    with torch.device("meta"):
        model = clapforge.create_model(name)
    audio = sum(p.numel() for p in model.audio_model.parameters()) / 1e6
    text = sum(p.numel() for p in model.text_model.parameters()) / 1e6
    low, high = EXPECTED_AUDIO_PARAMS_M[name]
    assert low <= audio <= high, f"{name}: {audio:.1f}M audio parameters"
    assert 120 < text < 130, f"{name}: RoBERTa-base has ~125M parameters, got {text:.1f}M"
    assert model.config.projection_dim == 512
    assert model.config.enable_fusion == name.endswith("fused")


def test_test_tiny_is_small_and_runs():
    model = clapforge.create_model("test-tiny").eval()
    assert sum(p.numel() for p in model.parameters()) < 500_000
    with torch.no_grad():
        embeds = model.get_audio_embeds(torch.randn(1, 1, 1001, 64))
    assert embeds.shape == (1, model.config.projection_dim)


def test_overrides_merge_into_sub_configs():
    config = clapforge.load_preset_config("htsat-tiny", audio_config={"drop_path_rate": 0.0}, enable_fusion=True)
    assert config.audio_config.drop_path_rate == 0.0 and config.audio_config.embed_dim == 96
    assert config.enable_fusion and config.audio_config.enable_fusion
