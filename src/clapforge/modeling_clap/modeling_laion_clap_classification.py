"""Supervised audio classification on the CLAP audio encoder: LAION's linear probe (`lp_model.py`) as a Hub class.

Shape letters: B batch, C input channels, T frames, F mel bins, D encoder width, E joint embedding width,
K classes.

The classifier is the audio encoder, optionally the audio projection (LAION's probe always applies it, unnormalised),
and a head: a Linear (E or D -> K) or LAION's `--lp-mlp` MLP (Linear(in, 2 in), ReLU, Linear(2 in, K)).
`config.problem_type` chooses the loss: "single_label_classification" (cross-entropy over K) or
"multi_label_classification" (binary cross-entropy per class). Labels may be class indices (B,), multi-hot (B, K),
or soft targets (B, K) as mixup makes them; cross-entropy with (B, K) targets is the soft-target cross-entropy.
Config keys of its own: `classifier_use_projection` (bool), `classifier_head` ("linear" | "mlp").
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_laion_clap import LaionClapConfig
from .modeling_laion_clap import LaionClapPreTrainedModel, build_audio_encoder, build_projection

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
HEADS = ("linear", "mlp")


class ClassifierHead(nn.Module):
    """Linear, or LAION's `--lp-mlp` head `MLPLayers([in, 2 in, K])` (its dropout 0.1 between the layers)."""

    def __init__(self, in_dim: int, num_labels: int, kind: str, dropout: float = 0.1) -> None:
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"classifier_head must be one of {HEADS}, got {kind!r}")
        if kind == "linear":
            self.layers = nn.Sequential(nn.Linear(in_dim, num_labels))
        else:
            self.layers = nn.Sequential(
                nn.Linear(in_dim, 2 * in_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * in_dim, num_labels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LaionClapForAudioClassification(LaionClapPreTrainedModel):
    """Audio encoder (+ audio projection) + classification head; loads the audio weights of a full CLAP checkpoint."""

    input_modalities = ("audio",)
    # A full CLAP checkpoint also holds the text tower and logit scales; a classifier has no use for them.
    _keys_to_ignore_on_load_unexpected = [r"^text_", r"^logit_scale"]
    _keys_to_ignore_on_load_missing = [r"^classifier\."]

    def __init__(self, config: LaionClapConfig) -> None:
        super().__init__(config)
        if not config.id2label:
            raise ValueError("LaionClapForAudioClassification needs config.id2label (use from_clap(..., labels=))")
        self.num_labels = len(config.id2label)
        if config.problem_type is None:
            config.problem_type = SINGLE_LABEL
        if config.problem_type not in (SINGLE_LABEL, MULTI_LABEL):
            raise ValueError(f"problem_type must be {SINGLE_LABEL!r} or {MULTI_LABEL!r}, got {config.problem_type!r}")
        self.use_projection = bool(getattr(config, "classifier_use_projection", True))
        self.audio_model = build_audio_encoder(config.audio_config)
        if self.use_projection:
            self.audio_projection = build_projection(config, "audio")
        in_dim = config.projection_dim if self.use_projection else config.audio_config.hidden_size
        self.classifier = ClassifierHead(in_dim, self.num_labels, getattr(config, "classifier_head", "linear"))
        self.encoder_frozen = False  # training state, not configuration: see freeze_encoder
        self.post_init()

    @classmethod
    def from_clap(
        cls,
        path_or_model: str | os.PathLike | LaionClapPreTrainedModel,
        labels: list[str],
        multi_label: bool = False,
        use_projection: bool = True,
        head: str = "linear",
        **from_pretrained_kwargs,
    ) -> LaionClapForAudioClassification:
        """A classifier over `labels` (index order) whose audio tower is a CLAP checkpoint's; the head is new."""
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be a non-empty list of distinct names, got {labels!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        extra = {
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "problem_type": MULTI_LABEL if multi_label else SINGLE_LABEL,
            "classifier_use_projection": use_projection,
            "classifier_head": head,
        }
        if isinstance(path_or_model, str | os.PathLike):
            config = LaionClapConfig.from_pretrained(path_or_model)
        else:
            config = path_or_model.config.__class__.from_dict(path_or_model.config.to_dict())
        config.architectures = [cls.__name__]
        for key, value in extra.items():
            setattr(config, key, value)
        if isinstance(path_or_model, str | os.PathLike):
            # Loads the audio tower's weights; the head (and, unused, the text tower) are reported and skipped.
            return cls.from_pretrained(path_or_model, config=config, **from_pretrained_kwargs)
        source = path_or_model
        model = cls(config)
        model.audio_model.load_state_dict(source.audio_model.state_dict())
        if use_projection:
            model.audio_projection.load_state_dict(source.audio_projection.state_dict())
        return model.to(next(source.parameters()).device)

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Linear probe: no gradient into the encoder (and projection), which stays in eval mode while training.

        LAION's probe calls `clap_model.eval()` in every forward when frozen, so BatchNorm statistics and dropout
        stay those of the pretrained model; `train()` here does the same.
        """
        self.encoder_frozen = frozen
        for module in self._encoder_modules():
            module.requires_grad_(not frozen)
        self.train(self.training)

    def _encoder_modules(self) -> list[nn.Module]:
        return [self.audio_model] + ([self.audio_projection] if self.use_projection else [])

    def train(self, mode: bool = True) -> LaionClapForAudioClassification:
        super().train(mode)
        if self.encoder_frozen:
            for module in self._encoder_modules():
                module.eval()
        return self

    def get_audio_features(self, input_features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T, F) log-mel -> (B, E) projected (or (B, D) pooled) features, unnormalised as in LAION's probe."""
        pooled = self.audio_model(input_features, is_longer)  # (B, D)
        return self.audio_projection(pooled) if self.use_projection else pooled

    def forward(
        self,
        input_features: torch.Tensor,
        is_longer: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        logits = self.classifier(self.get_audio_features(input_features, is_longer))  # (B, K)
        loss = None if labels is None else self.loss(logits, labels)
        output = SequenceClassifierOutput(loss=loss, logits=logits)
        return output if return_dict is not False else output.to_tuple()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits (B, K); labels (B,) class indices (single-label only) or (B, K) multi-hot / soft targets."""
        labels = labels.to(logits.device)
        if self.config.problem_type == MULTI_LABEL:
            if labels.shape != logits.shape:
                raise ValueError(
                    f"multi-label targets must be (B, K) = {tuple(logits.shape)}, got {tuple(labels.shape)}"
                )
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        if labels.ndim == 2:
            return F.cross_entropy(logits.float(), labels.float())  # soft targets (mixup)
        return F.cross_entropy(logits.float(), labels.long())


__all__ = ["LaionClapForAudioClassification"]
