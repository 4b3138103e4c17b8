"""transformers' `ClapModel` folders (the `laion/clap-htsat-*` layout) <-> clapforge: config and weights both ways."""

import re
from pathlib import Path
from typing import Any

import torch

from ..modeling_clap.configuration_laion_clap import LaionClapConfig
from ..modeling_clap.modeling_laion_clap import LaionClapModel
from .common import DERIVED_BUFFERS, TEXT_CONFIG_KEYS, is_dropped

TRANSFORMERS_DROPPED = [r"\.position_ids$", r"\.token_type_ids$", r"\.relative_position_index$"]


# transformers' HTS-AT names -> ours (which are LAION's).
HF_AUDIO_RENAMES = [
    ("audio_model.audio_encoder.batch_norm.", "audio_model.bn0."),
    ("audio_model.audio_encoder.", "audio_model."),
    (".layernorm_before.", ".norm1."),
    (".layernorm_after.", ".norm2."),
    (".attention.self.relative_position_bias_table", ".attn.relative_position_bias_table"),
    (".attention.output.dense.", ".attn.proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
]


def read_folder_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if files:
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(f))
        return state
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not bins:
        raise ValueError(f"{folder} holds no *.safetensors or pytorch_model*.bin weights")
    state = {}
    for f in bins:
        state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def transformers_config_to_clapforge(hf: dict[str, Any]) -> LaionClapConfig:
    """A `ClapConfig` dict (config.json of a transformers CLAP folder) as a `LaionClapConfig`."""
    audio, text = hf.get("audio_config", {}), hf.get("text_config", {})

    def get(d: dict, key: str, default: Any) -> Any:
        return d.get(key, default) if d.get(key) is not None else default

    from transformers import ClapAudioConfig, ClapTextConfig

    text_defaults, audio_defaults = ClapTextConfig(), ClapAudioConfig()
    text_config = {k: get(text, k, getattr(text_defaults, k)) for k in TEXT_CONFIG_KEYS}
    # Keep transformers' eps (1e-12 by default) so the converted model computes what the source computed.
    text_config.update(model_type="roberta", layer_norm_eps=get(text, "layer_norm_eps", text_defaults.layer_norm_eps))
    patch_stride = get(audio, "patch_stride", audio_defaults.patch_stride)
    audio_config = {
        "model_type": "laion_clap_htsat",
        "num_mel_bins": get(audio, "num_mel_bins", audio_defaults.num_mel_bins),
        "spec_size": get(audio, "spec_size", audio_defaults.spec_size),
        "patch_size": get(audio, "patch_size", audio_defaults.patch_size),
        "patch_stride": patch_stride[0] if isinstance(patch_stride, (list, tuple)) else patch_stride,
        "embed_dim": get(audio, "patch_embeds_hidden_size", audio_defaults.patch_embeds_hidden_size),
        "depths": list(get(audio, "depths", audio_defaults.depths)),
        "num_heads": list(get(audio, "num_attention_heads", audio_defaults.num_attention_heads)),
        "window_size": get(audio, "window_size", audio_defaults.window_size),
        "mlp_ratio": get(audio, "mlp_ratio", audio_defaults.mlp_ratio),
        "qkv_bias": get(audio, "qkv_bias", audio_defaults.qkv_bias),
        "hidden_act": get(audio, "hidden_act", audio_defaults.hidden_act),
        "layer_norm_eps": get(audio, "layer_norm_eps", audio_defaults.layer_norm_eps),
        "aff_reduction": get(audio, "aff_block_r", audio_defaults.aff_block_r),
        "drop_path_rate": 0.1,  # LAION's training value; transformers stores 0.0. Inference ignores it.
    }
    return LaionClapConfig(
        audio_config=audio_config,
        text_config=text_config,
        enable_fusion=bool(get(audio, "enable_fusion", False)),
        projection_dim=get(hf, "projection_dim", 512),
        projection_hidden_act=get(hf, "projection_hidden_act", "relu"),
        logit_scale_init_value=get(hf, "logit_scale_init_value", 1 / 0.07),
    )


def transformers_state_to_clapforge(state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    converted, dropped = {}, []
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        key = key.removeprefix("clap.")
        if is_dropped(key, TRANSFORMERS_DROPPED):
            dropped.append(key)
            continue
        if key.startswith("audio_model."):
            match = re.match(r"(.*)\.attention\.self\.(query|key|value)\.(weight|bias)$", key)
            if match:
                qkv.setdefault(f"{match.group(1)}.attn.qkv.{match.group(3)}", {})[match.group(2)] = tensor
                continue
            for old, new in HF_AUDIO_RENAMES:
                key = key.replace(old, new)
        converted[key] = tensor
    for key, parts in qkv.items():
        for old, new in HF_AUDIO_RENAMES:
            key = key.replace(old, new)
        converted[key] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return converted, dropped


def clapforge_to_transformers_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `transformers_state_to_clapforge` for an HTS-AT + RoBERTa model."""
    converted = {}
    for key, tensor in state.items():
        if not key.startswith("audio_model."):
            converted[key] = tensor
            continue
        key = key.replace("audio_model.bn0.", "audio_model.batch_norm.").replace(
            "audio_model.", "audio_model.audio_encoder.", 1
        )
        for ours, theirs in [
            (".norm1.", ".layernorm_before."),
            (".norm2.", ".layernorm_after."),
            (".attn.relative_position_bias_table", ".attention.self.relative_position_bias_table"),
            (".attn.proj.", ".attention.output.dense."),
            (".mlp.fc1.", ".intermediate.dense."),
            (".mlp.fc2.", ".output.dense."),
        ]:
            key = key.replace(ours, theirs)
        if ".attn.qkv." in key:
            for name, part in zip(("query", "key", "value"), tensor.chunk(3, dim=0), strict=True):
                converted[key.replace(".attn.qkv.", f".attention.self.{name}.")] = part.clone()
            continue
        converted[key] = tensor
    return converted


def clapforge_to_transformers_config(config: LaionClapConfig) -> dict[str, Any]:
    audio, text = config.audio_config, config.text_config
    if audio.model_type != "laion_clap_htsat" or text.model_type != "roberta" or config.text_pooling != "pooler":
        raise ValueError(
            "transformers' ClapModel only has HTS-AT + RoBERTa with pooler pooling; this model has "
            f"{audio.model_type} + {text.model_type} with {config.text_pooling!r} pooling"
        )
    return {
        "model_type": "clap",
        "projection_dim": config.projection_dim,
        "projection_hidden_act": config.projection_hidden_act,
        "logit_scale_init_value": config.logit_scale_init_value,
        "text_config": {k: getattr(text, k) for k in (*TEXT_CONFIG_KEYS, "layer_norm_eps")},
        "audio_config": {
            "num_mel_bins": audio.num_mel_bins,
            "spec_size": audio.spec_size,
            "patch_size": audio.patch_size,
            "patch_stride": [audio.patch_stride, audio.patch_stride],
            "patch_embeds_hidden_size": audio.embed_dim,
            "hidden_size": audio.hidden_size,
            "depths": list(audio.depths),
            "num_attention_heads": list(audio.num_heads),
            "window_size": audio.window_size,
            "mlp_ratio": audio.mlp_ratio,
            "qkv_bias": audio.qkv_bias,
            "hidden_act": audio.hidden_act,
            "layer_norm_eps": audio.layer_norm_eps,
            "enable_fusion": config.enable_fusion,
            "fusion_type": audio.fusion_type if config.enable_fusion else None,
            "aff_block_r": audio.aff_reduction,
        },
    }


def to_transformers_model(model: LaionClapModel):
    """transformers' own `ClapModel` holding this HTS-AT + RoBERTa model's weights, in eval mode."""
    from transformers import ClapConfig, ClapModel

    hf_config = clapforge_to_transformers_config(model.config)
    hf_config.pop("model_type")
    hf_model = ClapModel(ClapConfig(**hf_config)).eval()
    state = clapforge_to_transformers_state(model.state_dict())
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not re.search(DERIVED_BUFFERS, k)]
    if missing or unexpected:
        raise ValueError(f"export to transformers failed: missing {missing}, unexpected {unexpected}")
    return hf_model


def write_transformers_folder(model: LaionClapModel, dst: Path, tokenizer: Any) -> None:
    from transformers import ClapFeatureExtractor, ClapProcessor

    to_transformers_model(model).save_pretrained(dst)
    feature_extractor = ClapFeatureExtractor(
        frequency_min=50, frequency_max=14000, truncation="fusion" if model.config.enable_fusion else "rand_trunc"
    )
    if tokenizer is not None:
        ClapProcessor(feature_extractor, tokenizer).save_pretrained(dst)
    else:
        feature_extractor.save_pretrained(dst)
