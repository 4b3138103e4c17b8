"""HTS-AT (Chen et al. 2022), the Swin-transformer audio encoder of LAION-CLAP, over a log-mel image.

Shape letters: B batch, C input channels (1, or 4 with fusion: global + front/middle/back crops), T frames,
F mel bins, H/W token grid, N tokens (H*W or a window's size), D width, h heads, w windows per clip.

Parameter names follow LAION's `htsat.py` (`patch_embed.*`, `layers.{i}.blocks.{j}.attn.qkv`, ...) so its
checkpoints load by renaming the `audio_branch.` prefix only. LAION's AudioSet heads (`tscam_conv`, `head`) are
not part of the encoder: CLAP embeddings never use them.
"""

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .activations_laion_clap import build_activation
from .configuration_laion_clap import HtsatConfig
from .modeling_fusion import AttentionalFeatureFusion, fuse_local_crops, longer_clips

# Swin's shifted-window mask value: large enough to zero a softmax weight, small enough to stay finite in fp16.
SHIFT_MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, D) -> (B, w, window*window, D)."""
    b, h, w, d = x.shape
    x = x.view(b, h // window, window, w // window, window, d)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, -1, window * window, d)  # (B, w, N, D)


def window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """(B, w, window*window, D) -> (B, H, W, D)."""
    b, _, _, d = windows.shape
    x = windows.view(b, h // window, w // window, window, window, d)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, d)  # (B, H, W, D)


# Keys's cubic convolution kernel with a = -0.75, the one torch's (and LAION's) bicubic interpolation uses.
CUBIC_A = np.float32(-0.75)


@functools.lru_cache(maxsize=8)
def bicubic_taps(frames_in: int, frames_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each of `frames_out` frames of a bicubic (align_corners) stretch of `frames_in` frames reads from:
    (frames_out, 4) frame indices (clamped at the edges, as torch clamps them) and their (frames_out, 4) weights.
    Computed in numpy so that an ONNX export records them as constants, not as ops run on every call; in float32
    like torch's kernel, whose source positions (`scale * frame`) decide the weights to ~1e-4 otherwise."""
    one = np.float32(1)
    scale = np.float32(frames_in - 1) / np.float32(frames_out - 1) if frames_out > 1 else np.float32(0)
    source = scale * np.arange(frames_out, dtype=np.float32)  # where each output frame falls between input frames
    base = np.floor(source)
    t = source - base  # (S*r,) in [0, 1)

    def near(x: np.ndarray) -> np.ndarray:  # the kernel for |x| <= 1
        return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1

    def far(x: np.ndarray) -> np.ndarray:  # the kernel for 1 < |x| < 2
        return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A

    weight = np.stack([far(t + one), near(t), near(one - t), far(one + (one - t))], axis=1)  # (S*r, 4)
    index = np.clip(base.astype(np.int64)[:, None] - 1 + np.arange(4), 0, frames_in - 1)  # (S*r, 4)
    return torch.from_numpy(index), torch.from_numpy(weight.astype(np.float32))


def stretch_frames(mel: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, C, T, F) -> (B, C, frames, F): LAION's bicubic (align_corners) stretch of the time axis, as a gather of
    four frames and a weighted sum. The numbers of `F.interpolate(mel, (frames, F), mode="bicubic",
    align_corners=True)` to float32 rounding (the mel axis keeps its size: its bicubic weights are [0, 1, 0, 0]), but an
    exported graph gets Gather/Mul/ReduceSum instead of ONNX Runtime's cubic Resize, 9% of the int8 audio tower's
    time on an AVX2 CPU. Used under ONNX export only: PyTorch's own bicubic kernel is fast, and torch.compile would
    trace `bicubic_taps` into every call."""
    index, weight = bicubic_taps(int(mel.shape[2]), int(frames))  # static: the graph keeps them as constants
    taps = mel[:, :, index.to(mel.device), :]  # (B, C, frames, 4, F)
    return (taps * weight.to(mel)[:, :, None]).sum(dim=3)  # (B, C, frames, F)


def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) index into the (2*window-1)**2 relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """(w, N, N) additive mask keeping attention inside the regions a cyclic shift glued together."""
    row = (torch.arange(h) >= h - window).long() + (torch.arange(h) >= h - shift).long()
    col = (torch.arange(w) >= w - window).long() + (torch.arange(w) >= w - shift).long()
    region = (row[:, None] * 3 + col[None, :]).float()[None, :, :, None]  # (1, H, W, 1)
    region = window_partition(region, window)[0, :, :, 0]  # (w, N)
    different = region[:, None, :] != region[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, SHIFT_MASK_VALUE)


class DropPath(nn.Module):
    """Stochastic depth: drops a sample's whole residual branch in training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative-position bias."""

    def __init__(self, dim: int, heads: int, window: int, qkv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        # Not persistent: derived from the window size, and rebuilt by `_init_weights` after meta-device loading.
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, w, N, D), shift_mask: (w, N, N) or None -> (B, w, N, D)."""
        b, nw, n, d = x.shape
        hd = d // self.heads
        qkv = self.qkv(x).view(b, nw, n, 3, self.heads, hd)
        # SDPA takes its fused CPU kernel only for 4-D inputs, so windows are folded into the head axis.
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, b, nw * self.heads, n, hd).unbind(0)  # 3 x (B, w*h, N, D/h)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1)  # (h, N, N)
        mask = bias.expand(nw, -1, -1, -1) if shift_mask is None else bias + shift_mask[:, None]  # (w, h, N, N)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask.reshape(1, nw * self.heads, n, n).to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.0,
        )  # (B, w*h, N, D/h)
        out = out.view(b, nw, self.heads, n, hd).transpose(2, 3).reshape(b, nw, n, d)  # (B, w, N, D)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = build_activation(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinBlock(GradientCheckpointingLayer):
    """Pre-norm Swin block: (shifted) window attention then MLP, each with a residual and stochastic depth."""

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        qkv_bias: bool,
        act: str,
        drop: float,
        attn_drop: float,
        drop_path: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:
            # The grid fits in one window: no partition, and nothing to shift.
            window, shift = min(resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, heads, window, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act, drop)
        mask = shifted_window_mask(*resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) -> (B, N, D)."""
        b, _, d = x.shape
        h, w = self.resolution
        y = self.norm1(x).view(b, h, w, d)  # (B, H, W, D)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), self.attn_mask)  # (B, w, N, D)
        y = window_merge(y, self.window, h, w)  # (B, H, W, D)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, h * w, d))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halves the grid and doubles the width: each 2x2 neighbourhood becomes one token."""

    def __init__(self, dim: int, resolution: tuple[int, int], eps: float) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H*W, D) -> (B, H*W/4, 2D)."""
        b, _, d = x.shape
        x = x.view(b, *self.resolution, d)  # (B, H, W, D)
        # LAION's order: (even row, even col), (odd, even), (even, odd), (odd, odd).
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        x = x.view(b, -1, 4 * d)  # (B, H*W/4, 4D)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        depth: int,
        heads: int,
        window: int,
        drop_paths: list[float],
        downsample: bool,
        block_kwargs: dict,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                resolution,
                heads,
                window,
                0 if i % 2 == 0 else window // 2,
                drop_path=drop_paths[i],
                **block_kwargs,
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, resolution, block_kwargs["eps"]) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    """Cuts the log-mel image into patches; with fusion, mixes in the three local crops of longer clips."""

    def __init__(self, channels: int, patch: int, stride: int, eps: float, fusion: bool, aff_reduction: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, channels, kernel_size=patch, stride=stride)
        self.norm = nn.LayerNorm(channels, eps=eps)
        self.fusion = fusion
        if fusion:
            # Three local crops sit side by side along time, so each is squeezed 3x more in that axis.
            self.mel_conv2d = nn.Conv2d(1, channels, kernel_size=(patch, 3 * patch), stride=(stride, 3 * stride))
            self.fusion_model = AttentionalFeatureFusion(channels, aff_reduction)

    def forward(self, image: torch.Tensor, longer: torch.Tensor | None) -> torch.Tensor:
        """image: (B, C, S, S), longer: (B,) bool or None -> (B, N, D)."""
        tokens = self.proj(image[:, :1])  # (B, D, H, W)
        if self.fusion and longer is not None:
            # The image's time axis is its last: the crops' patches sit side by side along W.
            tokens = fuse_local_crops(tokens, image[:, 1:], longer, self.mel_conv2d, self.fusion_model, time_dim=3)
        return self.norm(tokens.flatten(2).transpose(1, 2))  # (B, N, D)


class HtsatAudioEncoder(nn.Module):
    """Log-mel (B, C, T, F) -> pooled audio feature (B, D)."""

    def __init__(self, config: HtsatConfig) -> None:
        super().__init__()
        self.config = config
        self.freq_ratio = config.spec_size // config.num_mel_bins
        self.bn0 = nn.BatchNorm2d(config.num_mel_bins)
        self.patch_embed = PatchEmbed(
            config.embed_dim,
            config.patch_size,
            config.patch_stride,
            config.layer_norm_eps,
            config.enable_fusion,
            config.aff_reduction,
        )
        grid = config.spec_size // config.patch_stride
        # Stochastic depth grows linearly over all blocks. Plain Python so that building on the meta device works.
        total = sum(config.depths)
        drop_paths = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        block_kwargs = dict(
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            act=config.hidden_act,
            drop=config.drop_rate,
            attn_drop=config.attn_drop_rate,
            eps=config.layer_norm_eps,
        )
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads, strict=True)):
            start = sum(config.depths[:i])
            self.layers.append(
                SwinStage(
                    dim=config.embed_dim * 2**i,
                    resolution=(grid // 2**i, grid // 2**i),
                    depth=depth,
                    heads=heads,
                    window=config.window_size,
                    drop_paths=drop_paths[start : start + depth],
                    downsample=i < len(config.depths) - 1,
                    block_kwargs=block_kwargs,
                )
            )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def mel_to_image(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, C, T, F) -> (B, C, S, S): time stretched to S*r frames, then folded into r bands stacked on F."""
        b, c, t, f = mel.shape
        r, s = self.freq_ratio, self.config.spec_size
        if t > s * r or f != self.config.num_mel_bins:
            raise ValueError(
                f"input_features must have at most {s * r} frames and {self.config.num_mel_bins} mel "
                f"bins, got {tuple(mel.shape)}"
            )
        if t < s * r:
            # ONNX Runtime's cubic Resize was 9% of the int8 tower's time: an export gets the same stretch as a gather.
            if torch.onnx.is_in_onnx_export():
                mel = stretch_frames(mel, s * r)  # (B, C, S*r, F)
            else:
                mel = F.interpolate(mel, (s * r, f), mode="bicubic", align_corners=True)  # (B, C, S*r, F)
        mel = mel.reshape(b, c * r, s, f).transpose(2, 3)  # (B, C*r, F, S)
        return mel.reshape(b, c, r * f, s)  # (B, C, S, S)

    def forward(self, input_features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        """input_features: (B, C, T, F), is_longer: (B, 1) bool or None -> (B, D)."""
        if input_features.ndim != 4:
            raise ValueError(
                f"input_features must be (batch, channels, frames, mel_bins), got {tuple(input_features.shape)}"
            )
        longer = longer_clips(input_features, is_longer, self.config.enable_fusion)  # (B,) or None
        # BatchNorm over mel bins: put F in the channel slot, then back.
        x = self.bn0(input_features.transpose(1, 3)).transpose(1, 3)  # (B, C, T, F)
        x = self.patch_embed(self.mel_to_image(x), longer)  # (B, N, D)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x).mean(dim=1)  # (B, D)
