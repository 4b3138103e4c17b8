"""evaluate_clap and the embedding loops, on the test-tiny model with synthetic clips."""

import pytest
import torch

import clapforge
from clapforge import LaionClapProcessor
from clapforge.evaluation import chance_levels, evaluate_clap, retrieval_metrics, zero_shot_accuracy
from clapforge.inference.embedding import embed_audio_batches, embed_texts
from conftest import make_tokenizer, tone

CLASSES = ["dog", "rain", "siren", "bell", "car", "bird"]


@pytest.fixture(scope="module")
def processor():
    return LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), make_tokenizer())


def make_examples() -> list[dict]:
    # Clip lengths 0.5-12 s (12 s is cropped to 10 s), 1-3 captions each; labels: in CLASSES, outside it, or none.
    spec = [
        (1.0, 220.0, ["a dog barks in the rain", "a dog barks"], ["dog", "rain"]),
        (0.5, 660.0, ["a siren wails in the distance"], ["siren"]),
        (2.0, 880.0, ["the sound of a bell", "a bell rings", "a clock ticks"], ["bell"]),
        (12.0, 330.0, ["a car engine starts"], ["car"]),
        (1.5, 990.0, ["birds sing at dawn", "a cat meows"], ["cat"]),  # first label not a class: retrieval only
        (0.7, 440.0, ["heavy rain on a roof"], []),
    ]
    return [
        {"key": f"clip{i}", "audio": tone(seconds, freq, seed=i), "sampling_rate": 48000, "captions": captions,
         "caption": captions[0], "labels": labels}
        for i, (seconds, freq, captions, labels) in enumerate(spec)
    ]


def test_evaluate_clap_equals_direct_embeddings_and_metric_functions(tiny_model, processor):
    examples = make_examples()
    # A generator: evaluate_clap must read the stream once. batch_size 4 leaves a partial last batch.
    scores = evaluate_clap(tiny_model, processor, (e for e in examples), class_names=CLASSES, batch_size=4)

    with torch.no_grad():
        features = processor(audio=[e["audio"] for e in examples], sampling_rate=48000)
        audio = tiny_model.get_audio_embeds(features["input_features"], features["is_longer"])  # (6, E)
        captions = [c for e in examples for c in e["captions"]]
        tokens = processor(text=captions)
        text = tiny_model.get_text_embeds(tokens["input_ids"], tokens["attention_mask"])  # (10, E)
        prompts = processor(text=[f"This is a sound of {name}." for name in CLASSES])
        class_text = tiny_model.get_text_embeds(prompts["input_ids"], prompts["attention_mask"])  # (6, E)
    text_to_audio = torch.tensor([i for i, e in enumerate(examples) for _ in e["captions"]])
    labelled = [0, 1, 2, 3]  # first labels dog, siren, bell, car; clip 4's "cat" and clip 5's none are skipped
    targets = torch.tensor([CLASSES.index(examples[i]["labels"][0]) for i in labelled])

    expected = retrieval_metrics(audio, text, text_to_audio)
    expected.update({f"zero_shot_{k}": v for k, v in zero_shot_accuracy(audio[labelled], class_text, targets).items()})
    expected.update({"n_clips": 6, "n_captions": 10, "n_zero_shot": 4, "n_classes": 6})
    chance = chance_levels(text_to_audio=text_to_audio, n_audio=6)
    chance.update({f"zero_shot_{k}": v for k, v in chance_levels(n_classes=6).items()})
    expected.update({f"chance/{k}": v for k, v in chance.items()})

    assert set(scores) == {
        "t2a_R@1", "t2a_R@5", "t2a_R@10", "t2a_mAP@10", "a2t_R@1", "a2t_R@5", "a2t_R@10", "a2t_mAP@10",
        "zero_shot_top1", "zero_shot_top5", "n_clips", "n_captions", "n_zero_shot", "n_classes",
        *(f"chance/{k}" for k in ("t2a_R@1", "t2a_R@5", "t2a_R@10", "t2a_mAP@10", "a2t_R@1", "a2t_R@5", "a2t_R@10",
                                  "a2t_mAP@10", "zero_shot_top1", "zero_shot_top5")),
    }
    assert scores == pytest.approx(expected, abs=1e-9)
    assert scores["chance/t2a_R@1"] == pytest.approx(1 / 6) and scores["chance/zero_shot_top1"] == pytest.approx(1 / 6)

    # The embedding loops themselves: same vectors, (N, E) float32, whatever the batch size. Other batch sizes sum in
    # other orders (per CPU too); the vectors are unit-norm and test-tiny's sums have <= ~1e3 terms, so rounding moves
    # them by ~sqrt(n) * 6e-8 ~ 2e-6 (measured 6e-8): atol 1e-5 holds on any CPU; a mixed-up row moves them by as much
    # as two clips' embeddings differ.
    clips = (e["audio"] for e in examples)
    batched_audio = embed_audio_batches(tiny_model, processor.feature_extractor, clips, batch_size=4)
    assert batched_audio.shape == (6, tiny_model.config.projection_dim) and batched_audio.dtype == torch.float32
    torch.testing.assert_close(batched_audio, audio, atol=1e-5, rtol=1e-4)
    batched_text = embed_texts(tiny_model, processor, captions, batch_size=3)
    torch.testing.assert_close(batched_text, text, atol=1e-5, rtol=1e-4)
    # A bare tokenizer is called with the processor's text settings.
    torch.testing.assert_close(embed_texts(tiny_model, processor.tokenizer, captions, batch_size=3), batched_text)


def test_evaluate_clap_without_classes_and_with_other_ks(tiny_model, processor):
    scores = evaluate_clap(tiny_model, processor, make_examples(), class_names=None, batch_size=16, ks=(1, 2))
    assert set(scores) == {"t2a_R@1", "t2a_R@2", "t2a_mAP@10", "a2t_R@1", "a2t_R@2", "a2t_mAP@10", "n_clips",
                           "n_captions", "chance/t2a_R@1", "chance/t2a_R@2", "chance/t2a_mAP@10", "chance/a2t_R@1",
                           "chance/a2t_R@2", "chance/a2t_mAP@10"}
    # Fewer classes than 5: top5 is omitted, with its chance level.
    scores = evaluate_clap(tiny_model, processor, make_examples(), class_names=["dog", "bell", "car"])
    assert "zero_shot_top1" in scores and "zero_shot_top5" not in scores and "chance/zero_shot_top5" not in scores
    assert scores["n_zero_shot"] == 3 and scores["chance/zero_shot_top1"] == pytest.approx(1 / 3)


def test_embedding_restores_each_module_mode_and_runs_in_eval(tiny_model, processor):
    examples = make_examples()
    reference = evaluate_clap(tiny_model, processor, examples, class_names=CLASSES)  # model in eval mode
    reference_text = embed_texts(tiny_model, processor, ["a dog barks", "a bell rings"])

    # Training with a frozen text tower kept in eval mode: both the global and the per-module flags must come back.
    tiny_model.train()
    tiny_model.text_model.eval()
    modes = {name: module.training for name, module in tiny_model.named_modules()}
    assert any(modes.values()) and not all(modes.values())
    # Dropout (0.1 in the test-tiny text tower) would change the text embeddings if they ran in training mode.
    torch.testing.assert_close(embed_texts(tiny_model, processor, ["a dog barks", "a bell rings"]), reference_text)
    assert evaluate_clap(tiny_model, processor, examples, class_names=CLASSES) == pytest.approx(reference, abs=1e-9)
    assert {name: module.training for name, module in tiny_model.named_modules()} == modes

    # Also after an error raised mid-stream.
    bad = make_examples()
    bad[3]["sampling_rate"] = 16000
    with pytest.raises(ValueError, match="16000 Hz"):
        evaluate_clap(tiny_model, processor, bad, class_names=CLASSES, batch_size=2)
    assert {name: module.training for name, module in tiny_model.named_modules()} == modes


def test_autocast_bfloat16_is_close(tiny_model, processor):
    clips = [e["audio"] for e in make_examples()]
    full = embed_audio_batches(tiny_model, processor, clips, batch_size=3)
    half = embed_audio_batches(tiny_model, processor, clips, batch_size=3, autocast_dtype=torch.bfloat16)
    assert half.dtype == torch.float32
    assert not torch.equal(half, full)  # autocast did take effect
    assert torch.nn.functional.cosine_similarity(half, full).min() > 0.98


def test_evaluate_clap_rejects_bad_input(tiny_model, processor):
    with pytest.raises(ValueError, match="no examples"):
        evaluate_clap(tiny_model, processor, [])
    with pytest.raises(ValueError, match="first label"):
        evaluate_clap(tiny_model, processor, make_examples(), class_names=["violin"])
    no_caption = make_examples()
    no_caption[2]["captions"] = []
    with pytest.raises(ValueError, match="clip2.*no caption"):
        evaluate_clap(tiny_model, processor, no_caption)
