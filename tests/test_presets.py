"""Every preset builds; full sizes on the meta device, test-tiny for real."""

from pathlib import Path

import pytest
import torch

import clapforge
from clapforge.presets import PRESETS

# PANN sizes from the PANNs paper (Kong et al. 2020: CNN6 4.8M, CNN14 80.8M parameters), minus the 527-way AudioSet
# head `fc_audioset` that CLAP does not use; the paper rounds to 0.1M. LAION's CNN10 is not the paper's (five blocks
# up to 1024 channels, LAION_CLAP.md 1.3), so it is checked by counting its layers instead.
PANN_AUDIO_PARAMS_M = {
    "pann-cnn6": 4.8 - (512 * 527 + 527) / 1e6,
    "pann-cnn10": (
        2 * 64  # bn0
        + sum(9 * i * o + 9 * o * o + 4 * o for i, o in [(1, 64), (64, 128), (128, 256), (256, 512), (512, 1024)])
        + 1024 * 1024
        + 1024  # fc1
    )
    / 1e6,
    "pann-cnn14": 80.8 - (2048 * 527 + 527) / 1e6,
}
HTSAT_PRESETS = ["htsat-tiny", "htsat-tiny-fused", "htsat-base", "htsat-large"]
# `make demo`'s preset: a CNN10-style PANN (two 3x3 convs per block, 16-128 channels) and all-MiniLM-L6-v2's BERT.
DEMO_PRESET = "pann-mini-minilm"
DEMO_AUDIO_PARAMS = (
    2 * 64  # bn0
    # per block: conv1 (in -> out) and conv2 (out -> out), no bias, each followed by a BatchNorm (2 * out)
    + sum(9 * i * o + 9 * o * o + 4 * o for i, o in [(1, 16), (16, 32), (32, 64), (64, 128)])
    + 128 * 128
    + 128  # fc1
)


def transformers_htsat_params(config) -> int:
    """Parameters of transformers' own HTS-AT built with the same hyper-parameters (no AudioSet head either)."""
    from transformers import ClapAudioConfig, ClapAudioModel

    audio = config.audio_config
    hf = ClapAudioConfig(
        patch_embeds_hidden_size=audio.embed_dim,
        hidden_size=audio.hidden_size,
        depths=audio.depths,
        num_attention_heads=audio.num_heads,
        enable_fusion=config.enable_fusion,
    )
    # transformers' HTS-AT cannot be built on the meta device (it reads tensor values in __init__).
    return sum(p.numel() for p in ClapAudioModel(hf).parameters())


def test_all_presets_are_listed():
    assert set(PRESETS) == set(HTSAT_PRESETS) | set(PANN_AUDIO_PARAMS_M) | {"test-tiny", DEMO_PRESET}


@pytest.mark.parametrize("name", HTSAT_PRESETS + sorted(PANN_AUDIO_PARAMS_M))
def test_full_size_preset_builds_on_meta(name):
    with torch.device("meta"):
        model = clapforge.create_model(name)
    audio = sum(p.numel() for p in model.audio_model.parameters())
    text = sum(p.numel() for p in model.text_model.parameters()) / 1e6
    if name in HTSAT_PRESETS:
        assert audio == transformers_htsat_params(model.config), name
    else:
        assert abs(audio / 1e6 - PANN_AUDIO_PARAMS_M[name]) < 0.1, f"{name}: {audio / 1e6:.2f}M audio parameters"
    assert 120 < text < 130, f"{name}: RoBERTa-base has ~125M parameters, got {text:.1f}M"
    assert model.config.projection_dim == 512
    assert model.config.enable_fusion == name.endswith("fused")


def test_demo_preset_is_a_small_pann_with_minilm_text():
    """The text tower must be all-MiniLM-L6-v2 exactly (the demo loads its weights), pooled by mean as
    sentence-transformers does; the audio tower is counted layer by layer."""
    import json
    import math

    from safetensors import safe_open

    from clapforge.training.weights import resolve_text_source

    with torch.device("meta"):
        model = clapforge.create_model(DEMO_PRESET)
    assert sum(p.numel() for p in model.audio_model.parameters()) == DEMO_AUDIO_PARAMS
    minilm = Path(resolve_text_source("minilm"))
    reference = json.loads((minilm / "config.json").read_text())
    keys = [
        "model_type",
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "type_vocab_size",
        "layer_norm_eps",
        "pad_token_id",
        "hidden_act",
    ]
    assert {k: getattr(model.config.text_config, k) for k in keys} == {k: reference[k] for k in keys}
    with safe_open(minilm / "model.safetensors", "pt") as weights:
        names = [name for name in weights.keys() if "position_ids" not in name]  # noqa: SIM118 (not a dict)
        minilm_params = sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    assert sum(p.numel() for p in model.text_model.parameters()) == minilm_params
    assert model.config.text_pooling == "mean" and not model.config.enable_fusion


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
