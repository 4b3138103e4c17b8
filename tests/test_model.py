"""LaionClapModel behaviour: outputs, loss, pooling, fusion semantics, gradient checkpointing, single towers."""

import pytest
import torch
import torch.nn.functional as F

import clapforge
from clapforge import LaionClapAudioModelWithProjection, LaionClapModel, LaionClapTextModelWithProjection
from clapforge.modeling_clap.modeling_laion_clap import pool_text

# Invariance checks (padding, batch composition) compare the same function computed on other shapes, so with other
# summation orders in the matmul and attention kernels, which differ between CPUs. They run in float64: a sum of
# n <= ~1e3 terms of size <= ~10 then rounds by at most n * 1.1e-16 * 10 ~ 1e-12 whatever the order, far under
# TOL64. The embeddings are unit vectors; a real error (padding attended to, rows mixed up) moves them by > 1e-3.
TOL64 = dict(rtol=0, atol=1e-9)


def text_batch(tokenizer, texts=("a dog barks", "rain on a roof falls", "a siren")):
    return tokenizer(list(texts), padding=True, return_tensors="pt")


def test_forward_outputs_and_loss(tiny_model, tokenizer):
    text = text_batch(tokenizer)
    features = torch.randn(3, 1, 1001, 64)
    with torch.no_grad():
        out = tiny_model(**text, input_features=features, return_loss=True)
    e = tiny_model.config.projection_dim
    assert out.audio_embeds.shape == (3, e) and out.text_embeds.shape == (3, e)
    torch.testing.assert_close(out.audio_embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(3))
    scale = tiny_model.logit_scale_a.exp()
    expected_logits = scale * out.audio_embeds @ out.text_embeds.T
    torch.testing.assert_close(out.logits_per_audio, expected_logits)
    torch.testing.assert_close(out.logits_per_text, expected_logits.T)
    # The loss written out by hand, LAION's ClipLoss on one process: mean of the two cross-entropies.
    labels = torch.arange(3)
    manual = (F.cross_entropy(expected_logits, labels) + F.cross_entropy(expected_logits.T, labels)) / 2
    torch.testing.assert_close(out.loss, manual)
    assert tiny_model(**text, input_features=features).loss is None


def test_single_tower_calls_match_forward(tiny_model, tokenizer):
    text = text_batch(tokenizer)
    features = torch.randn(2, 1, 1001, 64)
    with torch.no_grad():
        out = tiny_model(**text, input_features=features)
        audio = tiny_model.get_audio_embeds(features)
        texts = tiny_model.get_text_embeds(text["input_ids"], text["attention_mask"])
    assert audio.shape == (2, tiny_model.config.projection_dim)
    torch.testing.assert_close(audio, out.audio_embeds)
    torch.testing.assert_close(texts, out.text_embeds)


def test_forward_requires_both_inputs(tiny_model):
    with pytest.raises(ValueError, match="get_audio_embeds"):
        tiny_model(input_features=torch.randn(1, 1, 1001, 64))


def test_unfused_model_rejects_fusion_input(tiny_model):
    with pytest.raises(ValueError, match="without fusion"):
        tiny_model.get_audio_embeds(torch.randn(1, 4, 1001, 64))


def test_padding_does_not_change_text_embedding(tiny_model, tokenizer):
    alone = tokenizer(["a dog"], return_tensors="pt")
    padded = tokenizer(["a dog", "a very long caption about heavy rain on a roof"], padding=True, return_tensors="pt")
    model = tiny_model.double()
    with torch.no_grad():
        a = model.get_text_embeds(alone["input_ids"], alone["attention_mask"])
        both = model.get_text_embeds(padded["input_ids"], padded["attention_mask"])
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, both[:1], **TOL64)
    assert (both[0] - both[1]).abs().max() > 1e-3  # other texts differ by far more than TOL64


def test_pooling_rules():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooler = torch.full((2, 2), 7.0)
    torch.testing.assert_close(pool_text(hidden, pooler, mask, "pooler"), pooler)
    torch.testing.assert_close(pool_text(hidden, pooler, mask, "cls"), hidden[:, 0])
    torch.testing.assert_close(pool_text(hidden, None, mask, "mean"), torch.tensor([[1.0, 2.0], [8.0, 9.0]]))
    torch.testing.assert_close(pool_text(hidden, None, mask, "last"), torch.stack([hidden[0, 1], hidden[1, 2]]))
    with pytest.raises(ValueError, match="pooler"):
        pool_text(hidden, None, mask, "pooler")


@pytest.mark.parametrize("rule", ["cls", "mean", "last"])
def test_model_with_each_pooling_rule(rule, tokenizer):
    model = clapforge.create_model("test-tiny", text_pooling=rule).eval()
    text = text_batch(tokenizer)
    with torch.no_grad():
        embeds = model.get_text_embeds(text["input_ids"], text["attention_mask"])
    assert embeds.shape == (3, model.config.projection_dim) and torch.isfinite(embeds).all()


def test_invalid_config_values_are_named():
    with pytest.raises(ValueError, match="text_pooling"):
        clapforge.create_model("test-tiny", text_pooling="max")
    with pytest.raises(ValueError, match="unknown preset"):
        clapforge.create_model("htsat-huge")


def test_fusion_ignores_local_crops_of_short_clips(tiny_fused_model):
    torch.manual_seed(1)
    features = torch.randn(3, 4, 1001, 64, dtype=torch.float64)
    is_longer = torch.tensor([[True], [False], [True]])
    other = features.clone()
    other[1, 1:] = torch.randn(3, 1001, 64, dtype=torch.float64)  # new local crops for the short clip
    other[0, 1:] = torch.randn(3, 1001, 64, dtype=torch.float64)  # and for a long one
    model = tiny_fused_model.double()
    with torch.no_grad():
        a = model.get_audio_embeds(features, is_longer)
        b = model.get_audio_embeds(other, is_longer)
        alone = model.get_audio_embeds(features[1:2], is_longer[1:2])
    assert a.dtype == torch.float64
    torch.testing.assert_close(a[1], b[1], **TOL64)  # a short clip only sees its global channel
    assert not torch.allclose(a[0], b[0], atol=1e-4)  # a long clip's crops matter
    torch.testing.assert_close(a[1:2], alone, **TOL64)  # batch composition changes nothing


def test_gradient_checkpointing_gives_same_gradients(tokenizer):
    text = text_batch(tokenizer)
    features = torch.randn(3, 1, 1001, 64)

    def grads(checkpointing: bool) -> dict:
        torch.manual_seed(0)
        model = clapforge.create_model(
            "test-tiny", text_config={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        )
        model.train()
        if checkpointing:
            # transformers 5.24 renamed the switch; older 5.x only has the first name.
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        model(**text, input_features=features, return_loss=True).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 50
    for name in plain:
        # Exact in practice: the recomputation repeats the same kernels on the same shapes in this process.
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5, msg=name)


def test_single_towers_load_from_full_checkpoint(tiny_model, tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    text = text_batch(tokenizer)
    features = torch.randn(2, 1, 1001, 64)
    audio_only = LaionClapAudioModelWithProjection.from_pretrained(tmp_path).eval()
    text_only = LaionClapTextModelWithProjection.from_pretrained(tmp_path).eval()
    assert not any(n.startswith("text_") for n, _ in audio_only.named_parameters())
    assert not any(n.startswith("audio_") for n, _ in text_only.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(audio_only(features).embeds, tiny_model.get_audio_embeds(features))
        torch.testing.assert_close(text_only(**text).embeds, tiny_model.get_text_embeds(**text))


def test_save_and_reload_roundtrip(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = LaionClapModel.from_pretrained(tmp_path).eval()
    features = torch.randn(2, 1, 1001, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.get_audio_embeds(features), tiny_model.get_audio_embeds(features))
    # Derived buffers are rebuilt after meta-device loading, not left as garbage.
    for (name, a), (_, b) in zip(tiny_model.named_buffers(), reloaded.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("frames_in", [1, 3, 4, 300, 1001, 1023])
def test_time_stretch_is_torchs_bicubic(frames_in):
    """HTS-AT's gather-and-sum time stretch gives torch's bicubic (align_corners) interpolation, the operation
    LAION's `reshape_wav2img` applies (the mel axis keeps its size), for fused and unfused inputs."""
    from clapforge.modeling_clap.modeling_htsat import stretch_frames

    mel = torch.randn(2, 4, frames_in, 64, generator=torch.Generator().manual_seed(frames_in))
    expected = F.interpolate(mel, (1024, 64), mode="bicubic", align_corners=True)
    # Weights computed in numpy float32 against torch's C++ kernel: a few ulps apart (values here are up to ~5).
    assert torch.allclose(stretch_frames(mel, 1024), expected, rtol=0, atol=1e-5)
