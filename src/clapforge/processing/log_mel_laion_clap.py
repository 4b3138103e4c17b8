"""The spectral half of the LAION-CLAP front end: the Slaney mel filter bank and the framed log-mel of a signal.

This file is copied flat into saved model folders beside `feature_extraction_laion_clap.py`, so it imports only the
standard library and torch.

Shapes: S samples of a signal, T frames, W samples of one STFT window, K STFT frequency bins, F mel bins.
"""

from __future__ import annotations

import math

import torch

# Peak-memory bound: frames of a signal handled per FFT call.
_FRAMES_PER_CALL = 2048

# power_to_db floor (librosa / torchaudio AmplitudeToDB amin): silence maps to -100 dB.
_POWER_FLOOR = 1e-10


def slaney_mel_filters(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(n_freqs, n_mels) float64 Slaney mel bank with Slaney area norm, as librosa builds it (`htk=False`).

    torchaudio's `melscale_fbanks` computes the same in the default dtype and has no dtype argument; changing the
    process-wide default around it would leak float64 into other threads.
    """
    f_sp, min_log_hz = 200.0 / 3, 1000.0  # linear below 1 kHz (200/3 Hz per mel), logarithmic above
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(hz: float) -> float:
        return hz / f_sp if hz < min_log_hz else min_log_mel + math.log(hz / min_log_hz) / logstep

    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)  # (K+2,)
    edges = torch.where(mels >= min_log_mel, min_log_hz * torch.exp(logstep * (mels - min_log_mel)), f_sp * mels)
    bins = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)  # (F,)
    widths = edges[1:] - edges[:-1]  # (K+1,)
    to_edge = edges[None, :] - bins[:, None]  # (F, K+2)
    rising, falling = -to_edge[:, :-2] / widths[:-1], to_edge[:, 2:] / widths[1:]  # (F, K) each
    triangles = torch.minimum(rising, falling).clamp(min=0.0)  # (F, K)
    return triangles * (2.0 / (edges[2:] - edges[:-2]))  # (F, K): each band's area normalised



def signal_log_mel(
    signal: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, fbank: torch.Tensor
) -> torch.Tensor:
    """Log-mel in dB (T, F) of every frame `signal[i * hop : i * hop + n_fft]` of a 1-D signal (S,)."""
    frames = signal.unfold(0, n_fft, hop)  # (T, W)
    out = signal.new_empty(frames.shape[0], fbank.shape[1])  # (T, F)
    # Bins outside every mel filter (above frequency_max, about 40% of them) need no power and no product.
    used = fbank.any(dim=1).nonzero()
    lo, hi = int(used[0]), int(used[-1]) + 1
    fbank = fbank[lo:hi]
    # Blocks of frames keep the windowed frames and their spectrum in cache, and bound peak memory.
    for f in range(0, frames.shape[0], _FRAMES_PER_CALL):
        spectrum = torch.fft.rfft(frames[f : f + _FRAMES_PER_CALL] * window)[:, lo:hi]  # (T, K)
        power = torch.addcmul(spectrum.real.square(), spectrum.imag, spectrum.imag)  # (T, K)
        torch.log10((power @ fbank).clamp_(min=_POWER_FLOOR), out=out[f : f + _FRAMES_PER_CALL]).mul_(10.0)
    return out
