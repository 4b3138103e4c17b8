"""LaionClapProcessor: one object that turns texts and audio into model inputs.

Copied into saved model folders: imports only the standard library and transformers (and, when a file path is given
as audio, torchcodec, the decoder transformers and `datasets` use).
"""

from typing import Any

from transformers import BatchFeature, ProcessorMixin

# LAION trains and evaluates with captions cut at 77 tokens.
TEXT_MAX_LENGTH = 77


class LaionClapProcessor(ProcessorMixin):
    """Wraps a `LaionClapFeatureExtractor` (audio) and any tokenizer (text).

    `processor(text=..., audio=..., sampling_rate=...)` returns `input_ids`/`attention_mask` and/or
    `input_features`/`is_longer`. Other keyword arguments (`padding="repeatpad"`, `truncation="fusion"`, ...) go to
    the feature extractor; `max_length` sets the text limit. Texts are padded to the longest in the batch and truncated
    at 77 tokens as LAION does (padding is masked, so this equals LAION's fixed 77-token padding). An empty text is an
    error: its embedding would be that of the special tokens alone, which silently matches everything equally.

    Audio may also be given as file paths (any format FFmpeg decodes), decoded at the extractor's rate with their
    channels averaged, as `clapforge.embed_audio` decodes them. The per-modality keyword dicts transformers' processors
    take (`text_kwargs`, `audio_kwargs`, `common_kwargs`: how sentence-transformers calls a processor) are accepted:
    `audio_kwargs` may carry `sampling_rate` and extractor options, `text_kwargs` a `max_length`; the text padding and
    truncation rule above always holds.
    """

    def __init__(self, feature_extractor: Any, tokenizer: Any) -> None:
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self,
        text: str | list[str] | None = None,
        audio: Any = None,
        sampling_rate: int | None = None,
        return_tensors: str | None = "pt",
        *,
        text_kwargs: dict[str, Any] | None = None,
        audio_kwargs: dict[str, Any] | None = None,
        common_kwargs: dict[str, Any] | None = None,
        images_kwargs: dict[str, Any] | None = None,
        videos_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        if text is None and audio is None:
            raise ValueError("LaionClapProcessor needs `text`, `audio`, or both")
        if images_kwargs or videos_kwargs:
            raise ValueError("LaionClapProcessor takes text and audio only, not images or videos")
        return_tensors = (common_kwargs or {}).get("return_tensors", return_tensors)
        max_length = kwargs.pop("max_length", None) or (text_kwargs or {}).get("max_length") or TEXT_MAX_LENGTH
        audio_options = {**(audio_kwargs or {}), **kwargs}
        sampling_rate = audio_options.pop("sampling_rate", None) if sampling_rate is None else sampling_rate
        data: dict[str, Any] = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            for i, t in enumerate(texts):
                if not isinstance(t, str) or not t.strip():
                    raise ValueError(f"text[{i}] is {t!r}: expected a non-empty string")
            data.update(
                self.tokenizer(
                    texts, padding=True, truncation=True, max_length=max_length, return_tensors=return_tensors
                )
            )
        if audio is not None:
            clips = [audio] if isinstance(audio, str) else audio
            if isinstance(clips, list) and any(isinstance(clip, str) for clip in clips):
                if not all(isinstance(clip, str) for clip in clips):
                    raise ValueError("audio mixes file paths and arrays: give one kind per call")
                sampling_rate = self.feature_extractor.sampling_rate
                clips = [_decode(path, sampling_rate) for path in clips]  # each (C, T)
            # Remaining options (`padding`, `truncation`, `random_crop`, ...) are the feature extractor's audio modes.
            data.update(
                self.feature_extractor(
                    clips, sampling_rate=sampling_rate, return_tensors=return_tensors, **audio_options
                )
            )
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return list(self.tokenizer.model_input_names) + list(self.feature_extractor.model_input_names)


def _decode(path: str, sampling_rate: int) -> Any:
    """(C, T) float32 samples of an audio file at `sampling_rate` (FFmpeg resamples; channels are kept, and the
    extractor averages them: FFmpeg's own mono downmix is (L + R) / sqrt(2), louder than LAION's channel mean)."""
    try:
        from torchcodec.decoders import AudioDecoder
    except ImportError as error:
        raise ImportError(f"decoding {path} needs torchcodec (pip install torchcodec) and FFmpeg") from error
    return AudioDecoder(path, sample_rate=sampling_rate).get_all_samples().data
