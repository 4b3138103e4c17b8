"""LaionClapProcessor: texts and audio into model inputs, with clear errors."""

import pytest
import torch

import clapforge
from clapforge import LaionClapProcessor
from conftest import tone


@pytest.fixture()
def processor(tokenizer):
    return LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), tokenizer)


def test_text_and_audio_together(processor):
    inputs = processor(text=["a dog", "rain"], audio=[tone(1.0), tone(2.0)], sampling_rate=48000)
    assert set(inputs) >= {"input_ids", "attention_mask", "input_features", "is_longer"}
    assert inputs["input_features"].shape == (2, 1, 1001, 64)
    assert inputs["input_ids"].shape[0] == 2


def test_empty_text_is_an_error(processor):
    with pytest.raises(ValueError, match=r"text\[1\]"):
        processor(text=["a dog", "   "])
    with pytest.raises(ValueError, match="needs `text`, `audio`"):
        processor()


def test_long_text_is_truncated_to_77_tokens_like_laion(processor, tiny_model):
    long_text = " ".join(["a dog barks in the rain"] * 40)
    inputs = processor(text=[long_text, "a dog"])
    assert inputs["input_ids"].shape[1] == 77
    assert inputs["input_ids"][0, -1].item() == processor.tokenizer.eos_token_id
    with torch.no_grad():
        embeds = tiny_model.get_text_embeds(inputs["input_ids"], inputs["attention_mask"])
    assert torch.isfinite(embeds).all()
