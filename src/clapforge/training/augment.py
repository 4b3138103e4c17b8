"""Training-time audio augmentation as LAION does it, drawn from a seeded generator so a resumed run repeats it.

Shapes: B batch, C channels (1, or 4 with fusion), T frames, F mel bins.
"""

import torch


def _stripes(batch: int, total: int, max_width: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """(B, total) bool: `count` stripes per row, each of width uniform in [0, max_width) at a uniform start."""
    widths = torch.randint(0, max_width, (batch, count), generator=generator)  # (B, S)
    starts = (torch.rand((batch, count), generator=generator) * (total - widths + 1)).long()  # (B, S)
    positions = torch.arange(total)[None, None, :]  # (1, 1, total)
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])  # (B, S, total)
    return inside.any(dim=1)


def spec_augment(
    features: torch.Tensor,
    generator: torch.Generator,
    time_width: int = 64,
    time_stripes: int = 2,
    freq_width: int = 8,
    freq_stripes: int = 2,
) -> torch.Tensor:
    """SpecAugment with LAION's settings (torchlibrosa `SpecAugmentation(64, 2, 8, 2)`) on (B, C, T, F) log-mel.

    LAION drops stripes to 0 after the model's BatchNorm, i.e. to the running mean. The mel here has not met the
    BatchNorm yet, so stripes take each clip's mean log-mel instead: the same "average, uninformative" value.
    The same stripes cover all channels of a clip, as in LAION.
    """
    b, _, t, f = features.shape
    time_mask = _stripes(b, t, time_width, time_stripes, generator)  # (B, T)
    freq_mask = _stripes(b, f, freq_width, freq_stripes, generator)  # (B, F)
    mask = (time_mask[:, :, None] | freq_mask[:, None, :])[:, None].to(features.device)  # (B, 1, T, F)
    fill = features.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return torch.where(mask, fill, features)


def promote_longer(is_longer: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 1) bool: if no clip is longer, mark one at random, as LAION's fused training does.

    Without it a batch of short clips leaves the fusion layers without gradient. Never used at inference.
    """
    if bool(is_longer.any()):
        return is_longer
    promoted = is_longer.clone()
    promoted[torch.randint(0, is_longer.shape[0], (1,), generator=generator)] = True
    return promoted
