"""LAION-CLAP feature extractor: waveforms -> log-mel spectrograms, in torch, batched, on any device.

This file is copied flat into saved model folders, so it imports only the standard library, numpy, torch,
torchaudio and transformers.

Shapes: B batch, C channels (1, or 4 in fusion mode), T frames or samples, F mel bins, K STFT frequency bins
(n_fft // 2 + 1), W samples of one STFT window (n_fft), S samples of a packed buffer (several clips end to end).

A batch of clips of different lengths is handled as two groups, with no per-clip computation:
- "fixed" clips become exactly `max_length` samples before the STFT: short clips (filled by `padding`) and, in
  `rand_trunc` mode, long clips (cropped). Each becomes one row of a (B, T) tensor whose rows are whole numbers of
  hops long and hold their own reflect padding, so the rows end to end form one signal framed once.
- "whole" clips are the long clips in `fusion` mode, whose log-mel is computed over the whole clip. They are packed
  end to end in one 1-D buffer with each clip's reflect padding written into the gap before and after it and every
  clip starting on the hop grid, so again one framing yields the frames of every clip (memory linear in the total
  length, no padding to the longest clip).
Only list bookkeeping (building views, one `torch.cat`) and bounded blocks of rows or frames run in Python loops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchaudio
from transformers import BatchFeature, SequenceFeatureExtractor

from .audio_inputs_laion_clap import (
    as_clip_list,
    check_clips,
    pack_clips,
    quantize_int16_,
    resample_clips,
    round_up,
    to_mono_float,
)
from .log_mel_laion_clap import signal_log_mel, slaney_mel_filters

TRUNCATIONS = ("rand_trunc", "fusion")
PADDINGS = ("repeatpad", "repeat", "pad")

# Peak-memory bound: rows of fixed clips handled per STFT call.
_ROWS_PER_CALL = 16


class LaionClapFeatureExtractor(SequenceFeatureExtractor):
    r"""Turns waveforms into the log-mel inputs of LAION-CLAP audio encoders (HTS-AT and PANN).

    Front ends, as LAION-CLAP used them in training:
    - `truncation="rand_trunc"` (unfused models): Slaney mel scale and Slaney area norm (librosa defaults, built by
      torchlibrosa inside LAION's model), output (B, 1, 1001, 64).
    - `truncation="fusion"` (fused models): HTK mel scale, no norm (torchaudio `MelSpectrogram` defaults, LAION's
      `get_mel`), output (B, 4, 1001, 64) = [global, front, middle, back].
    Both: STFT n_fft 1024, hop 480, periodic Hann window, centred frames with reflect padding, power 2,
    `10 * log10(max(mel, 1e-10))` (reference 1, no top_db). An all-zero clip is valid; its features are -100 dB.

    Args:
        feature_size: number of mel bins.
        sampling_rate: rate the model expects; other input rates are resampled to it.
        hop_length: STFT hop, in samples.
        fft_window_size: STFT window and FFT size, in samples.
        max_length_s: clip duration the model sees, in seconds (10 s = 480000 samples = 1001 frames).
        frequency_min, frequency_max: mel filter bank range, in Hz (50 and 14000 in every LAION-CLAP checkpoint).
        truncation: `"rand_trunc"` or `"fusion"`, see above.
        padding: how clips shorter than `max_length_s` are filled: `"repeatpad"` (tile the clip a whole number of
            times, then zero-pad), `"repeat"` (tile, then cut) or `"pad"` (zero-pad).
        quantize_int16: apply LAION's int16 round trip `trunc(clamp(x, -1, 1) * 32767) / 32767` before the STFT
            (LAION does it in training and inference; transformers' ClapFeatureExtractor does not).
        padding_value: value of the samples added by `"pad"` and `"repeatpad"`.
        return_attention_mask: kept for transformers compatibility; features have a fixed length and no mask is
            returned.
    """

    model_input_names = ["input_features", "is_longer"]

    def __init__(
        self,
        feature_size: int = 64,
        sampling_rate: int = 48000,
        hop_length: int = 480,
        fft_window_size: int = 1024,
        max_length_s: int = 10,
        frequency_min: float = 50,
        frequency_max: float = 14000,
        truncation: str = "rand_trunc",
        padding: str = "repeatpad",
        quantize_int16: bool = True,
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        **kwargs: Any,
    ) -> None:
        # Hub configs written by transformers carry these derived or unused keys; they must not override ours.
        for key in ("nb_max_samples", "nb_frequency_bins"):
            kwargs.pop(key, None)
        if kwargs.pop("top_db", None) is not None:
            raise ValueError("top_db is not supported: LAION-CLAP converts power to dB without top_db clipping.")
        _check_choice("truncation", truncation, TRUNCATIONS)
        _check_choice("padding", padding, PADDINGS)
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.hop_length = hop_length
        self.fft_window_size = fft_window_size
        self.max_length_s = max_length_s
        self.frequency_min = frequency_min
        self.frequency_max = frequency_max
        self.truncation = truncation
        self.padding = padding
        self.quantize_int16 = quantize_int16
        self.nb_max_samples = int(max_length_s * sampling_rate)
        self.nb_frequency_bins = fft_window_size // 2 + 1
        fbank_args = dict(
            n_freqs=self.nb_frequency_bins,
            f_min=float(frequency_min),
            f_max=float(frequency_max),
            n_mels=feature_size,
            sample_rate=sampling_rate,
        )
        # Each bank is computed in the precision LAION's front end used: torchaudio's MelSpectrogram builds the HTK
        # bank in float32; librosa builds the Slaney bank in float64 and torchlibrosa casts it to float32. In float32
        # the small edge weights of the Slaney bank lose digits, which moves a band next to a strong tone by ~0.02 dB.
        self.mel_filters = torchaudio.functional.melscale_fbanks(**fbank_args, norm=None, mel_scale="htk")  # (K, F)
        self.mel_filters_slaney = slaney_mel_filters(**fbank_args).float()  # (K, F)
        self.window = torch.hann_window(fft_window_size, periodic=True)  # (W,)

    @classmethod
    def for_model_config(cls, config: Any, **settings: Any) -> LaionClapFeatureExtractor:
        """The extractor a model with this `LaionClapConfig` expects: its mode and mel bins are derived from the config.

        A fused model (`config.enable_fusion`) takes 4-channel `fusion` features (HTK mel), any other model 1-channel
        `rand_trunc` features (Slaney mel). `settings` give everything else (sampling rate, clip length, padding...); a
        `truncation` or `feature_size` that contradicts the config is an error, not a choice.
        """
        derived = {
            "truncation": "fusion" if config.enable_fusion else "rand_trunc",
            "feature_size": config.audio_config.num_mel_bins,
        }
        for key, value in derived.items():
            if settings.get(key, value) != value:
                raise ValueError(
                    f"{key}={settings[key]!r} contradicts the model config, whose features need {key}={value!r} "
                    f"(enable_fusion={config.enable_fusion}, num_mel_bins={config.audio_config.num_mel_bins})"
                )
        return cls(**{**settings, **derived})

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable configuration: filter banks, window and derived sizes are recomputed on load."""
        output = super().to_dict()
        for key in [k for k, v in output.items() if isinstance(v, torch.Tensor)]:
            del output[key]
        for key in ("nb_max_samples", "nb_frequency_bins"):
            output.pop(key, None)
        return output

    def __call__(
        self,
        raw_audio: np.ndarray | torch.Tensor | list[float] | list[np.ndarray | torch.Tensor | list[float]],
        sampling_rate: int | None = None,
        truncation: str | None = None,
        padding: str | bool | None = None,
        quantize_int16: bool | None = None,
        random_crop: bool = False,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Featurises one clip or a batch of clips.

        Args:
            raw_audio: accepted layouts:
                - one mono clip: a 1-D numpy array, 1-D torch tensor or list of floats -> a batch of 1;
                - a batch of mono clips of equal length: a 2-D numpy array or tensor (B, T);
                - a list of clips, each a 1-D array/tensor/list (mono) or a 2-D array/tensor (multi-channel,
                  downmixed to mono by the mean over the channel axis, which is taken to be the smaller axis, so
                  (C, T) and (T, C) both work).
                Float samples are expected in [-1, 1]; float64 and half precision become float32. Integer PCM is
                scaled: int16 / 32768, int32 / 2**31, uint8 (x - 128) / 128; other integer types are rejected.
                Python lists are read as float samples.
            sampling_rate: rate of `raw_audio`, required. Other rates than `self.sampling_rate` are resampled with
                `torchaudio.functional.resample`.
            truncation, padding, quantize_int16: override the configured values for this call (`padding=True`
                means the configured value).
            random_crop: crop long clips at random (as LAION does in training) instead of deterministically (the
                centred crop in `rand_trunc`, the middle start of each third in `fusion`).
            generator: the random source of `random_crop`, for reproducible crops.
            device: where to compute (default CPU); outputs are returned there.
            return_tensors: `"pt"` (or None) for torch tensors, `"np"` for numpy arrays.

        Returns:
            `BatchFeature` with `input_features` float32 (B, C, T, F) and `is_longer` bool (B, 1).
        """
        truncation = self.truncation if truncation is None else truncation
        padding = self.padding if padding is None or padding is True else padding
        quantize = self.quantize_int16 if quantize_int16 is None else quantize_int16
        _check_choice("truncation", truncation, TRUNCATIONS)
        _check_choice("padding", padding, PADDINGS)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}.")
        if sampling_rate is None:
            raise ValueError(
                f"Pass the sampling rate of the audio, e.g. `sampling_rate=16000`. This model expects "
                f"{self.sampling_rate} Hz; other rates are resampled, but only if you say what they are."
            )
        if int(sampling_rate) != sampling_rate or sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be a positive integer, got {sampling_rate!r}.")
        device = torch.device("cpu") if device is None else torch.device(device)

        clips = [to_mono_float(clip, i, device) for i, clip in enumerate(as_clip_list(raw_audio))]
        check_clips(clips)
        if sampling_rate != self.sampling_rate:
            clips = resample_clips(clips, int(sampling_rate), self.sampling_rate)

        max_len = self.nb_max_samples
        chunk_frames = max_len // self.hop_length + 1
        channels = 4 if truncation == "fusion" else 1
        lengths = torch.tensor([clip.shape[0] for clip in clips])  # (B,) bookkeeping stays on the CPU
        longer = lengths > max_len
        whole = longer & (truncation == "fusion")
        # is_longer is never set at random: transformers marks a random clip as longer when none is in fusion mode,
        # which makes fused embeddings of short audio depend on the rest of the batch (LAION-AI/CLAP #90).
        features = torch.empty(len(clips), channels, chunk_frames, self.feature_size, device=device)  # (B, C, T, F)
        is_longer = torch.zeros(len(clips), 1, dtype=torch.bool)  # (B, 1)

        rows = (~whole).nonzero().squeeze(1)
        if rows.numel():
            # The deterministic crop is centred; a random one is uniform over the overflow + 1 valid starts.
            overflow = (lengths[rows] - max_len).clamp(min=0)
            starts = _random_index(overflow + 1, generator) if random_crop else overflow // 2
            views = [clips[i][s : s + max_len] for i, s in zip(rows.tolist(), starts.tolist(), strict=True)]
            fbank = self.mel_filters if truncation == "fusion" else self.mel_filters_slaney
            mel = self._fixed_log_mel(views, padding, quantize, fbank)  # (B, T, F)
            features[rows.to(device)] = mel.unsqueeze(1).expand(-1, channels, -1, -1)
            is_longer[rows, 0] = longer[rows]
        rows = whole.nonzero().squeeze(1)
        if rows.numel():
            views = [clips[i] for i in rows.tolist()]
            features[rows.to(device)], is_longer[rows, 0] = self._fusion_log_mel(
                views, quantize, random_crop, generator
            )
        is_longer = is_longer.to(device)

        if return_tensors == "np":
            return BatchFeature({"input_features": features.cpu().numpy(), "is_longer": is_longer.cpu().numpy()})
        return BatchFeature({"input_features": features, "is_longer": is_longer})

    def _fixed_log_mel(
        self, views: list[torch.Tensor], padding: str, quantize: bool, fbank: torch.Tensor
    ) -> torch.Tensor:
        """Log-mel (B, T, F) of clips of at most `max_length` samples, the shorter ones filled per `padding`."""
        device, max_len, hop = views[0].device, self.nb_max_samples, self.hop_length
        half = self.fft_window_size // 2
        # Row layout: [reflect half | clip filled to max_len | reflect half | zeros], a whole number of hops.
        slot = round_up(max_len + 2 * half, hop)
        fbank, window = fbank.to(device), self.window.to(device)
        t = torch.arange(max_len, device=device)
        zeros = views[0].new_zeros(slot)
        # One rows buffer reused by every block: fresh large CPU allocations cost page faults on first touch.
        storage = views[0].new_empty(min(len(views), _ROWS_PER_CALL) * slot)
        out = []
        for r in range(0, len(views), _ROWS_PER_CALL):
            block = views[r : r + _ROWS_PER_CALL]
            lengths = torch.tensor([v.shape[0] for v in block], device=device)
            pieces = [p for v in block for p in (zeros[:half], v, zeros[: slot - half - v.shape[0]])]
            rows = torch.cat(pieces, out=storage[: len(block) * slot]).view(len(block), slot)  # (B, T)
            if quantize:
                quantize_int16_(rows)
            body = rows[:, half : half + max_len]
            short = (lengths < max_len).nonzero().squeeze(1)
            if short.numel():
                period = lengths[short, None]
                if padding == "repeatpad":
                    valid = max_len // period * period
                elif padding == "repeat":
                    valid = torch.full_like(period, max_len)
                else:
                    valid = period
                # Tiling reads only the clip's own samples (t % period < period) and writes past them.
                tiled = body[short[:, None], t % period]  # (B, T)
                body[short] = torch.where(t < valid, tiled, self.padding_value)
            # Every row now has max_len samples, so one reflect rule serves every row.
            rows[:, :half] = body[:, 1 : half + 1].flip(-1)
            rows[:, half + max_len : 2 * half + max_len] = body[:, max_len - 1 - half : max_len - 1].flip(-1)
            mel = signal_log_mel(rows.view(-1), self.fft_window_size, hop, window, fbank)  # (T, F)
            # The flat framing stops short of the last row's unused trailing frames; pad them back to reshape.
            mel = torch.nn.functional.pad(mel, (0, 0, 0, rows.numel() // hop - mel.shape[0]))
            out.append(mel.view(len(block), slot // hop, -1)[:, : max_len // hop + 1])  # (B, T, F)
        return torch.cat(out)  # (B, T, F)

    def _fusion_log_mel(
        self, views: list[torch.Tensor], quantize: bool, random_crop: bool, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused input (B, 4, T, F) = [global, front, middle, back] and is_longer (B,) of clips longer than
        `max_length`, from the HTK log-mel of each whole clip."""
        device, hop, n_fft = views[0].device, self.hop_length, self.fft_window_size
        half = n_fft // 2
        chunk_frames = self.nb_max_samples // hop + 1
        lengths_cpu = torch.tensor([v.shape[0] for v in views])
        # Each padded clip (half + clip + half) starts on the hop grid of the packed buffer.
        packed, offsets = pack_clips(views, lengths_cpu.tolist(), align=hop, lead=half, tail=half)
        if quantize:
            quantize_int16_(packed)
        clip_starts = torch.tensor(offsets, device=device)
        lengths = lengths_cpu.to(device)
        k = torch.arange(half, device=device)
        end = clip_starts + lengths
        dst = torch.cat([clip_starts[:, None] - half + k, end[:, None] + k], dim=1)  # (B, W)
        src = torch.cat([clip_starts[:, None] + half - k, end[:, None] - 2 - k], dim=1)  # (B, W)
        packed[dst] = packed[src]

        window, fbank = self.window.to(device), self.mel_filters.to(device)
        mel = signal_log_mel(packed, n_fft, hop, window, fbank)  # (T, F)
        first_frame = (clip_starts - half) // hop
        n_frames = lengths // hop + 1

        # Crop starts: valid starts 0..n_frames - chunk_frames split in thirds like np.array_split (the first
        # `n % 3` thirds one longer), an empty third replaced by [0], as LAION and transformers do.
        n_starts = lengths_cpu // hop + 1 - chunk_frames + 1
        q, r = n_starts // 3, n_starts % 3
        sizes = torch.stack([q + (r > 0), q + (r > 1), q], dim=1)  # (B, 3)
        firsts = torch.cumsum(sizes, dim=1) - sizes
        picks = _random_index(sizes.clamp(min=1), generator) if random_crop else sizes // 2
        starts = torch.where(sizes > 0, firsts + picks, 0).to(device)  # (B, 3)
        t = torch.arange(chunk_frames, device=device)
        crops = mel[first_frame[:, None, None] + starts[:, :, None] + t]  # (B, 3, T, F)

        # Global view: bilinear resize of the whole mel to chunk_frames, align_corners=False, no antialias, per clip
        # so that lengths may differ. torch's interpolate rounds `scale * (t + 0.5) - 0.5` once from a float32
        # scale; computing it in float64 and rounding at the end reproduces that (float32 steps round twice).
        scale = n_frames.float() / chunk_frames
        pos = ((t.double() + 0.5) * scale.double()[:, None] - 0.5).clamp(min=0).float()  # (B, T)
        lo = torch.minimum(pos.long(), n_frames[:, None] - 1)
        frac = (pos - lo).clamp(0, 1).unsqueeze(-1)  # (B, T, 1)
        hi = torch.minimum(lo + 1, n_frames[:, None] - 1)
        base = first_frame[:, None]
        global_view = mel[base + lo] * (1 - frac) + mel[base + hi] * frac  # (B, T, F)

        fused = torch.cat([global_view[:, None], crops], dim=1)  # (B, 4, T, F)
        # A clip of max_length + less than one hop has exactly chunk_frames frames: the four views coincide and
        # LAION does not count it as longer.
        return fused, (n_frames > chunk_frames).cpu()


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _random_index(counts: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform draw from range(count) per entry, from `generator` (torch's default one if None)."""
    device = generator.device if generator is not None else torch.device("cpu")
    # float64 keeps the draw uniform for counts beyond float32's 2**24 (clips of several minutes).
    u = torch.rand(counts.shape, generator=generator, dtype=torch.float64, device=device).to(counts.device)
    return (u * counts).long().clamp(max=counts - 1)
