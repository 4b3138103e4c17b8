"""LAION-Audio-630K-style webdataset shards: 48 kHz mono FLAC + json per sample, written atomically.

Layout (see the data contract): OUT/<split>/shard-00000.tar ... with "<key>.flac" and "<key>.json" members, and
OUT/<split>/sizes.json mapping each shard file name to its number of samples.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, commit_file

SAMPLE_RATE: int = 48000
SIZES_FILE = "sizes.json"
# A key must not contain dots (webdataset groups members by the text before the first dot) nor slashes.
_FORBIDDEN_KEY_CHARS = "./\\"


class EmptyAudioError(ValueError):
    """The input decodes (or would decode) to zero samples; a ValueError so callers may treat it as any bad input."""


def quantize_int16(audio: np.ndarray) -> np.ndarray:
    """(T,) float in [-1, 1] -> (T,) int16, the exact sample values a 16-bit FLAC stores."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def encode_flac(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode (T,) float32 mono in [-1, 1] as FLAC bytes, lossless at 16 bits."""
    import torch
    from torchcodec.encoders import AudioEncoder

    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"encode_flac expects a non-empty (T,) mono array, got shape {audio.shape}")
    # torchcodec feeds FFmpeg 32-bit samples; snapping them to the int16 grid leaves 16 zero low bits that FLAC's
    # "wasted bits" detection drops, so the file is as small as a 16-bit FLAC and decodes back to the same grid.
    samples = torch.from_numpy(quantize_int16(audio).astype(np.float32) / 32768.0)[None]  # (1, T)
    encoded = AudioEncoder(samples, sample_rate=sample_rate).to_tensor("flac")
    return encoded.numpy().tobytes()


def _describe(source: bytes | str | Path) -> str:
    return f"{len(source)} bytes of audio" if isinstance(source, bytes | bytearray) else f"audio file {source}"


def decode_audio(source: bytes | str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any FFmpeg-readable audio (bytes or a path) to (T,) float32 mono at `sample_rate`.

    Raises EmptyAudioError (a ValueError) for an empty input or zero decoded samples, ValueError for data FFmpeg
    cannot decode, FileNotFoundError for a missing path.
    """
    from torchcodec.decoders import AudioDecoder

    if isinstance(source, str | Path):
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"audio file {source} does not exist")
        if source.stat().st_size == 0:
            raise EmptyAudioError(f"audio file {source} is empty (0 bytes)")
        source_arg: bytes | str = str(source)
    else:
        if len(source) == 0:
            raise EmptyAudioError("audio bytes are empty (0 bytes)")
        source_arg = bytes(source)
    try:
        # FFmpeg resamples (swresample) inside the decoder. Channels are not downmixed there: FFmpeg's mono downmix
        # is (L + R) / sqrt(2), louder than the channel mean that librosa, LAION-CLAP and `datasets` use, and it clips.
        samples = AudioDecoder(source_arg, sample_rate=sample_rate).get_all_samples().data  # (C, T)
    except (RuntimeError, ValueError) as error:
        # torchcodec prefixes FFmpeg's reason with its C++ source location, which means nothing to a user.
        reason = re.sub(r"^.*\.cpp:\d+, ", "", str(error))
        if reason.startswith("No audio frames were decoded"):  # a valid header with zero samples
            raise EmptyAudioError(f"{_describe(source)} holds no audio samples") from error
        raise ValueError(f"{_describe(source)} could not be decoded as audio: {reason}") from error
    if samples.numel() == 0:
        raise EmptyAudioError(f"{_describe(source)} holds no audio samples")
    # Mono needs no reduction, and a mean over one channel costs ~50x a view with 2 torch threads.
    mono = samples[0] if samples.shape[0] == 1 else samples.mean(dim=0)  # (T,)
    return mono.numpy().astype(np.float32, copy=False)


def read_sizes(split_dir: Path) -> dict[str, int]:
    """{shard file name: samples} from `split_dir`/sizes.json, or {} when there is none yet."""
    path = Path(split_dir) / SIZES_FILE
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        sizes = json.load(f)
    if not isinstance(sizes, dict):
        raise ValueError(f"{path} should hold a JSON object {{shard name: samples}}, got {type(sizes).__name__}")
    return {str(name): int(count) for name, count in sizes.items()}


def write_sizes(split_dir: Path, sizes: dict[str, int]) -> None:
    """Merge `sizes` into `split_dir`/sizes.json (entries in `sizes` win), atomically."""
    merged = read_sizes(split_dir)
    merged.update({name: int(count) for name, count in sizes.items()})
    atomic_write_json(Path(split_dir) / SIZES_FILE, dict(sorted(merged.items())))


def _check_key(key: str) -> None:
    if not key or any(char in key for char in _FORBIDDEN_KEY_CHARS):
        raise ValueError(f"shard key {key!r} must be non-empty and contain no dots or slashes")


def _tar_member_bytes(size: int) -> int:
    """Bytes a member takes in a tar: a 512-byte header plus its data padded to whole 512-byte blocks."""
    return 512 + -(-size // 512) * 512


class ShardWriter:
    """Write samples into numbered tar shards of at most `max_bytes` each (a single larger sample gets its own).

    Each shard is written as "<name>.tar.tmp" and renamed with os.replace once complete, so a crash never leaves a
    half shard under its final name. `on_complete(name, keys)` (optional) runs after a shard's data is flushed and
    just before that rename: state a caller writes there is committed by the rename.
    """

    def __init__(self, out_dir: Path, prefix: str = "shard", max_bytes: int = 64 * 2**20, start_index: int = 0,
                 on_complete: Callable[[str, list[str]], None] | None = None):
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.index = start_index
        self.on_complete = on_complete
        self.written: dict[str, int] = {}
        self._tar: tarfile.TarFile | None = None
        self._keys: list[str] = []
        self._bytes = 0
        self.out_dir.mkdir(parents=True, exist_ok=True)

    @property
    def shard_name(self) -> str:
        """File name of the shard being written (or the next one)."""
        return f"{self.prefix}-{self.index:05d}.tar"

    def write(self, key: str, flac: bytes, meta: dict) -> None:
        """Add "<key>.flac" and "<key>.json"; finish the current shard first if this sample would overflow it."""
        _check_key(key)
        payload = json.dumps(meta, ensure_ascii=False).encode("utf-8")
        sample_bytes = _tar_member_bytes(len(flac)) + _tar_member_bytes(len(payload))
        # 1024 bytes: the two zero blocks that end every tar archive.
        if self._keys and self._bytes + sample_bytes + 1024 > self.max_bytes:
            self._finish()
        if self._tar is None:
            self._open()
        self._add(f"{key}.flac", flac)
        self._add(f"{key}.json", payload)
        self._keys.append(key)
        self._bytes += sample_bytes

    def close(self) -> dict[str, int]:
        """Finish the open shard; return {shard file name: samples} for every shard this writer wrote."""
        if self._tar is not None:
            self._finish()
        return dict(self.written)

    def abort(self) -> None:
        """Drop the open shard's temporary file (nothing under a final name is touched)."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None
            self._tmp_path().unlink(missing_ok=True)
            self._keys = []

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _tmp_path(self) -> Path:
        return self.out_dir / (self.shard_name + ".tmp")

    def _open(self) -> None:
        # Stays open across write() calls until the shard is full, so no context manager here.
        self._tar = tarfile.open(self._tmp_path(), "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self._keys = []
        self._bytes = 0

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def _finish(self) -> None:
        self._tar.close()
        self._tar = None
        if self.on_complete is not None:
            self.on_complete(self.shard_name, list(self._keys))
        commit_file(self._tmp_path(), self.out_dir / self.shard_name)
        self.written[self.shard_name] = len(self._keys)
        self._keys = []
        self.index += 1
