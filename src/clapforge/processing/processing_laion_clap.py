"""LaionClapProcessor: one object that turns texts and audio into model inputs.

Copied into saved model folders: imports only the standard library and transformers.
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
    """

    def __init__(self, feature_extractor: Any, tokenizer: Any) -> None:
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self,
        text: str | list[str] | None = None,
        audio: Any = None,
        sampling_rate: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        if text is None and audio is None:
            raise ValueError("LaionClapProcessor needs `text`, `audio`, or both")
        max_length = kwargs.pop("max_length", TEXT_MAX_LENGTH)
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
            # Remaining options (`padding`, `truncation`, `random_crop`, ...) are the feature extractor's audio modes.
            data.update(
                self.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors=return_tensors, **kwargs)
            )
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return list(self.tokenizer.model_input_names) + list(self.feature_extractor.model_input_names)
