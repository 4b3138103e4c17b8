"""transformers' zero-shot-audio-classification pipeline runs a clapforge model and processor as they are."""

import numpy as np
import pytest
import torch
from transformers import pipeline

import clapforge
from clapforge.tools.api import classify
from conftest import make_tokenizer, randomize_, tone


def test_zero_shot_pipeline_matches_classify():
    torch.manual_seed(0)
    model = randomize_(clapforge.create_model("test-tiny"), seed=3, scale=0.2)
    processor = clapforge.LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), make_tokenizer())
    classifier = pipeline("zero-shot-audio-classification", model=model,
                          feature_extractor=processor.feature_extractor, tokenizer=processor.tokenizer)
    labels = ["dog", "rain", "siren", "a bell"]
    clips = [tone(3.0, 440.0, seed=1), tone(12.0, 1500.0, seed=2)]  # 48 kHz mono; the second longer than a clip
    expected = classify(clips, labels, (model, processor), sampling_rate=48000)  # (2, K)
    assert float(expected.max() - expected.min()) > 0.02  # the answer depends on the label
    for clip, probs in zip(clips, expected.tolist(), strict=True):
        result = classifier(np.asarray(clip), candidate_labels=labels, hypothesis_template="This is a sound of {}.")
        assert [r["label"] for r in result] == [labels[i] for i in np.argsort(probs, kind="stable")[::-1]]
        assert {r["label"]: r["score"] for r in result} == {
            label: pytest.approx(p, abs=1e-5) for label, p in zip(labels, probs, strict=True)}
