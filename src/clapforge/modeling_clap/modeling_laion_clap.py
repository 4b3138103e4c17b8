"""LAION-CLAP: an audio encoder and a text encoder, each followed by a projection MLP into one joint space.

Shape letters: B batch (audio clips or texts), C input channels, T frames, F mel bins, L text tokens,
D encoder width, E joint embedding width.

Public tensor names follow transformers' `ClapModel` (`input_features`, `is_longer`, `audio_embeds`,
`logits_per_audio`), so pipelines and user code written for it work here.
"""

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .activations_laion_clap import build_activation
from .configuration_laion_clap import HtsatConfig, LaionClapConfig, PannConfig
from .modeling_htsat import HtsatAudioEncoder, SwinBlock, WindowAttention, relative_position_index, shifted_window_mask
from .modeling_pann import PannAudioEncoder, init_pann_weights


def contrastive_loss(
    audio_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    all_audio_embeds: torch.Tensor | None = None,
    all_text_embeds: torch.Tensor | None = None,
    first_label: int = 0,
) -> torch.Tensor:
    """Symmetric InfoNCE: audio row i belongs with text `first_label + i` of the columns, and vice versa.

    audio_embeds, text_embeds: (B, E) rows, L2-normalised. The columns default to the rows themselves; distributed
    training passes the embeddings gathered from every process as columns (`all_*`, (N, E)) and its own offset in
    them as `first_label` (open_clip's "local loss"). `logit_scale` is the *log* of the inverse temperature; one scale
    serves both directions, as in LAION's `ClipLoss` (its `logit_scale_t` only served the unused MLP loss).
    """
    all_audio_embeds = audio_embeds if all_audio_embeds is None else all_audio_embeds
    all_text_embeds = text_embeds if all_text_embeds is None else all_text_embeds
    scale = logit_scale.exp()
    logits_per_audio = scale * audio_embeds @ all_text_embeds.T  # (B, N)
    logits_per_text = scale * text_embeds @ all_audio_embeds.T  # (B, N)
    labels = torch.arange(audio_embeds.shape[0], device=audio_embeds.device) + first_label
    return (F.cross_entropy(logits_per_audio, labels) + F.cross_entropy(logits_per_text, labels)) / 2


@dataclass
class LaionClapOutput(ModelOutput):
    """audio_embeds (B_a, E) and text_embeds (B_t, E) are L2-normalised; logits_per_audio is (B_a, B_t)."""

    loss: torch.Tensor | None = None
    logits_per_audio: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    audio_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


@dataclass
class LaionClapEmbeddingOutput(ModelOutput):
    embeds: torch.Tensor | None = None


class ProjectionHead(nn.Module):
    """Two-layer MLP from an encoder's width into the joint space (LAION: Linear, ReLU, Linear)."""

    def __init__(self, in_dim: int, out_dim: int, act: str) -> None:
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim)
        self.activation = build_activation(act)
        self.linear2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.activation(self.linear1(x)))


def build_projection(config: LaionClapConfig, tower: Literal["audio", "text"]) -> ProjectionHead:
    """The projection head of the `tower` ("audio" or "text") encoder: every model class builds its heads here."""
    encoder_config = {"audio": config.audio_config, "text": config.text_config}[tower]
    return ProjectionHead(encoder_config.hidden_size, config.projection_dim, config.projection_hidden_act)


def build_audio_encoder(config: HtsatConfig | PannConfig) -> nn.Module:
    # Dispatch on model_type, not isinstance: remote code loads a second copy of the config classes.
    if config.model_type == HtsatConfig.model_type:
        return HtsatAudioEncoder(config)
    if config.model_type == PannConfig.model_type:
        return PannAudioEncoder(config)
    raise ValueError(f"unknown audio encoder type {config.model_type!r}")


def pool_text(hidden: torch.Tensor, pooler_output: torch.Tensor | None, mask: torch.Tensor, rule: str) -> torch.Tensor:
    """hidden: (B, L, D), mask: (B, L) -> (B, D), by the configured pooling rule."""
    if rule == "pooler":
        if pooler_output is None:
            raise ValueError("text_pooling='pooler' needs a text encoder with a pooler; use 'cls', 'mean' or 'last'")
        return pooler_output
    if rule == "cls":
        return hidden[:, 0]
    mask = mask.to(hidden.dtype)
    if rule == "mean":
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    # "last": the last non-padding token, wherever the tokenizer padded.
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = (positions * mask).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class LaionClapPreTrainedModel(PreTrainedModel):
    config: LaionClapConfig
    config_class = LaionClapConfig
    base_model_prefix = "laion_clap"
    main_input_name = "input_features"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if getattr(module, "pann_init", False):  # a PANN encoder's conv, norm or linear: PANN's xavier scheme
            init_pann_weights(module)
            return
        super()._init_weights(module)
        if isinstance(module, WindowAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=0.02)
            init.copy_(module.relative_position_index, relative_position_index(module.window))
        elif isinstance(module, SwinBlock) and module.attn_mask is not None:
            init.copy_(module.attn_mask, shifted_window_mask(*module.resolution, module.window, module.shift))
        elif hasattr(module, "logit_scale_a"):
            init.constant_(module.logit_scale_a, math.log(self.config.logit_scale_init_value))
            init.constant_(module.logit_scale_t, math.log(self.config.logit_scale_init_value))


class _AudioTower:
    """The audio half, shared by the joint model and the audio-only model."""

    def get_audio_embeds(self, input_features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T, F) log-mel -> (B, E) L2-normalised audio embeddings."""
        pooled = self.audio_model(input_features, is_longer)  # (B, D)
        return F.normalize(self.audio_projection(pooled), dim=-1)


class _TextTower:
    """The text half, shared by the joint model and the text-only model."""

    def get_text_embeds(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) token ids -> (B, E) L2-normalised text embeddings."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        pooled = pool_text(
            out.last_hidden_state, getattr(out, "pooler_output", None), attention_mask, self.config.text_pooling
        )  # (B, D)
        return F.normalize(self.text_projection(pooled), dim=-1)


# Written beside the weights by `LaionClapModel.save_pretrained`, so that `SentenceTransformer(folder,
# trust_remote_code=True)` loads the folder: one `Transformer` module whose modalities call the two embedding methods
# (already L2-normalised: no Pooling or Normalize module), with the processor's 77-token text limit. The module is
# `LaionClapTransformer` (SENTENCE_TRANSFORMERS_MODULE, copied beside it): sentence-transformers alone takes only five
# audio extensions for file paths and embeds any other path (bell.oga, clip.opus) as text.
SENTENCE_TRANSFORMERS_MODULE = "sentence_transformers_laion_clap.py"
_ST_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
SENTENCE_TRANSFORMERS_FILES = {
    "modules.json": [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers_laion_clap.LaionClapTransformer"}
    ],
    "sentence_bert_config.json": {
        "transformer_task": "feature-extraction",
        "modality_config": {
            "text": {"method": "get_text_embeds", "method_output_name": None},
            "audio": {"method": "get_audio_embeds", "method_output_name": None},
        },
        "module_output_name": "sentence_embedding",
        "max_seq_length": 77,
    },
    "config_sentence_transformers.json": {
        "model_type": "SentenceTransformer",
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        "requirements": {"sentence-transformers": ">=6.2", "transformers": ">=5.0"},
    },
}


class LaionClapModel(_AudioTower, _TextTower, LaionClapPreTrainedModel):
    """The full CLAP: `forward` scores every clip against every text; one call per tower gives embeddings."""

    def __init__(self, config: LaionClapConfig) -> None:
        super().__init__(config)
        self.text_model = AutoModel.from_config(config.text_config)
        self.text_projection = build_projection(config, "text")
        self.audio_model = build_audio_encoder(config.audio_config)
        self.audio_projection = build_projection(config, "audio")
        scale = torch.tensor(math.log(config.logit_scale_init_value))
        self.logit_scale_a = nn.Parameter(scale.clone())
        # Kept for checkpoint compatibility; LAION's released models never trained it and neither do we.
        self.logit_scale_t = nn.Parameter(scale.clone())
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        is_longer: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> LaionClapOutput | tuple:
        if input_ids is None or input_features is None:
            raise ValueError(
                "LaionClapModel.forward needs both input_ids and input_features; "
                "use get_audio_embeds / get_text_embeds for one tower"
            )
        audio_embeds = self.get_audio_embeds(input_features, is_longer)  # (B_a, E)
        text_embeds = self.get_text_embeds(input_ids, attention_mask, token_type_ids)  # (B_t, E)
        # LAION scores both directions with logit_scale_a (transformers uses logit_scale_t for text).
        logits_per_audio = self.logit_scale_a.exp() * audio_embeds @ text_embeds.T  # (B_a, B_t)
        loss = contrastive_loss(audio_embeds, text_embeds, self.logit_scale_a) if return_loss else None
        output = LaionClapOutput(loss, logits_per_audio, logits_per_audio.T, audio_embeds, text_embeds)
        return output if return_dict is not False else output.to_tuple()

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """transformers' folder, plus the sentence-transformers configuration (`SENTENCE_TRANSFORMERS_FILES`)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            module = Path(__file__).with_name(SENTENCE_TRANSFORMERS_MODULE)
            files = dict(SENTENCE_TRANSFORMERS_FILES)
            if module.is_file():
                (Path(save_directory) / module.name).write_text(module.read_text(encoding="utf-8"), encoding="utf-8")
            else:  # re-saved from a copy whose module file was never fetched: plain sentence-transformers module
                files["modules.json"] = [{**files["modules.json"][0], "type": _ST_TRANSFORMER}]
            for name, content in files.items():
                (Path(save_directory) / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


class LaionClapAudioModelWithProjection(_AudioTower, LaionClapPreTrainedModel):
    """The audio tower alone; loads from a full checkpoint (the text weights are skipped)."""

    _keys_to_ignore_on_load_unexpected = [r"^text_", r"^logit_scale"]

    def __init__(self, config: LaionClapConfig) -> None:
        super().__init__(config)
        self.audio_model = build_audio_encoder(config.audio_config)
        self.audio_projection = build_projection(config, "audio")
        self.post_init()

    def forward(
        self, input_features: torch.Tensor, is_longer: torch.Tensor | None = None, **kwargs
    ) -> LaionClapEmbeddingOutput:
        return LaionClapEmbeddingOutput(embeds=self.get_audio_embeds(input_features, is_longer))


class LaionClapTextModelWithProjection(_TextTower, LaionClapPreTrainedModel):
    """The text tower alone; loads from a full checkpoint (the audio weights are skipped)."""

    main_input_name = "input_ids"
    _keys_to_ignore_on_load_unexpected = [r"^audio_", r"^logit_scale"]

    def __init__(self, config: LaionClapConfig) -> None:
        super().__init__(config)
        self.text_model = AutoModel.from_config(config.text_config)
        self.text_projection = build_projection(config, "text")
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> LaionClapEmbeddingOutput:
        return LaionClapEmbeddingOutput(embeds=self.get_text_embeds(input_ids, attention_mask, token_type_ids))
