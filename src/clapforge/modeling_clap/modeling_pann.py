"""PANN CNN6/CNN10/CNN14 (Kong et al. 2020), the convolutional audio encoders of LAION-CLAP, over a log-mel image.

Shape letters: B batch, C channels (input: 1, or 4 with fusion: global view + front/middle/back crops; inside: conv
channels), T frames, F mel bins, D width (channels of the last conv block), b the longer clips of a batch.

Parameter names follow LAION's `pann_model.py` (`bn0`, `conv_block{i}.conv{1,2}`, `conv_block{i}.bn{1,2}`, `fc1`,
`mel_conv2d`, `fusion_model`) so its checkpoints load by renaming the `audio_branch.` prefix only. Not part of the
encoder: LAION's AudioSet head `fc_audioset` (CLAP never uses it) and its torchlibrosa front end (the log-mel comes
from our feature extractor).
"""

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import initialization as init

from .configuration_laion_clap import PannConfig
from .modeling_fusion import AttentionalFeatureFusion, fuse_local_crops, longer_clips

# Fusion's local branch (LAION's `mel_conv2d`): the three crops lie side by side in time after it, so it strides 3x
# further in time than conv_block1's 2x2 pooling, and 2x in frequency like that pooling.
LOCAL_KERNEL = (5, 5)
LOCAL_STRIDE = (6, 2)
LOCAL_PADDING = (2, 2)


class ConvBlock(nn.Module):
    """One or two (conv, BN, ReLU) layers, then average pooling: LAION's `ConvBlock` (two 3x3) and `ConvBlock5x5`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, double: bool, pool_size: int) -> None:
        super().__init__()
        padding = kernel_size // 2
        # Registration order (conv1, conv2, bn1, bn2) matches LAION's, so state dicts list keys in the same order.
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        if double:
            self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        if double:
            self.bn2 = nn.BatchNorm2d(out_channels)
        self.double = double
        self.pool_size = pool_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T, F) -> (B, C_out, T / pool, F / pool)."""
        x = F.relu(self.bn1(self.conv1(x)))
        if self.double:
            x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, self.pool_size)


@contextmanager
def _batchnorm_stats_kept(module: nn.Module) -> Iterator[None]:
    """Restores the BatchNorm running statistics of `module` on exit.

    Activation checkpointing re-runs the forward during backward; in training mode that would update every running
    mean/var (and `num_batches_tracked`) a second time per step, so the recomputation runs inside this context.
    """
    norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        for m, (mean, var, count) in zip(norms, saved, strict=True):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)


class PannAudioEncoder(nn.Module):
    """Log-mel (B, C, T, F) -> pooled audio feature (B, D): LAION's `output_dict["embedding"]`."""

    def __init__(self, config: PannConfig) -> None:
        super().__init__()
        if config.kernel_size % 2 == 0:
            raise ValueError(f"PannAudioEncoder: kernel_size must be odd (same-size maps), got {config.kernel_size}")
        if config.enable_fusion and config.num_mel_bins % 2:
            # mel_conv2d rounds F/2 up and conv_block1's pooling rounds it down: the maps would not align.
            raise ValueError(f"PannAudioEncoder: fusion needs an even num_mel_bins, got {config.num_mel_bins}")
        self.config = config
        self.gradient_checkpointing = False
        self.bn0 = nn.BatchNorm2d(config.num_mel_bins)
        channels = [1, *config.block_channels]
        for i in range(len(config.block_channels)):
            last = i == len(config.block_channels) - 1
            block = ConvBlock(
                channels[i],
                channels[i + 1],
                kernel_size=config.kernel_size,
                double=config.variant != "cnn6",  # CNN6 has one 5x5 conv per block, CNN10/14 two 3x3 convs
                pool_size=1 if last and config.variant == "cnn14" else 2,  # only CNN14 skips its last pooling
            )
            self.add_module(f"conv_block{i + 1}", block)
        self.fc1 = nn.Linear(config.hidden_size, config.hidden_size)
        if config.enable_fusion:
            # LAION's Cnn14 `aff_2d` layers; CNN6/10 have none in LAION, but fusion sits at conv_block1's output,
            # which has the same shape in all three variants, so they get the same layers here.
            width = config.block_channels[0]
            self.mel_conv2d = nn.Sequential(
                nn.Conv2d(1, width, LOCAL_KERNEL, stride=LOCAL_STRIDE, padding=LOCAL_PADDING),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
            self.fusion_model = AttentionalFeatureFusion(width, config.aff_reduction)
        # transformers calls `_init_weights` on the leaf modules and skips modules without parameters of their own
        # (this encoder, its blocks), so every sub-module carries the mark that selects PANN's scheme for it.
        for module in self.modules():
            module.pann_init = True

    @property
    def conv_blocks(self) -> list[ConvBlock]:
        return [getattr(self, f"conv_block{i + 1}") for i in range(len(self.config.block_channels))]

    def _run_block(self, block: ConvBlock, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training:
            return checkpoint(
                block, x, use_reentrant=False, context_fn=lambda: (nullcontext(), _batchnorm_stats_kept(block))
            )
        return block(x)

    def forward(self, input_features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        """input_features: (B, C, T, F), is_longer: (B, 1) bool or None -> (B, D)."""
        if input_features.ndim != 4 or input_features.shape[-1] != self.config.num_mel_bins:
            raise ValueError(
                f"input_features must be (batch, channels, frames, {self.config.num_mel_bins} mel bins), "
                f"got {tuple(input_features.shape)}"
            )
        longer = longer_clips(input_features, is_longer, self.config.enable_fusion)  # (B,) or None
        # BatchNorm over mel bins, as LAION: F goes to the channel slot (with fusion, all 4 views share the stats).
        x = self.bn0(input_features.transpose(1, 3)).transpose(1, 3)  # (B, C, T, F)
        hidden = self._run_block(self.conv_block1, x[:, :1])  # (B, C, T/2, F/2)
        # Unlike LAION's Cnn14, which marks a random clip "longer" whenever none is (even in eval), no clip is ever
        # picked at random: an embedding depends only on its own input, not on the rest of the batch.
        if longer is not None:
            hidden = fuse_local_crops(hidden, x[:, 1:], longer, self.mel_conv2d, self.fusion_model, time_dim=2)
        hidden = F.dropout(hidden, p=self.config.dropout, training=self.training)
        for block in self.conv_blocks[1:]:
            hidden = self._run_block(block, hidden)
            hidden = F.dropout(hidden, p=self.config.dropout, training=self.training)
        hidden = hidden.mean(dim=3)  # (B, D, T')
        pooled = hidden.amax(dim=2) + hidden.mean(dim=2)  # (B, D)
        pooled = F.dropout(pooled, p=self.config.head_dropout, training=self.training)
        pooled = F.relu(self.fc1(pooled))
        return F.dropout(pooled, p=self.config.head_dropout, training=self.training)


def init_pann_weights(module: nn.Module) -> None:
    """PANN's initialisation of one module (call it on every sub-module): xavier-uniform conv/linear weights with zero
    biases, BatchNorm weight 1 and bias 0 with fresh running statistics.

    LAION leaves its fusion layers (`mel_conv2d`, `fusion_model`) at torch's default init; this function treats them
    like every other conv (a difference for training from scratch only: checkpoints overwrite both).
    Uses transformers' guarded init functions, so parameters already loaded from a checkpoint are left alone.
    """
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        init.xavier_uniform_(module.weight)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        init.ones_(module.weight)
        init.zeros_(module.bias)
        if module.running_mean is not None:
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
