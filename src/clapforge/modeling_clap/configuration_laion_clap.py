"""Configurations of LAION-CLAP: the joint model and its two audio encoders (HTS-AT, PANN).

This file is copied into every saved model folder, so it imports only transformers and its sibling activation table
(never clapforge).
"""

from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .activations_laion_clap import check_activation

TEXT_POOLING_RULES = ("pooler", "cls", "mean", "last")
FUSION_TYPES = ("aff_2d",)
PANN_VARIANTS = {
    # variant: (channels of the conv blocks, kernel size of the conv blocks)
    "cnn6": ((64, 128, 256, 512), 5),
    "cnn10": ((64, 128, 256, 512, 1024), 3),
    "cnn14": ((64, 128, 256, 512, 1024, 2048), 3),
}


class HtsatConfig(PreTrainedConfig):
    """HTS-AT: a Swin transformer over the log-mel image (LAION's `htsat.py`, tiny/base/large)."""

    model_type = "laion_clap_htsat"
    base_config_key = "audio_config"

    num_mel_bins: int = 64
    spec_size: int = 256
    patch_size: int = 4
    patch_stride: int = 4
    embed_dim: int = 96
    depths: list[int] | tuple[int, ...] = (2, 2, 6, 2)
    num_heads: list[int] | tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    hidden_act: str = "gelu"
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    layer_norm_eps: float = 1e-5
    enable_fusion: bool = False
    fusion_type: str = "aff_2d"
    aff_reduction: int = 4

    def __post_init__(self, **kwargs: Any) -> None:
        self.depths = list(self.depths)
        self.num_heads = list(self.num_heads)
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"HtsatConfig: depths {self.depths} and num_heads {self.num_heads} differ in length")
        if self.spec_size % self.num_mel_bins:
            raise ValueError(f"HtsatConfig: spec_size {self.spec_size} must be a multiple of num_mel_bins")
        check_activation(self.hidden_act, "HtsatConfig: hidden_act")
        if self.enable_fusion and self.fusion_type not in FUSION_TYPES:
            raise ValueError(f"HtsatConfig: fusion_type {self.fusion_type!r} is not one of {FUSION_TYPES}")
        super().__post_init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        """Width of the pooled audio feature, the input of the audio projection."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


class PannConfig(PreTrainedConfig):
    """PANN CNN6/10/14 (LAION's `pann_model.py`), configured by explicit block widths."""

    model_type = "laion_clap_pann"
    base_config_key = "audio_config"

    variant: str = "cnn14"
    num_mel_bins: int = 64
    block_channels: list[int] | tuple[int, ...] | None = None
    kernel_size: int | None = None
    dropout: float = 0.2  # after each conv block
    head_dropout: float = 0.5  # before and after fc1: LAION hard-codes 0.5 (small models from scratch need less)
    enable_fusion: bool = False
    fusion_type: str = "aff_2d"
    aff_reduction: int = 4

    def __post_init__(self, **kwargs: Any) -> None:
        if self.variant not in PANN_VARIANTS:
            raise ValueError(f"PannConfig: variant {self.variant!r} is not one of {sorted(PANN_VARIANTS)}")
        default_channels, default_kernel = PANN_VARIANTS[self.variant]
        self.block_channels = list(self.block_channels or default_channels)
        self.kernel_size = self.kernel_size or default_kernel
        if self.enable_fusion and self.fusion_type not in FUSION_TYPES:
            raise ValueError(f"PannConfig: fusion_type {self.fusion_type!r} is not one of {FUSION_TYPES}")
        super().__post_init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        return self.block_channels[-1]


AUDIO_CONFIG_CLASSES = {HtsatConfig.model_type: HtsatConfig, PannConfig.model_type: PannConfig}


def _build_audio_config(audio_config: Any) -> PreTrainedConfig:
    # AutoConfig cannot resolve our audio types on a machine without clapforge, so dispatch here.
    if audio_config is None:
        return HtsatConfig()
    if isinstance(audio_config, PreTrainedConfig):
        return audio_config
    audio_config = dict(audio_config)
    model_type = audio_config.pop("model_type", HtsatConfig.model_type)
    if model_type not in AUDIO_CONFIG_CLASSES:
        raise ValueError(f"audio_config.model_type {model_type!r} is not one of {sorted(AUDIO_CONFIG_CLASSES)}")
    return AUDIO_CONFIG_CLASSES[model_type](**audio_config)


def _stated_fusion(audio_config: Any) -> bool | None:
    """The fusion switch an audio config states explicitly, or None when it leaves it to the default."""
    if isinstance(audio_config, PreTrainedConfig):
        return audio_config.enable_fusion
    if isinstance(audio_config, dict):
        return audio_config.get("enable_fusion")
    return None


class LaionClapConfig(PreTrainedConfig):
    """The joint audio-text model: an audio encoder, any transformers text encoder, two projection MLPs."""

    model_type = "laion_clap"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="roberta")}

    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 512
    projection_hidden_act: str = "relu"
    text_pooling: str = "pooler"
    logit_scale_init_value: float = 1 / 0.07
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        # Fusion is a property of the audio encoder, so `audio_config.enable_fusion` is its one home. A top-level
        # `enable_fusion` (configs written before it moved, `create_model(..., enable_fusion=True)`) sets it, and
        # contradicting an audio config that states the opposite is an error, never a silent choice.
        fusion = kwargs.pop("enable_fusion", None)
        stated = _stated_fusion(self.audio_config)
        self.audio_config = _build_audio_config(self.audio_config)
        if fusion is not None:
            if stated is not None and bool(stated) != bool(fusion):
                raise ValueError(
                    f"LaionClapConfig: enable_fusion={fusion} contradicts audio_config.enable_fusion={stated}; "
                    "fusion is set in audio_config only"
                )
            self.audio_config.enable_fusion = bool(fusion)
        if self.text_pooling not in TEXT_POOLING_RULES:
            raise ValueError(f"text_pooling {self.text_pooling!r} is not one of {TEXT_POOLING_RULES}")
        check_activation(self.projection_hidden_act, "projection_hidden_act")
        super().__post_init__(**kwargs)

    @property
    def enable_fusion(self) -> bool:
        """Whether the audio encoder merges the 4-channel fusion input (read from, and written to, audio_config)."""
        return self.audio_config.enable_fusion

    @enable_fusion.setter
    def enable_fusion(self, value: bool) -> None:
        self.audio_config.enable_fusion = bool(value)

    @property
    def sub_configs(self) -> dict:
        return {"text_config": AutoConfig, "audio_config": type(self.audio_config)}
