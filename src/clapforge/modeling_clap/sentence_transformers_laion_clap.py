"""The sentence-transformers input module of a saved clapforge folder (`modules.json` names it).

Copied beside the weights by `LaionClapModel.save_pretrained` and loaded by `SentenceTransformer(folder,
trust_remote_code=True)`, where clapforge may not be installed: it imports only the standard library, numpy,
sentence-transformers (present wherever this file is loaded) and, to decode a file, torchcodec.

sentence-transformers takes a string for audio only when it ends in .mp3, .wav, .ogg, .flac or .aac; any other
string is text, so `encode(["bell.oga"])` would embed the file name. Here a string naming an existing file with an
extension FFmpeg decodes as audio (`AUDIO_EXTENSIONS`, clapforge's own list) is audio; such a string naming no file
is an error. A batch may mix file paths and in-memory clips: the files are then decoded at the batch's sampling rate.
"""

import os
from typing import Any

from sentence_transformers.base.modules.transformer import Transformer

# Kept equal to clapforge.data.prepare_inputs.AUDIO_EXTENSIONS (a test compares them).
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".mka", ".webm", ".mp4", ".m4b", ".ac3", ".amr", ".ape", ".wv", ".mpc", ".spx", ".3gp",
})


def audio_path(item: Any) -> str | None:
    """The path if `item` is a string naming an audio file; None for any other input; an error for a string that
    looks like an audio file name (one word ending in an audio extension) but names no file."""
    if not isinstance(item, str) or os.path.splitext(item)[1].lower() not in AUDIO_EXTENSIONS:
        return None
    if os.path.isfile(item):
        return item
    if item.strip() == item and not any(c.isspace() for c in item):
        raise ValueError(f"no such audio file: {item} (to embed it as text, encode it in a sentence)")
    return None


def _decode(path: str, sampling_rate: int) -> Any:
    """(C, T) float32 samples of `path` at `sampling_rate`, as the processor decodes a file."""
    try:
        from torchcodec.decoders import AudioDecoder
    except ImportError as error:
        raise ImportError(f"decoding {path} needs torchcodec (pip install torchcodec) and FFmpeg") from error
    return AudioDecoder(path, sample_rate=sampling_rate).get_all_samples().data.numpy()


class LaionClapTransformer(Transformer):
    """sentence-transformers' `Transformer` module, with clapforge's rule for which strings are audio files."""

    @property
    def modalities(self) -> list:
        # "message" only lets a batch that sentence-transformers' own check reads as mixed (bell.wav beside bell.oga,
        # which it takes for text) reach `preprocess`, where files are told apart; the module itself embeds text and
        # audio only, and refuses anything else in one line.
        return [*self.modality_config, "message"]

    def preprocess(self, inputs: Any, prompt: str | None = None, processing_kwargs: Any = None, **kwargs: Any) -> Any:
        return super().preprocess(self._audio_files_as_audio(list(inputs)), prompt, processing_kwargs, **kwargs)

    def _audio_files_as_audio(self, inputs: list) -> list:
        paths = [audio_path(item) for item in inputs]
        if not any(paths):
            return inputs
        if all(paths):
            return [{"audio": path} for path in paths]  # the processor decodes file paths itself
        others = [item for item, path in zip(inputs, paths, strict=True) if path is None]
        if any(isinstance(item, str) for item in others):
            raise ValueError("this batch mixes audio files and texts: encode audio and texts in separate calls")
        # Paths beside in-memory clips: decode the files at the rate the clips declare (the processor takes one).
        rates = {item["sampling_rate"] for item in others if isinstance(item, dict) and "sampling_rate" in item}
        if len(rates) > 1:
            raise ValueError(f"this batch mixes sampling rates {sorted(rates)}: encode each rate in a separate call")
        rate = next(iter(rates)) if rates else self.processor.feature_extractor.sampling_rate
        decoded = {i: _decode(path, rate) for i, path in enumerate(paths) if path is not None}
        return [
            item if i not in decoded else {"array": decoded[i], "sampling_rate": rate} if rates else decoded[i]
            for i, item in enumerate(inputs)
        ]
