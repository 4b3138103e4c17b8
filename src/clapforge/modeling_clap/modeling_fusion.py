"""Attentional feature fusion (AFF, Dai et al. 2021) in its 2-D form, as LAION-CLAP's `aff_2d` uses it.

Shapes: B batch, C channels, H/W the two spatial axes of a feature map.
"""

import torch
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
