"""Attentional feature fusion (AFF, Dai et al. 2021) in its 2-D form, as LAION-CLAP's `aff_2d` uses it, and the check
that an audio encoder gets the kind of features its fusion switch needs.

Shapes: B batch, C channels, H/W the two spatial axes of a feature map, T frames, F mel bins, b the longer clips of
a batch, X/Y the two axes of a local crop.
"""

import torch
import torch.nn.functional as F
from torch import nn


class AttentionalFeatureFusion(nn.Module):
    """Merges a global feature map with a local one through a learned per-position, per-channel weight.

    Sub-module indices follow LAION's `AFF` so that checkpoints load by name
    (`local_att.{0,1,3,4}`, `global_att.{1,2,4,5}`).
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        inner = channels // reduction
        self.local_att = nn.Sequential(
            nn.Conv2d(channels, inner, kernel_size=1),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
        )
        self.global_att = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, inner, kernel_size=1),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """x, residual: (B, C, H, W) -> (B, C, H, W)."""
        single = self.training and x.shape[0] == 1
        if single:
            # BatchNorm cannot train on one sample; LAION duplicates it and keeps the first row.
            x, residual = x.repeat(2, 1, 1, 1), residual.repeat(2, 1, 1, 1)
        summed = x + residual
        weight = torch.sigmoid(self.local_att(summed) + self.global_att(summed))
        # The factor 2 is LAION's (and transformers'): both branches are scaled so weight=0.5 is an identity sum.
        fused = 2 * x * weight + 2 * residual * (1 - weight)
        return fused[:1] if single else fused


# The feature extractor's two modes, by the channel count of the features they make.
FEATURE_MODES = {4: "fusion", 1: "rand_trunc"}


def longer_clips(
    input_features: torch.Tensor, is_longer: torch.Tensor | None, enable_fusion: bool
) -> torch.Tensor | None:
    """input_features: (B, C, T, F), is_longer: (B, 1) -> the (B,) bool mask of clips whose crops are fused, or None.

    Refuses features of the other mode: a fused model given 1-channel `rand_trunc` features (Slaney mel, one view)
    would otherwise run as an unfused model on the wrong mel scale and return wrong embeddings without a word.
    """
    expected = 4 if enable_fusion else 1
    got = input_features.shape[1]
    if got != expected:
        raise ValueError(
            f"this model was built {'with' if enable_fusion else 'without'} fusion (enable_fusion={enable_fusion}) "
            f"and takes {expected}-channel '{FEATURE_MODES[expected]}' features, but got {got}-channel input_features "
            f"({repr(FEATURE_MODES[got]) + ' features' if got in FEATURE_MODES else 'neither mode'}): use the "
            "processor saved with the model, or LaionClapFeatureExtractor.for_model_config(model.config)"
        )
    if not enable_fusion or is_longer is None:
        return None
    return is_longer.reshape(-1).to(device=input_features.device, dtype=torch.bool)


# Its shapes depend on how many clips are longer, so under torch.compile it runs eagerly between two graphs (dynamo
# would otherwise break the graph at `longer.any()` and log a warning that suggests a wrong fix).
@torch.compiler.disable
def fuse_local_crops(
    global_map: torch.Tensor,
    crops: torch.Tensor,
    longer: torch.Tensor,
    local_branch: nn.Module,
    fusion_model: AttentionalFeatureFusion,
    time_dim: int,
) -> torch.Tensor:
    """global_map: (B, C, H, W), crops: (B, 3, X, Y), longer: (B,) -> (B, C, H, W): LAION's fusion step, shared by
    HTS-AT (after its patch embedding) and PANN (after conv_block1).

    The three local crops (front, middle, back) of each longer clip go through `local_branch` one by one, are laid
    side by side along the map's time axis `time_dim`, zero-padded (or cut) to the global map's length as LAION does,
    and merged into that clip's global map by `fusion_model`. Shorter clips keep their global map untouched.
    """
    if torch.onnx.is_in_onnx_export():
        # An ONNX graph has one path for every batch: fuse every clip, then keep the fused map of the longer ones.
        # Equal to the eager path clip by clip (in eval mode BatchNorm and pooling see one clip at a time).
        fused = fusion_model(global_map, _local_map(crops, local_branch, global_map.shape[time_dim], time_dim))
        return torch.where(longer[:, None, None, None], fused, global_map)
    if not longer.any():
        return global_map
    local = _local_map(crops[longer], local_branch, global_map.shape[time_dim], time_dim)  # (b, C, H, W)
    fused = fusion_model(global_map[longer], local)
    return global_map.index_put((longer.nonzero()[:, 0],), fused)


def _local_map(crops: torch.Tensor, local_branch: nn.Module, length: int, time_dim: int) -> torch.Tensor:
    """crops: (b, 3, X, Y) -> (b, C, H, W): each crop through `local_branch`, the three side by side along
    `time_dim`, zero-padded (or cut) to the global map's `length`."""
    b, n = crops.shape[:2]
    local = local_branch(crops.flatten(0, 1).unsqueeze(1)).unflatten(0, (b, n))  # (b, 3, C, h, w)
    local = torch.cat(local.unbind(1), dim=time_dim)  # (b, C, H, 3w) or (b, C, 3h, W): front, middle, back
    missing = length - local.shape[time_dim]
    return F.pad(local, [0, 0] * (local.ndim - 1 - time_dim) + [0, missing])
