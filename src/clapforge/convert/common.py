"""What both converters share: the conversion report, the key filter, and loading converted weights into a model."""

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from ..modeling_clap.configuration_laion_clap import LaionClapConfig
from ..modeling_clap.modeling_laion_clap import LaionClapModel

# Buffers both sides derive from the config; a checkpoint may lack them.
DERIVED_BUFFERS = r"(relative_position_index|attn_mask|position_ids|token_type_ids)$"
# The RoBERTa hyper-parameters both formats carry (layer_norm_eps is handled apart: the formats disagree on it).
TEXT_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)


@dataclass
class ConversionReport:
    source: str
    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    dropped_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"converted {self.kind} checkpoint {self.source}", f"dropped {len(self.dropped_keys)} keys:"]
        lines += [f"  {key}" for key in self.dropped_keys]
        return "\n".join(lines)


def is_dropped(key: str, patterns: list[str]) -> bool:
    return any(re.search(p, key) for p in patterns)


def load_converted(config: LaionClapConfig, state: dict[str, torch.Tensor]) -> LaionClapModel:
    """A model of `config` holding the converted `state` (derived buffers may be missing; nothing else may)."""
    model = LaionClapModel(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Derived buffers are rebuilt from the config, so they may be missing; nothing else may be.
    missing = [k for k in missing if not re.search(DERIVED_BUFFERS, k)]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not fit the inferred architecture: missing {missing}, unexpected {unexpected}"
        )
    return model
