"""Waveform inputs of the LAION-CLAP feature extractor: the accepted layouts, PCM scaling, mono, checks, resampling.

This file is copied flat into saved model folders beside `feature_extraction_laion_clap.py`, so it imports only the
standard library, numpy, torch and torchaudio.

Shapes: T samples, S samples of a packed buffer (several clips end to end).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torchaudio

# Integer PCM: (offset, scale) so that (x - offset) / scale lies in [-1, 1].
_PCM = {torch.int16: (0.0, 32768.0), torch.int32: (0.0, 2.0**31), torch.uint8: (128.0, 128.0)}


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def as_clip_list(raw_audio: Any) -> list[Any]:
    """Splits the accepted input layouts into a list of clips (each still in its original type)."""
    if isinstance(raw_audio, (np.ndarray, torch.Tensor)):
        if raw_audio.ndim == 1:
            return [raw_audio]
        if raw_audio.ndim == 2:
            return list(raw_audio)
        raise ValueError(
            f"Got a {raw_audio.ndim}-D array of shape {tuple(raw_audio.shape)}. Accepted: one mono clip (T,), a batch "
            "of mono clips (B, T), or a list of clips, each (T,) or multi-channel (C, T) / (T, C)."
        )
    if isinstance(raw_audio, (list, tuple)):
        if len(raw_audio) == 0:
            raise ValueError("Got an empty list: pass at least one clip.")
        if isinstance(raw_audio[0], (int, float, np.number)):
            return [raw_audio]
        return list(raw_audio)
    raise TypeError(f"Expected a numpy array, torch tensor or list of clips, got {type(raw_audio).__name__}.")


def to_mono_float(clip: Any, index: int, device: torch.device) -> torch.Tensor:
    """One clip -> float32 mono tensor (T,) on `device`, integer PCM scaled to [-1, 1]."""
    if isinstance(clip, torch.Tensor):
        x = clip.detach()
    elif isinstance(clip, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(clip))
    elif isinstance(clip, (list, tuple)):
        x = torch.from_numpy(np.asarray(clip, dtype=np.float32))
    else:
        raise TypeError(f"Clip {index}: expected a numpy array, torch tensor or list, got {type(clip).__name__}.")
    if x.ndim not in (1, 2):
        raise ValueError(
            f"Clip {index} has {x.ndim} dimensions, shape {tuple(x.shape)}. A clip must be mono (T,) or "
            "multi-channel (C, T) / (T, C); a batch is a list of such clips or a (B, T) array."
        )
    x = x.to(device)
    if x.dtype in _PCM:
        # float32 is exact here: int16/uint8 fit its mantissa and int32 is divided by a power of two.
        offset, scale = _PCM[x.dtype]
        x = (x.float() - offset) / scale
    elif x.is_floating_point():
        x = x.float()
    else:
        raise ValueError(
            f"Clip {index} has dtype {x.dtype}; expected float samples in [-1, 1] or int16 / int32 / uint8 PCM."
        )
    if x.ndim == 2:
        x = x.mean(dim=0 if x.shape[0] <= x.shape[1] else 1)  # (T,)
    return x


def pack_clips(
    clips: list[torch.Tensor], lengths: list[int], align: int, lead: int, tail: int
) -> tuple[torch.Tensor, list[int]]:
    """Concatenates clips into one zero-filled buffer (S,), each clip at least `lead` zeros after the start of its
    slot and followed by at least `tail` zeros, every slot starting on a multiple of `align`. Returns the buffer
    and the clip offsets; the copy is a single `torch.cat`."""
    slots = np.array([round_up(lead + n + tail, align) for n in lengths], dtype=np.int64)
    slot_starts = np.concatenate([[0], np.cumsum(slots)[:-1]])
    trailing = (slots - lead - np.asarray(lengths, dtype=np.int64)).tolist()
    zeros = clips[0].new_zeros(max(lead, *trailing))
    pieces = []
    for clip, after in zip(clips, trailing, strict=True):
        pieces += [zeros[:lead], clip, zeros[:after]]
    return torch.cat(pieces), (slot_starts + lead).tolist()


def quantize_int16_(x: torch.Tensor) -> torch.Tensor:
    """LAION's int16 round trip `trunc(clamp(x, -1, 1) * 32767) / 32767`, in place, in float32 as numpy computes
    it there (float32 array times Python float stays float32)."""
    return x.clamp_(-1.0, 1.0).mul_(32767.0).trunc_().div_(32767.0)


def check_clips(clips: list[torch.Tensor]) -> None:
    for i, clip in enumerate(clips):
        if clip.shape[0] == 0:
            raise ValueError(f"Clip {i} is empty (0 samples).")
    # A sum is one pass without a temporary and is not finite if any sample is NaN or infinite (or, rarely, if
    # huge samples overflow); only clips that fail it are inspected sample by sample.
    sums = torch.stack([clip.sum() for clip in clips])
    for i in (~torch.isfinite(sums)).nonzero().squeeze(1).tolist():
        if not bool(torch.isfinite(clips[i]).all()):
            raise ValueError(f"Clip {i} contains NaN or infinite values.")


def resample_clips(clips: list[torch.Tensor], orig_freq: int, new_freq: int) -> list[torch.Tensor]:
    """All clips resampled in one `torchaudio.functional.resample` call; returns views of the result."""
    g = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // g, new_freq // g
    # torchaudio's sinc kernel reaches `width` samples before and `width + orig` after each block of `orig` input
    # samples. With every clip starting on a multiple of `orig` and at least that many zeros around it, resampling
    # the packed buffer once gives, sample for sample, each clip resampled alone.
    width = math.ceil(6 * orig / (min(orig, new) * 0.99))
    reach = 2 * width + 2 * orig  # twice torchaudio's reach, in case its kernel grows
    lengths = [clip.shape[0] for clip in clips]
    packed, offsets = pack_clips(clips, lengths, align=orig, lead=round_up(reach, orig), tail=reach)
    resampled = torchaudio.functional.resample(packed, orig_freq, new_freq)
    # torchaudio keeps ceil(new * length / orig) samples of a clip resampled alone.
    return [resampled[o // orig * new :][: -(-n * new // orig)] for o, n in zip(offsets, lengths, strict=True)]
