"""LaionClapFeatureExtractor: parity with transformers' ClapFeatureExtractor, batching invariants, input handling."""

import json

import numpy as np
import pytest
import torch
import torchaudio
import transformers.models.clap.feature_extraction_clap as hf_clap_module
from transformers import ClapFeatureExtractor

from clapforge.processing.feature_extraction_laion_clap import LaionClapFeatureExtractor
from clapforge.processing.log_mel_laion_clap import slaney_mel_filters

SR = 48000
MAX = 480000

# Why features differ from transformers' at all: our STFT runs in float32 (torch.fft on float32 frames, float32 mel
# product) while transformers frames in float64, stores the spectrum as complex64 and projects in float64; that alone
# moves log-mels by at most ~6e-4 dB on these signals (features span about -100..+30 dB). The HTK bank (fusion) adds
# more: we build it in float32 exactly as LAION's torchaudio MelSpectrogram does (see test_filter_banks_match_laion),
# transformers builds it in float64, and the two differ by up to 6e-6 in weight, ~3e-3 dB in features.
ATOL_SLANEY_DB = 1e-3
ATOL_HTK_DB = 4e-3

# The same clip in another batch (other rows, another position in a block, another block size) gets the same frames
# and the same per-frame FFT, but the mel product `power @ fbank` is a matrix product whose summation order may depend
# on the number of rows and a row's position (MKL's AVX2 code path does; its AVX-512 one does not here). Its terms are
# non-negative (power times filter weight) and at most 31 are non-zero (the widest filter; zeros add exactly), so any
# order is within 30 * 2**-24 of the exact sum *relative to the sum itself*, even in quiet bands: two orders differ by
# at most 3.6e-6 relative, 10 * log10(1 + 3.6e-6) = 1.6e-5 dB, plus log10 and * 10 rounding on each side (<= 1 ulp
# of |log10| <= 10, times 10, and 1/2 ulp of |dB| <= 100: 2.7e-5 dB together). Measured: 0 (AMX), 3.8e-6 dB (AVX2
# code paths). A real batching error (a neighbour's samples in a clip's reflect padding, a shifted crop, rows
# swapped) moves features by tenths of a dB or more.
REORDER_ATOL_DB = 5e-5
MAX_FILTER_SUPPORT = 31


def assert_same_features(actual: torch.Tensor, expected: torch.Tensor, msg: str | None = None) -> None:
    torch.testing.assert_close(actual, expected, atol=REORDER_ATOL_DB, rtol=0, msg=msg)


def _clip(n: int, seed: int) -> np.ndarray:
    """A tone sweep plus noise and a silent gap: loud and near-silent frames, float32 like decoded audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * (200 + 300 * seed) * t * (1 + t)) + 0.05 * rng.standard_normal(n)
    x[n // 3 : n // 3 + n // 10] = 0.0
    return x.astype(np.float32)


def _hf(truncation: str, padding: str = "repeatpad") -> ClapFeatureExtractor:
    # The values of laion/clap-htsat-(un)fused's preprocessor_config.json.
    return ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation=truncation, padding=padding)


def _ours(truncation: str, padding: str = "repeatpad", **kwargs) -> LaionClapFeatureExtractor:
    return LaionClapFeatureExtractor(truncation=truncation, padding=padding, **kwargs)


def _atol(truncation: str) -> float:
    return ATOL_HTK_DB if truncation == "fusion" else ATOL_SLANEY_DB


def test_filter_banks_match_laion():
    fe = _ours("fusion")
    # LAION's fusion front end (training/data.py get_mel): torchaudio MelSpectrogram defaults, HTK, no norm.
    laion_htk = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=1024, win_length=1024, hop_length=480, f_min=50, f_max=14000, n_mels=64
    ).mel_scale.fb
    assert torch.equal(fe.mel_filters, laion_htk)
    for bank in (fe.mel_filters, fe.mel_filters_slaney):  # what REORDER_ATOL_DB assumes
        assert int((bank > 0).sum(dim=0).max()) <= MAX_FILTER_SUPPORT and (bank >= 0).all()
    # LAION's in-model front end (torchlibrosa LogmelFilterBank): librosa.filters.mel, Slaney scale and norm.
    librosa = pytest.importorskip("librosa")
    laion_slaney = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T
    np.testing.assert_allclose(fe.mel_filters_slaney.numpy(), laion_slaney, rtol=0, atol=1e-8)


@pytest.mark.parametrize(
    ("sr", "n_fft", "n_mels", "fmin", "fmax"),
    [(48000, 1024, 64, 50, 14000), (16000, 512, 40, 0, 8000), (44100, 2048, 10, 20, 900)],
)
def test_slaney_bank_is_librosas_float64_bank(sr, n_fft, n_mels, fmin, fmax):
    """Built in float64 without touching torch's default dtype (another thread may be making tensors meanwhile)."""
    librosa = pytest.importorskip("librosa")
    ours = slaney_mel_filters(n_fft // 2 + 1, float(fmin), float(fmax), n_mels, sr)  # (F, K)
    assert ours.dtype == torch.float64 and torch.get_default_dtype() == torch.float32
    expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64).T
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=1e-15)


@pytest.fixture
def middle_crops(monkeypatch):
    """Fixes transformers' random crops to the deterministic ones clapforge takes by default."""
    monkeypatch.setattr(hf_clap_module.np.random, "choice", lambda a: a[len(a) // 2])
    # rand_trunc draws np.random.randint(0, overflow + 1); the centred start is overflow // 2.
    monkeypatch.setattr(hf_clap_module.np.random, "randint", lambda low, high: low + (high - 1 - low) // 2)


@pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
def test_parity_short_and_exact_clips(truncation, padding):
    clips = [_clip(n, i) for i, n in enumerate([4801, 3 * SR + 17, 7 * SR + 5, MAX])]
    ours = _ours(truncation, padding)(clips, sampling_rate=SR, quantize_int16=False)
    theirs = _hf(truncation, padding)(clips, sampling_rate=SR, return_tensors="pt")
    channels = 4 if truncation == "fusion" else 1
    assert ours["input_features"].shape == (4, channels, 1001, 64)
    assert ours["input_features"].dtype == torch.float32
    torch.testing.assert_close(ours["input_features"], theirs["input_features"].float(), atol=_atol(truncation), rtol=0)
    # transformers flags one random short clip as longer in fusion mode (LAION-AI/CLAP #90); we never do.
    assert ours["is_longer"].dtype == torch.bool and ours["is_longer"].shape == (4, 1)
    assert not ours["is_longer"].any()


def test_parity_long_fusion(middle_crops):
    # 480001: exactly 1001 frames (four copies, not longer); 480485: one extra frame (empty back third);
    # 481927: 4 valid starts; 23 s: a typical long clip.
    lengths = [MAX + 1, MAX + 485, MAX + 3 * 480 + 487, 23 * SR + 7]
    clips = [_clip(n, i) for i, n in enumerate(lengths)]
    ours = _ours("fusion")(clips, sampling_rate=SR, quantize_int16=False)
    theirs = _hf("fusion")(clips, sampling_rate=SR, return_tensors="pt")
    torch.testing.assert_close(ours["input_features"], theirs["input_features"].float(), atol=ATOL_HTK_DB, rtol=0)
    assert ours["is_longer"].flatten().tolist() == [False, True, True, True]
    assert ours["is_longer"].flatten().tolist() == theirs["is_longer"].flatten().tolist()


def test_parity_long_rand_trunc(middle_crops):
    clips = [_clip(n, i) for i, n in enumerate([MAX + 1, MAX + 999, 31 * SR + 3])]
    ours = _ours("rand_trunc")(clips, sampling_rate=SR, quantize_int16=False)
    theirs = _hf("rand_trunc")(clips, sampling_rate=SR, return_tensors="pt")
    torch.testing.assert_close(ours["input_features"], theirs["input_features"].float(), atol=ATOL_SLANEY_DB, rtol=0)
    assert ours["is_longer"].all()


@pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
def test_quantised_path_equals_laion_quantised_input(truncation):
    clips = [_clip(n, i) * 4.0 for i, n in enumerate([2 * SR + 3, 12 * SR + 1])]  # * 4 exercises the clamp
    # LAION's float32_to_int16 then int16_to_float32 (training/data.py).
    laion = [((np.clip(x, -1, 1) * 32767.0).astype(np.int16) / 32767.0).astype(np.float32) for x in clips]
    fe = _ours(truncation)
    quantised = fe(clips, sampling_rate=SR)["input_features"]
    assert torch.equal(quantised, fe(laion, sampling_rate=SR, quantize_int16=False)["input_features"])
    assert not torch.equal(quantised, fe(clips, sampling_rate=SR, quantize_int16=False)["input_features"])


@pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
def test_batch_composition_does_not_change_features(truncation):
    lengths = [SR // 2, 5 * SR + 11, MAX, MAX + 485, 14 * SR + 7, 21 * SR + 1]
    clips = [_clip(n, i) for i, n in enumerate(lengths)]
    fe = _ours(truncation, "repeat")
    batch = fe(clips, sampling_rate=SR)
    reversed_batch = fe(clips[::-1], sampling_rate=SR)
    assert_same_features(reversed_batch["input_features"].flip(0), batch["input_features"])
    assert torch.equal(reversed_batch["is_longer"].flip(0), batch["is_longer"])
    for i, clip in enumerate(clips):
        alone = fe(clip, sampling_rate=SR)
        assert_same_features(alone["input_features"][0], batch["input_features"][i], msg=str(i))
        assert alone["is_longer"][0, 0] == batch["is_longer"][i, 0]
    # The same batch again is the same computation: bit for bit.
    assert torch.equal(fe(clips, sampling_rate=SR)["input_features"], batch["input_features"])


def test_more_rows_than_one_block():
    # More than one block of rows in the fixed path, with short and long clips interleaved.
    clips = [_clip(n, i) for i, n in enumerate([SR + 7 * i for i in range(9)] + [MAX + 5 * i for i in range(9)])]
    fe = _ours("rand_trunc")
    batch = fe(clips, sampling_rate=SR)["input_features"]
    assert_same_features(batch[17], fe(clips[17], sampling_rate=SR)["input_features"][0])
    assert_same_features(batch[3], fe(clips[3], sampling_rate=SR)["input_features"][0])


@pytest.mark.parametrize("rate", [16000, 44100])
def test_resampling_equals_torchaudio(rate):
    rng = np.random.default_rng(rate)
    clips = [torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.1) for n in (rate * 2 + 3, rate * 11)]
    fe = _ours("fusion")
    ours = fe(clips, sampling_rate=rate)["input_features"]
    for i, clip in enumerate(clips):
        at_48k = torchaudio.functional.resample(clip, rate, SR)
        expected = fe(at_48k, sampling_rate=SR)["input_features"][0]
        # Resampling the packed batch is one conv1d over all clips; its summation order may differ from a
        # clip-sized call by float32 rounding, far below the parity tolerance.
        torch.testing.assert_close(ours[i], expected, atol=1e-4, rtol=0)


def test_multichannel_clips_are_averaged_over_the_smaller_axis():
    left, right = _clip(3 * SR, 1), _clip(3 * SR, 2)
    fe = _ours("rand_trunc")
    mono = fe((left + right) / 2, sampling_rate=SR)["input_features"]
    channels_first = np.stack([left, right])  # (C, T)
    out = fe([channels_first, torch.from_numpy(channels_first.T.copy())], sampling_rate=SR)["input_features"]
    # (l + r) / 2 rounds the same whichever way it is written; only the batch differs (REORDER_ATOL_DB). A channel
    # dropped instead of averaged would move features by several dB.
    assert_same_features(out[0], mono[0])
    assert_same_features(out[1], mono[0])
    # A top-level 2-D array is a batch of mono clips, as in transformers.
    batch = fe(channels_first, sampling_rate=SR)["input_features"]
    assert batch.shape[0] == 2
    assert_same_features(batch[1], fe(right, sampling_rate=SR)["input_features"][0])


def test_integer_pcm_and_float64_inputs():
    fe = _ours("rand_trunc", quantize_int16=False)
    rng = np.random.default_rng(0)
    pcm16 = rng.integers(-32768, 32768, 2 * SR, dtype=np.int16)
    pcm32 = pcm16.astype(np.int32) << 16
    pcm8 = (pcm16 // 256 + 128).astype(np.uint8)
    out = fe([pcm16, torch.from_numpy(pcm32), pcm8], sampling_rate=SR)["input_features"]
    expected = fe([pcm16 / 32768.0, pcm32 / 2.0**31, (pcm8.astype(np.float64) - 128) / 128], sampling_rate=SR)[
        "input_features"
    ]
    assert torch.equal(out, expected)  # the same samples in the same batch: the same computation
    assert_same_features(out[0], out[1])  # the same samples at 16 and 32 bits, in two rows of the batch
    as_list = fe(list(map(float, pcm16[:SR] / 32768.0)), sampling_rate=SR)["input_features"]
    assert torch.equal(as_list[0], fe(pcm16[:SR].astype(np.float32) / 32768.0, sampling_rate=SR)["input_features"][0])
    with pytest.raises(ValueError, match="int16 / int32 / uint8"):
        fe(pcm16.astype(np.int64), sampling_rate=SR)


def test_silence_is_the_db_floor():
    out = _ours("fusion")(np.zeros(SR, dtype=np.float32), sampling_rate=SR)
    assert torch.equal(out["input_features"], torch.full((1, 4, 1001, 64), -100.0))


@pytest.mark.parametrize(
    ("audio", "kwargs", "message"),
    [
        ([np.ones(SR, dtype=np.float32), np.zeros(0, dtype=np.float32)], {}, "Clip 1 is empty"),
        ([np.ones(SR, dtype=np.float32), np.array([0.0, np.nan, 0.0])], {}, "Clip 1 contains NaN or infinite"),
        ([np.array([0.0, -np.inf, 0.0]), np.ones(SR)], {}, "Clip 0 contains NaN or infinite"),
        (np.zeros((2, 2, SR), dtype=np.float32), {}, "Accepted: one mono clip"),
        ([np.zeros((2, 2, SR), dtype=np.float32)], {}, "Clip 0 has 3 dimensions"),
        (np.zeros(SR, dtype=np.float32), {"sampling_rate": None}, "Pass the sampling rate"),
        (np.zeros(SR, dtype=np.float32), {"truncation": "fused"}, "truncation must be one of"),
    ],
)
def test_bad_inputs_raise_clear_errors(audio, kwargs, message):
    fe = _ours("rand_trunc")
    with pytest.raises(ValueError, match=message):
        fe(audio, **{"sampling_rate": SR, **kwargs})


def test_save_and_load_round_trip(tmp_path):
    fe = _ours("fusion", "repeat", quantize_int16=False)
    fe.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["truncation"] == "fusion" and saved["padding"] == "repeat" and saved["quantize_int16"] is False
    assert "mel_filters" not in saved and "window" not in saved and "nb_max_samples" not in saved
    loaded = LaionClapFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == fe.to_dict()
    clip = _clip(13 * SR, 0)
    assert torch.equal(loaded(clip, sampling_rate=SR)["input_features"], fe(clip, sampling_rate=SR)["input_features"])


def test_loads_a_transformers_clap_config():
    # Hub repos written by transformers carry derived keys (nb_max_samples, top_db: null); they must load.
    config = _hf("rand_trunc").to_dict()
    fe = LaionClapFeatureExtractor.from_dict(config)
    assert fe.nb_max_samples == MAX and fe.truncation == "rand_trunc" and fe.frequency_min == 50
    assert fe(_clip(SR, 0), sampling_rate=SR)["input_features"].shape == (1, 1, 1001, 64)


@pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
def test_random_crop_is_reproducible_with_a_seeded_generator(truncation):
    clips = [_clip(n, i) for i, n in enumerate([25 * SR, 17 * SR + 3])]
    fe = _ours(truncation)

    def crop(seed):
        generator = torch.Generator().manual_seed(seed)
        return fe(clips, sampling_rate=SR, random_crop=True, generator=generator)["input_features"]

    deterministic = fe(clips, sampling_rate=SR)["input_features"]
    assert torch.equal(crop(0), crop(0))
    assert not torch.equal(crop(0), crop(1))
    assert not torch.equal(crop(0), deterministic)
    if truncation == "fusion":  # the global view does not depend on the crops
        assert torch.equal(crop(0)[:, 0], deterministic[:, 0])


def test_return_types_and_device():
    fe = _ours("rand_trunc")
    clip = _clip(SR, 0)
    pt = fe(clip, sampling_rate=SR, device="cpu")
    assert pt["input_features"].device.type == "cpu"
    arrays = fe(clip, sampling_rate=SR, return_tensors="np")
    assert isinstance(arrays["input_features"], np.ndarray) and arrays["is_longer"].dtype == np.bool_
    np.testing.assert_array_equal(arrays["input_features"], pt["input_features"].numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    clips = [_clip(n, i) for i, n in enumerate([3 * SR, 23 * SR])]
    fe = _ours("fusion")
    gpu = fe(clips, sampling_rate=SR, device="cuda")["input_features"]
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), fe(clips, sampling_rate=SR)["input_features"], atol=1e-3, rtol=0)
