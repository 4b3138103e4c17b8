"""Sound synthesis for the built-in corpus (`clapforge synth`): 15 event types rendered with numpy.

Every renderer has the signature `render(rng, n, sr, f0, rate) -> (n,) float64` and is vectorised over samples;
the only Python loops run over discrete events (one per beep, hit, bark or strike: at most a few hundred per clip).
`f0` is the event's fundamental or base frequency in Hz and `rate` its repetition rate in Hz; both are drawn by the
caller from `EventType.pitch_hz` / `EventType.rate_hz` so that the corpus plan (and its captions) knows them, and
events without a pitch or speed attribute ignore them. Loudness is not a renderer's business: `render_clip` peak-
normalises the mixture.

The pitch and rate ranges are chosen so that the attribute values a caption names are unmistakable: "low" and "high"
pitches are about two octaves apart, "slow" and "fast" rates differ by a factor of 3 or more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Renderer = Callable[[np.random.Generator, int, int, float, float], np.ndarray]
Range = tuple[float, float]

# Edge fades keep the clip boundaries from clicking (a click would be a cue shared by every class).
_FADE_S = 0.01


@dataclass(frozen=True)
class EventType:
    """One sound class: how to render it and which attributes a caption may name."""

    name: str
    render: Renderer
    pitch_hz: dict[str, Range] | None = None  # {"low": (lo, hi), "high": (lo, hi)} or None: no pitch attribute
    rate_hz: dict[str, Range] | None = None  # {"slow": ..., "fast": ...} or None: not a periodic event
    default_f0: Range = (0.0, 0.0)  # f0 range when the event has no pitch attribute but still needs one


# ---------------------------------------------------------------------------------------------------------------
# Building blocks


def _time(n: int, sr: int) -> np.ndarray:
    # float64: phases of 30 s at several kHz exceed float32's exact range.
    return np.arange(n, dtype=np.float64) / sr


def _phase(freq: np.ndarray, sr: int) -> np.ndarray:
    """Instantaneous phase (radians) of a time-varying frequency in Hz."""
    return 2 * np.pi * np.cumsum(freq) / sr


def _decay(n: int, sr: int, tau: float, attack: float = 0.002) -> np.ndarray:
    """A percussive envelope: linear attack of `attack` s, exponential decay with time constant `tau` s."""
    t = _time(n, sr)
    return np.minimum(t / attack, 1.0) * np.exp(-t / tau)


def _onsets(rng: np.random.Generator, n: int, sr: int, rate: float, jitter: float = 0.1) -> np.ndarray:
    """Sample indices of events repeating at `rate` Hz, each displaced by up to `jitter` of a period."""
    period = sr / rate
    start = rng.uniform(0.0, min(0.1 * sr, 0.5 * period))  # the first event comes early, so short clips hold it
    base = start + period * np.arange(int(np.ceil((n - start) / period)))
    shifted = base + rng.uniform(-jitter, jitter, base.shape) * period
    return np.clip(np.round(shifted), 0, n - 1).astype(np.int64)


def _overlay(n: int, units: list[np.ndarray], onsets: np.ndarray, which: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Sum `units[which[i]] * gains[i]` starting at `onsets[i]`, cut at n samples (a loop over events only)."""
    out = np.zeros(n)
    for onset, index, gain in zip(onsets.tolist(), which.tolist(), gains.tolist(), strict=True):
        unit = units[index][: n - onset]
        out[onset : onset + unit.shape[0]] += gain * unit
    return out


def _spectral_filter(x: np.ndarray, sr: float, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Zero-phase filter: multiply the spectrum by `gain(frequencies in Hz)`."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.shape[0], 1.0 / sr)
    return np.fft.irfft(spectrum * gain(freqs), n=x.shape[0])


def _slow_envelope(rng: np.random.Generator, n: int, sr: int, step_s: Range, floor: float) -> np.ndarray:
    """A smooth random envelope in [floor, 1]: random levels every `step_s` seconds, linearly interpolated."""
    step = rng.uniform(*step_s)
    points = np.arange(0.0, n / sr + 2 * step, step)
    levels = rng.uniform(floor, 1.0, points.shape)
    return np.interp(_time(n, sr), points, levels)


def _harmonic_unit(phase: np.ndarray, amplitudes: np.ndarray, envelope: np.ndarray) -> np.ndarray:
    """Sum of harmonics k = 1..K of a (possibly gliding) phase, weighted per harmonic: (K,) x (L,) -> (L,).

    sin(k x) comes from the Chebyshev recurrence sin(k x) = 2 cos(x) sin((k-1) x) - sin((k-2) x): two vector
    multiply-adds per harmonic instead of a sin() of K x L values, which dominates the cost on long clips.
    """
    previous, current = np.zeros_like(phase), np.sin(phase)
    twice_cos = 2.0 * np.cos(phase)
    total = amplitudes[0] * current
    for amplitude in amplitudes[1:].tolist():
        previous, current = current, twice_cos * current - previous
        total += amplitude * current
    return envelope * total


def _lowpass_noise(rng: np.random.Generator, n: int, sr: int, cutoff: float) -> np.ndarray:
    """Gaussian noise with a 1 / (1 + (f / cutoff)^2) power-shaped spectrum, made at a low rate and interpolated.

    Filtering at 8 x cutoff and interpolating linearly costs a small FFT instead of one over the whole clip (FFTs of
    a 30 s clip take a quarter of a second here); linear interpolation's images are 20 dB down, inaudible in wind.
    """
    low_rate = 8.0 * cutoff
    m = int(np.ceil(n * low_rate / sr)) + 2
    shaped = _spectral_filter(rng.standard_normal(m), low_rate, lambda f: 1.0 / (1.0 + (f / cutoff) ** 2))
    return np.interp(_time(n, sr), np.arange(m) / low_rate, shaped)


def _narrowband_noise(rng: np.random.Generator, n: int, sr: int, centre: float, width: float) -> np.ndarray:
    """Noise in a band `width` Hz wide around `centre`: a carrier whose complex amplitude is slow random noise."""
    envelope = _lowpass_noise(rng, n, sr, width / 2) + 1j * _lowpass_noise(rng, n, sr, width / 2)
    return np.real(envelope * np.exp(2j * np.pi * centre * _time(n, sr)))


def _fade_edges(x: np.ndarray, sr: int) -> np.ndarray:
    fade = min(int(_FADE_S * sr), x.shape[0] // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        x = x.copy()
        x[:fade] *= ramp
        x[x.shape[0] - fade :] *= ramp[::-1]
    return x


# ---------------------------------------------------------------------------------------------------------------
# Renderers


def steady_tone(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    return np.sin(_phase(np.full(n, f0), sr) + rng.uniform(0, 2 * np.pi))


def beeping(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    t = _time(n, sr)
    on_s = rng.uniform(0.35, 0.6) / rate
    position = np.mod(t, 1.0 / rate)  # seconds into the current beep period
    # 5 ms ramps at both ends of each beep: gating without them would add broadband clicks.
    gate = np.clip(np.minimum(position, on_s - position) / 0.005, 0.0, 1.0)
    return gate * np.sin(2 * np.pi * f0 * t)


def _sweep(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float, rising: bool) -> np.ndarray:
    """Repeated two-octave exponential glides from f0 to 4 f0 (or back), with a silent gap between glides."""
    t = _time(n, sr)
    active = 0.8  # fraction of each period that sweeps; the gap marks where a glide starts, so direction is audible
    progress = np.mod(t * rate, 1.0) / active  # 0..1 during a glide, > 1 in the gap
    glide = np.clip(progress, 0.0, 1.0)
    freq = f0 * np.exp(np.log(4.0) * (glide if rising else 1.0 - glide))
    gate = np.clip(np.minimum(progress, 1.0 - progress) * active / rate / 0.01, 0.0, 1.0)
    return gate * np.sin(_phase(freq, sr))


def rising_sweep(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    return _sweep(rng, n, sr, f0, rate, rising=True)


def falling_sweep(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    return _sweep(rng, n, sr, f0, rate, rising=False)


def siren(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    t = _time(n, sr)
    freq = f0 * (1.0 + 0.3 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    # A few harmonics give the brassy timbre of a mechanical siren, unlike the pure sweeps.
    return _harmonic_unit(_phase(freq, sr), np.array([1.0, 0.5, 0.3, 0.15]), np.ones(n))


def noise_burst(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    length = int(rng.uniform(0.08, 0.2) * sr)
    burst = np.minimum(_time(length, sr) / 0.003, 1.0) * np.exp(-_time(length, sr) / (length / sr / 3))
    onsets = _onsets(rng, n, sr, rate, jitter=0.2)
    envelope = _overlay(n, [burst], onsets, np.zeros_like(onsets), rng.uniform(0.6, 1.0, onsets.shape))
    return envelope * rng.standard_normal(n)


def click_train(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    length = int(0.004 * sr)
    click = np.sin(2 * np.pi * rng.uniform(2500, 4000) * _time(length, sr)) * _decay(length, sr, 0.0006, 0.0002)
    onsets = _onsets(rng, n, sr, rate, jitter=0.02)
    return _overlay(n, [click], onsets, np.zeros_like(onsets), rng.uniform(0.8, 1.0, onsets.shape))


def hum(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    # Mains hum: 50 or 60 Hz and a few harmonics decaying fast, so nearly all energy sits below 500 Hz.
    amplitudes = 0.7 ** np.arange(8) * rng.uniform(0.6, 1.0, 8)
    flutter = 1.0 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * _time(n, sr))
    return _harmonic_unit(_phase(np.full(n, f0), sr), amplitudes, flutter)


def buzz(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    t = _time(n, sr)
    cycles = _phase(f0 * (1.0 + 0.01 * np.sin(2 * np.pi * 5.0 * t)), sr) / (2 * np.pi)
    saw = 2.0 * np.mod(cycles, 1.0) - 1.0  # a raw sawtooth: every harmonic, hence the raspy sound (aliasing is mild)
    return saw * (1.0 - 0.3 * np.sin(2 * np.pi * rng.uniform(20.0, 35.0) * t))


def _pluck_note(sr: int, f0: float, length: int, tau: float) -> np.ndarray:
    """A plucked string as modes: harmonic k has amplitude |sin(pi k p)| / k and decays faster as k grows.

    This is the sound a Karplus-Strong loop converges to (its lowpass loss damps high harmonics first), computed
    in closed form so no sample-by-sample recursion is needed.
    """
    k = np.arange(1, max(2, min(24, int(8000 / f0))) + 1)[:, None]  # (K, 1)
    amplitudes = np.abs(np.sin(np.pi * k * 0.23)) / k
    t = _time(length, sr)[None, :]  # (1, L)
    modes = amplitudes * np.exp(-t * (1.0 + 0.25 * (k - 1)) / tau) * np.sin(2 * np.pi * f0 * k * t)  # (K, L)
    return modes.sum(axis=0) * np.minimum(t[0] / 0.001, 1.0)


def plucked_string(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    semitones = rng.choice([0, 2, 4, 7, 9, 12], size=3, replace=False)  # a little pentatonic melody
    length = min(n, int(1.2 * sr))
    notes = [_pluck_note(sr, f0 * 2 ** (s / 12), length, rng.uniform(0.3, 0.6)) for s in semitones]
    onsets = _onsets(rng, n, sr, rate, jitter=0.05)
    return _overlay(n, notes, onsets, rng.integers(0, len(notes), onsets.shape), rng.uniform(0.7, 1.0, onsets.shape))


def drum_hits(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    length = min(n, int(0.4 * sr))
    t = _time(length, sr)
    # A membrane: the pitch drops from 3 f0 to f0 within ~30 ms, with a short noise click for the stick.
    freq = f0 * (1.0 + 2.0 * np.exp(-t / 0.03))
    body = np.sin(_phase(freq, sr)) * _decay(length, sr, 0.12 if f0 < 100 else 0.08)
    hit = body + 0.3 * rng.standard_normal(length) * _decay(length, sr, 0.004, 0.0005)
    onsets = _onsets(rng, n, sr, rate, jitter=0.03)
    gains = np.where(np.arange(onsets.shape[0]) % 4 == 0, 1.0, rng.uniform(0.55, 0.85, onsets.shape))  # accents
    return _overlay(n, [hit], onsets, np.zeros_like(onsets), gains)


def rain(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    count = rng.poisson(rng.uniform(300, 900) * n / sr)
    length = int(0.003 * sr)
    drop = rng.standard_normal(length) * _decay(length, sr, 0.0007, 0.0001)
    # Drops overlap: a weighted bincount over (drop, sample) pairs adds them all at once, no FFT of the clip.
    positions = (rng.integers(0, n, count)[:, None] + np.arange(length)[None, :]).ravel()  # (count * length,)
    weights = (rng.lognormal(0.0, 0.6, count)[:, None] * drop[None, :]).ravel()
    keep = positions < n
    crackle = np.bincount(positions[keep], weights=weights[keep], minlength=n)
    bed = np.diff(rng.standard_normal(n + 1))  # first difference: a hiss tilted towards high frequencies
    return crackle / max(np.abs(crackle).max(), 1e-9) + 0.1 * bed / np.abs(bed).max()


def wind(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    body = _lowpass_noise(rng, n, sr, rng.uniform(250, 500))
    whistle = _narrowband_noise(rng, n, sr, rng.uniform(500, 900), 40.0)
    gusts = _slow_envelope(rng, n, sr, (0.6, 1.5), floor=0.15)
    body, whistle = body / np.abs(body).max(), whistle / np.abs(whistle).max()
    return gusts * body + 0.4 * gusts**2 * whistle  # the whistle rises with the gusts


def _bark(rng: np.random.Generator, sr: int, f0: float, formant: float) -> np.ndarray:
    length = int(rng.uniform(0.12, 0.2) * sr)
    u = np.linspace(0.0, 1.0, length)
    freq = f0 * (0.8 + 0.6 * np.sin(np.pi * u))  # up then down: the chirp of a bark
    k = np.arange(1, 21)
    # A formant (log-Gaussian weighting of the harmonics) gives the vowel-like "woof" colour.
    amplitudes = np.exp(-0.5 * (np.log(k * f0 / formant) / 0.5) ** 2) / np.sqrt(k)
    envelope = np.minimum(u / 0.06, 1.0) * np.exp(-3.0 * u)
    voiced = _harmonic_unit(_phase(freq, sr), amplitudes, envelope)
    breath = np.convolve(rng.standard_normal(length), np.hanning(24), mode="same") * envelope  # rough, noisy edge
    return voiced / np.abs(voiced).max() + 0.25 * breath / np.abs(breath).max()


def dog_bark(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    formant = 900.0 if f0 < 350 else 1800.0  # a big dog's body resonates lower
    barks = [_bark(rng, sr, f0 * rng.uniform(0.93, 1.07), formant) for _ in range(2)]
    onsets = _onsets(rng, n, sr, rate, jitter=0.2)
    return _overlay(n, barks, onsets, rng.integers(0, 2, onsets.shape), rng.uniform(0.7, 1.0, onsets.shape))


# Risset's bell: inharmonic partial ratios, relative amplitudes and relative decay times.
_BELL_RATIOS = np.array([0.56, 0.92, 1.19, 1.7, 2.0, 2.74, 3.0, 3.76, 4.07])
_BELL_AMPS = np.array([1.0, 0.67, 1.0, 1.8, 2.67, 1.67, 1.46, 1.33, 1.33])
_BELL_DECAYS = np.array([1.0, 0.9, 0.65, 0.55, 0.325, 0.35, 0.25, 0.2, 0.15])


def bell(rng: np.random.Generator, n: int, sr: int, f0: float, rate: float) -> np.ndarray:
    length = min(n, int(2.0 * sr))
    t = _time(length, sr)[None, :]  # (1, L)
    partials = _BELL_AMPS[:, None] * np.exp(-t / (0.6 * _BELL_DECAYS[:, None]))  # (P, L)
    strike = (partials * np.sin(2 * np.pi * f0 * _BELL_RATIOS[:, None] * t)).sum(axis=0)  # (L,)
    strike *= np.minimum(t[0] / 0.001, 1.0)
    onsets = _onsets(rng, n, sr, rate, jitter=0.05)
    return _overlay(n, [strike], onsets, np.zeros_like(onsets), rng.uniform(0.75, 1.0, onsets.shape))


EVENT_TYPES: dict[str, EventType] = {
    e.name: e
    for e in [
        EventType("steady_tone", steady_tone, pitch_hz={"low": (200, 400), "high": (1500, 3000)}),
        EventType("beeping", beeping, {"low": (300, 500), "high": (1500, 3000)}, {"slow": (1, 2), "fast": (5, 8)}),
        EventType("rising_sweep", rising_sweep, {"low": (150, 250), "high": (800, 1300)},
                  {"slow": (0.3, 0.6), "fast": (2, 3.5)}),
        EventType("falling_sweep", falling_sweep, {"low": (150, 250), "high": (800, 1300)},
                  {"slow": (0.3, 0.6), "fast": (2, 3.5)}),
        EventType("siren", siren, {"low": (450, 650), "high": (1000, 1400)}, {"slow": (0.4, 0.7), "fast": (3, 5)}),
        EventType("noise_burst", noise_burst, rate_hz={"slow": (0.6, 1.2), "fast": (4, 6)}),
        EventType("click_train", click_train, rate_hz={"slow": (2, 4), "fast": (12, 20)}),
        EventType("hum", hum, default_f0=(50, 60)),
        EventType("buzz", buzz, pitch_hz={"low": (90, 140), "high": (300, 450)}),
        EventType("plucked_string", plucked_string, {"low": (98, 165), "high": (440, 660)},
                  {"slow": (0.8, 1.5), "fast": (4, 6)}),
        EventType("drum_hits", drum_hits, {"low": (45, 70), "high": (140, 220)}, {"slow": (1, 2), "fast": (4, 7)}),
        EventType("rain", rain),
        EventType("wind", wind),
        EventType("dog_bark", dog_bark, {"low": (180, 260), "high": (450, 650)},
                  {"slow": (0.7, 1.2), "fast": (3, 4.5)}),
        EventType("bell", bell, {"low": (180, 300), "high": (700, 1100)}, {"slow": (0.4, 0.7), "fast": (2, 3)}),
    ]
}


@dataclass(frozen=True)
class EventDraw:
    """One rendered event: its type and the concrete parameters drawn for it."""

    event: str
    f0: float  # Hz (0 when the event has no pitch)
    rate: float  # Hz (0 when the event is not periodic)


def render_event(draw: EventDraw, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float64 with peak 1 and faded edges."""
    audio = _fade_edges(EVENT_TYPES[draw.event].render(rng, n, sr, draw.f0, draw.rate), sr)
    return audio / max(np.abs(audio).max(), 1e-9)


def render_clip(main: EventDraw, background: EventDraw | None, background_db: float, peak: float, seconds: float,
                sr: int, seed: int) -> np.ndarray:
    """Mix `main` with an optional `background` whose RMS sits `background_db` (< 0) below the main event's RMS,
    then scale the mixture to `peak` (< 1, so nothing clips). Returns (n,) float32."""
    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * sr))
    audio = render_event(main, n, sr, rng)
    if background is not None:
        # RMS, not peak, sets the level: sparse events (clicks) have high peaks but little energy.
        other = render_event(background, n, sr, rng)
        scale = np.sqrt(np.mean(audio**2) / max(np.mean(other**2), 1e-12)) * 10 ** (background_db / 20)
        audio = audio + scale * other
    return (audio * (peak / max(np.abs(audio).max(), 1e-9))).astype(np.float32)
