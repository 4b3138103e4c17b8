"""PANN CNN6/10/14 audio encoders: shapes, LAION's parameter names and counts, fusion, gradient checkpointing, init."""

import copy

import pytest
import torch

from clapforge.modeling_clap import modeling_pann
from clapforge.modeling_clap.configuration_laion_clap import PannConfig
from clapforge.modeling_clap.modeling_pann import PannAudioEncoder, init_pann_weights
from conftest import dynamo_warnings

SMALL_CHANNELS = {"cnn6": [4, 8, 8, 16], "cnn10": [4, 8, 8, 16, 16], "cnn14": [4, 8, 8, 16, 16, 32]}
FRAMES, MELS = 1001, 64
F64 = torch.float64
# The invariance checks (batch composition, ignored channels, a compensated BatchNorm shift) compare two computations
# of the same function with other batch shapes, so other summation orders in the conv and pooling kernels (which
# differ between CPUs). They run in float64, where a sum of n <= 9 * 32 terms no larger than ~10 rounds by at most
# n * 1.1e-16 * 10 ~ 3e-13 whatever the order: far under TOL64. A real error (a local crop reaching a short clip, rows
# mixed up) moves the O(1) outputs by more than 1e-4, as the control next to each check shows.
TOL64 = dict(rtol=1e-9, atol=1e-9)


def small_encoder(variant: str, fusion: bool = False, **kwargs) -> PannAudioEncoder:
    """A small encoder in eval mode, with LAION's init and BatchNorm statistics of one random batch.

    Without calibrated statistics a randomly initialised deep conv stack shrinks its input to nothing and every
    clip maps to relu(fc1.bias), which would make the comparisons below pass for the wrong reason.
    """
    torch.manual_seed(0)
    config = PannConfig(variant=variant, block_channels=SMALL_CHANNELS[variant], enable_fusion=fusion, **kwargs)
    model = PannAudioEncoder(config)
    model.apply(init_pann_weights)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0  # running statistics := this batch's
    channels = 4 if fusion else 1
    with torch.no_grad():
        model.train()(torch.randn(4, channels, 256, MELS) * 3 + 1, torch.ones(4, 1, dtype=torch.bool))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


@pytest.mark.parametrize("variant", ["cnn6", "cnn10", "cnn14"])
def test_small_variant_gives_pooled_embedding(variant):
    model = small_encoder(variant)
    x = torch.randn(2, 1, FRAMES, MELS)
    with torch.no_grad():
        out = model(x, None)
    assert out.shape == (2, model.config.hidden_size) == (2, SMALL_CHANNELS[variant][-1])
    assert torch.isfinite(out).all()
    assert (out >= 0).all() and (out > 0).any()  # fc1 + ReLU, not all dead
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("variant", ["cnn6", "cnn10", "cnn14"])
def test_training_mode_runs_and_backpropagates(variant):
    model = small_encoder(variant).train()
    out = model(torch.randn(3, 1, 200, MELS), None)
    out.sum().backward()
    assert out.shape == (3, SMALL_CHANNELS[variant][-1])
    assert model.conv_block1.conv1.weight.grad is not None and model.fc1.weight.grad.abs().sum() > 0


def laion_parameter_count(variant: str) -> int:
    """Parameters of LAION's audio branch without fc_audioset, counted from the layer shapes in `pann_model.py`."""
    channels, kernel = {
        "cnn6": ([64, 128, 256, 512], 5),
        "cnn10": ([64, 128, 256, 512, 1024], 3),
        "cnn14": ([64, 128, 256, 512, 1024, 2048], 3),
    }[variant]
    total = 2 * 64  # bn0 (weight, bias)
    for c_in, c_out in zip([1, *channels[:-1]], channels, strict=True):
        if variant == "cnn6":  # ConvBlock5x5: conv1 (no bias) + bn1
            total += kernel * kernel * c_in * c_out + 2 * c_out
        else:  # ConvBlock: conv1, conv2 (no bias) + bn1, bn2
            total += kernel * kernel * (c_in * c_out + c_out * c_out) + 4 * c_out
    d = channels[-1]
    return total + d * d + d  # fc1


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        # PANNs (Kong et al. 2020) reports Cnn14 at 80.8M and Cnn6 at 4.8M with their 527-way AudioSet head
        # (80,753,615 and 4,837,455), which our encoder drops: minus 2048*527+527 and 512*527+527.
        ("cnn14", 80_753_615 - (2048 * 527 + 527)),
        ("cnn6", 4_837_455 - (512 * 527 + 527)),
        # LAION's Cnn10 is not PANNs' (5.2M, four blocks): it adds a 512->1024 block and a 1024-wide fc1.
        ("cnn10", 19_895_744),
    ],
)
def test_full_size_parameter_counts_match_laion(variant, expected):
    with torch.device("meta"):
        model = PannAudioEncoder(PannConfig(variant=variant))
    count = sum(p.numel() for p in model.parameters())
    assert count == expected == laion_parameter_count(variant)
    assert next(model.parameters()).device.type == "meta"


def test_full_size_fusion_adds_laion_aff_2d_layers():
    with torch.device("meta"):
        plain = PannAudioEncoder(PannConfig(variant="cnn14"))
        fused = PannAudioEncoder(PannConfig(variant="cnn14", enable_fusion=True))
    extra = sum(p.numel() for p in fused.parameters()) - sum(p.numel() for p in plain.parameters())
    mel_conv2d = 64 * 1 * 5 * 5 + 64 + 2 * 64  # Conv2d(1, 64, (5, 5)) with bias + BatchNorm2d(64)
    aff = 2 * (64 * 16 + 16 + 2 * 16 + 16 * 64 + 64 + 2 * 64)  # local_att and global_att, channels 64, r=4
    assert extra == mel_conv2d + aff
    assert fused.mel_conv2d[0].weight.shape == (64, 1, 5, 5)
    assert fused.mel_conv2d[0].stride == (6, 2) and fused.mel_conv2d[0].padding == (2, 2)


# LAION audio-branch keys (minus `audio_branch.`) for Cnn14 with block_channels [4, 8, 8, 16, 16, 32] and
# fusion_type aff_2d, read from `Cnn14.__init__` in LAION-AI/CLAP src/laion_clap/clap_module/pann_model.py
# (module registration order: bn0, conv_block1..6, fc1, [fc_audioset], mel_conv2d, fusion_model) and `ConvBlock`
# (conv1, conv2, bn1, bn2), and `AFF` in feature_fusion.py (local_att.{0,1,3,4}, global_att.{1,2,4,5}).
# Left out on purpose: fc_audioset.* and the torchlibrosa front end (spectrogram_extractor.stft.conv_{real,imag}.weight,
# logmel_extractor.melW), which the converter drops.
def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def _conv_block(i: int, double: bool) -> list[str]:
    convs = [f"conv_block{i}.conv1.weight"] + ([f"conv_block{i}.conv2.weight"] if double else [])
    return convs + _bn(f"conv_block{i}.bn1") + (_bn(f"conv_block{i}.bn2") if double else [])


LAION_CNN14_FUSION_KEYS = (
    _bn("bn0")
    + [key for i in range(1, 7) for key in _conv_block(i, double=True)]
    + ["fc1.weight", "fc1.bias"]
    + ["mel_conv2d.0.weight", "mel_conv2d.0.bias"] + _bn("mel_conv2d.1")
    + ["fusion_model.local_att.0.weight", "fusion_model.local_att.0.bias"] + _bn("fusion_model.local_att.1")
    + ["fusion_model.local_att.3.weight", "fusion_model.local_att.3.bias"] + _bn("fusion_model.local_att.4")
    + ["fusion_model.global_att.1.weight", "fusion_model.global_att.1.bias"] + _bn("fusion_model.global_att.2")
    + ["fusion_model.global_att.4.weight", "fusion_model.global_att.4.bias"] + _bn("fusion_model.global_att.5")
)
# Cnn6: bn0, conv_block1..4 of `ConvBlock5x5` (conv1, bn1), fc1, [fc_audioset]; LAION's Cnn6 has no fusion layers.
LAION_CNN6_KEYS = (
    _bn("bn0") + [key for i in range(1, 5) for key in _conv_block(i, double=False)] + ["fc1.weight", "fc1.bias"]
)


def test_state_dict_keys_follow_laion_layout():
    assert list(small_encoder("cnn14", fusion=True).state_dict()) == LAION_CNN14_FUSION_KEYS
    assert list(small_encoder("cnn6").state_dict()) == LAION_CNN6_KEYS
    cnn10 = small_encoder("cnn10").state_dict()
    assert [k for k in cnn10 if k.endswith("conv2.weight")] == [f"conv_block{i}.conv2.weight" for i in range(1, 6)]


def test_shapes_tell_variants_apart():
    # What a converter can read off a LAION state dict: kernel size (5 for Cnn6, 3 otherwise), number of blocks,
    # presence of conv2, and fc1's width.
    cnn6, cnn10, cnn14 = (small_encoder(v).state_dict() for v in ("cnn6", "cnn10", "cnn14"))
    assert cnn6["conv_block1.conv1.weight"].shape == (4, 1, 5, 5)
    assert cnn10["conv_block1.conv1.weight"].shape == cnn14["conv_block1.conv1.weight"].shape == (4, 1, 3, 3)
    assert "conv_block5.conv1.weight" in cnn10 and "conv_block6.conv1.weight" not in cnn10
    assert "conv_block6.conv1.weight" in cnn14
    assert cnn14["fc1.weight"].shape == (32, 32)


def test_only_cnn14_skips_the_last_pooling():
    assert [b.pool_size for b in small_encoder("cnn14").conv_blocks] == [2, 2, 2, 2, 2, 1]
    assert [b.pool_size for b in small_encoder("cnn10").conv_blocks] == [2] * 5
    assert [b.pool_size for b in small_encoder("cnn6").conv_blocks] == [2] * 4


def test_bn0_normalises_each_mel_bin():
    model = small_encoder("cnn6").to(F64)  # float64: x + 3 - (mean + 3) = x - mean up to 1e-16, not 2e-7
    # As many frames as mel bins, so a BatchNorm over the wrong axis would run without a shape error.
    x = torch.randn(2, 1, MELS, MELS, dtype=F64)
    bin5 = torch.eye(MELS, dtype=F64)[5].view(1, 1, 1, MELS)
    with torch.no_grad():
        before = model(x, None)
        model.bn0.running_mean[5] += 3.0
        after = model(x, None)
        compensated = model(x + 3.0 * bin5, None)
    assert (before - after).abs().max() > 1e-4
    torch.testing.assert_close(compensated, before, **TOL64)


@pytest.mark.parametrize("variant", ["cnn6", "cnn14"])
def test_head_is_freq_mean_then_time_max_plus_mean_then_fc1_relu(variant):
    # LAION's `embedding`: mean over mel bins, (max + mean) over frames, fc1, ReLU (dropouts are identities in eval).
    model = small_encoder(variant)
    captured = {}
    model.conv_blocks[-1].register_forward_hook(lambda module, args, out: captured.update(last=out))
    with torch.no_grad():
        out = model(torch.randn(2, 1, 300, MELS), None)
        freq_mean = captured["last"].mean(dim=3)  # (B, D, T')
        expected = torch.relu(model.fc1(freq_mean.max(dim=2).values + freq_mean.mean(dim=2)))
    torch.testing.assert_close(out, expected)


def test_fusion_local_map_is_the_three_crops_side_by_side_in_time():
    model = small_encoder("cnn14", fusion=True)
    captured = {}
    model.fusion_model.register_forward_hook(lambda module, args, out: captured.update(args=args))
    x = torch.randn(3, 4, FRAMES, MELS)
    longer = torch.tensor([[False], [True], [True]])
    with torch.no_grad():
        model(x, longer)
        normed = model.bn0(x.transpose(1, 3)).transpose(1, 3)
        global_map, local_map = captured["args"]
        # Front, middle, back crop each through mel_conv2d, concatenated along frames, cut to the global map's frames.
        crops = [model.mel_conv2d(normed[1:, k : k + 1]) for k in (1, 2, 3)]
        expected = torch.cat(crops, dim=2)[:, :, : global_map.shape[2]]
    assert global_map.shape == (2, 4, FRAMES // 2, MELS // 2)
    assert crops[0].shape[2] * 3 > FRAMES // 2  # LAION's 1001 frames: 3 * 167 = 501 local frames, cut to 500
    torch.testing.assert_close(local_map, expected)


@pytest.mark.parametrize("variant", ["cnn6", "cnn10", "cnn14"])
def test_fusion_short_clip_ignores_local_channels(variant):
    model = small_encoder(variant, fusion=True).to(F64)
    # A fused model refuses 1-channel features; its global view alone is what the same weights compute unfused.
    unfused = PannAudioEncoder(PannConfig(variant=variant, block_channels=SMALL_CHANNELS[variant])).eval().to(F64)
    unfused.load_state_dict({k: v for k, v in model.state_dict().items() if k in unfused.state_dict()})
    x = torch.randn(2, 4, FRAMES, MELS, dtype=F64)
    longer = torch.tensor([[True], [False]])
    noisy = x.clone()
    noisy[1, 1:] = torch.randn(3, FRAMES, MELS, dtype=F64) * 5
    with torch.no_grad():
        batch = model(x, longer)
        batch_noisy = model(noisy, longer)
        alone = model(x[1:2], longer[1:2])
        channel0 = unfused(x[1:2, :1], None)
        no_flags = model(x, None)
        channel0_batch = unfused(x[:, :1], None)
    torch.testing.assert_close(batch[1], batch_noisy[1], **TOL64)
    torch.testing.assert_close(batch[1], alone[0], **TOL64)
    torch.testing.assert_close(alone, channel0, **TOL64)
    # No flags: nothing is fused (no random "longer" pick as in LAION's Cnn14).
    torch.testing.assert_close(no_flags, channel0_batch, **TOL64)
    # The longer clip did go through fusion.
    assert (batch[0] - channel0_batch[0]).abs().max() > 1e-4


def test_fusion_longer_clip_depends_on_its_local_channels():
    model = small_encoder("cnn14", fusion=True).to(F64)
    x = torch.randn(2, 4, FRAMES, MELS, dtype=F64)
    longer = torch.tensor([[True], [True]])
    changed = x.clone()
    changed[0, 2] = torch.randn(FRAMES, MELS, dtype=F64)  # only the middle crop of clip 0
    with torch.no_grad():
        out, out_changed = model(x, longer), model(changed, longer)
    assert (out[0] - out_changed[0]).abs().max() > 1e-4
    torch.testing.assert_close(out[1], out_changed[1], **TOL64)


@pytest.mark.slow  # torch.compile builds C++ kernels
def test_compiled_fused_encoder_matches_eager_without_graph_break_warnings():
    """The fusion branch depends on which clips are longer: under torch.compile it runs eagerly between graphs."""
    model = small_encoder("cnn14", fusion=True)
    x = torch.randn(3, 4, 256, MELS)
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with dynamo_warnings() as warnings, torch.inference_mode():
        for flags in ([True, False, True], [True, True, True], [False, False, False]):  # mixed, all long, all short
            longer = torch.tensor(flags)[:, None]
            # float32 on purpose (the compiled graph is what runs). Inductor fuses and re-vectorises the pooling
            # means and BatchNorm (per CPU: AVX2 or AVX-512 lanes), so the sums run in another order; the outputs are
            # O(1) (ReLU of fc1, up to ~4) and each sum has at most 9 * 32 terms, so reordering moves them by a few
            # float32 ulps (measured <= 1e-6): 1e-5 relative plus 1e-5 absolute leaves 10x, and a wrong fusion branch
            # changes them by > 0.1.
            torch.testing.assert_close(compiled(x, longer), model(x, longer), atol=1e-5, rtol=1e-5)
    assert not [message for message in warnings if "Graph break" in message]


def test_fusion_output_does_not_depend_on_batch_composition():
    model = small_encoder("cnn14", fusion=True).to(F64)
    x = torch.randn(4, 4, FRAMES, MELS, dtype=F64)
    longer = torch.tensor([[True], [False], [True], [False]])
    with torch.no_grad():
        full = model(x, longer)
        singles = torch.cat([model(x[i : i + 1], longer[i : i + 1]) for i in range(4)])
        order = torch.tensor([3, 0, 2, 1])
        permuted = model(x[order], longer[order])
        shorts_only = model(x[[1, 3]], longer[[1, 3]])
    torch.testing.assert_close(full, singles, **TOL64)
    torch.testing.assert_close(full[order], permuted, **TOL64)
    torch.testing.assert_close(full[[1, 3]], shorts_only, **TOL64)
    assert (full[0] - full[2]).abs().max() > 1e-4  # the rows differ: a mix-up would show


@pytest.mark.parametrize("frames", [1001, 200, 64])
def test_fusion_handles_other_lengths(frames):
    model = small_encoder("cnn10", fusion=True)
    with torch.no_grad():
        out = model(torch.randn(2, 4, frames, MELS), torch.tensor([[True], [False]]))
    assert out.shape == (2, 16) and torch.isfinite(out).all()


def test_fusion_trains_with_a_single_longer_clip():
    model = small_encoder("cnn14", fusion=True).train()
    out = model(torch.randn(3, 4, 128, MELS), torch.tensor([[False], [True], [False]]))
    out.sum().backward()
    assert model.mel_conv2d[0].weight.grad.abs().sum() > 0
    assert model.fusion_model.local_att[0].weight.grad.abs().sum() > 0


def test_invalid_inputs_and_configs_raise():
    plain = small_encoder("cnn6")
    with pytest.raises(ValueError, match="without fusion"):
        plain(torch.randn(1, 4, 100, MELS), torch.tensor([[True]]))
    with pytest.raises(ValueError, match="mel bins"):
        plain(torch.randn(1, 1, 100, 32), None)
    with pytest.raises(ValueError, match="even num_mel_bins"):
        PannAudioEncoder(PannConfig(variant="cnn6", block_channels=[4, 8], num_mel_bins=63, enable_fusion=True))
    with pytest.raises(ValueError, match="odd"):
        PannAudioEncoder(PannConfig(variant="cnn6", block_channels=[4, 8], kernel_size=4))


def test_gradient_checkpointing_gives_same_gradients_and_norm_statistics(monkeypatch):
    reference = small_encoder("cnn14", fusion=True).train()
    checkpointed = copy.deepcopy(reference)
    checkpointed.gradient_checkpointing = True
    calls = []
    real_checkpoint = modeling_pann.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(modeling_pann, "checkpoint", counting_checkpoint)
    x = torch.randn(3, 4, 128, MELS)
    longer = torch.tensor([[True], [False], [True]])
    steps_before = checkpointed.conv_block1.bn1.num_batches_tracked.item()
    for model in (reference, checkpointed):
        torch.manual_seed(1234)  # same dropout masks in both runs
        model(x, longer).pow(2).sum().backward()
    assert calls == [False] * 6  # every conv block, non-reentrant; the reference run never checkpoints
    for (name, p_ref), (_, p_ckpt) in zip(reference.named_parameters(), checkpointed.named_parameters(), strict=True):
        # Exact in practice (the recomputation repeats the same kernels on the same shapes in this process); the
        # slack only absorbs a different accumulation order, and is far below a missing or doubled term (O(grad)).
        torch.testing.assert_close(p_ckpt.grad, p_ref.grad, atol=1e-5, rtol=1e-4, msg=name)
    # The recomputation in backward must not update BatchNorm running statistics a second time.
    for (name, b_ref), (_, b_ckpt) in zip(reference.named_buffers(), checkpointed.named_buffers(), strict=True):
        torch.testing.assert_close(b_ckpt, b_ref, msg=name)
    assert checkpointed.conv_block1.bn1.num_batches_tracked.item() == steps_before + 1
    # Eval mode never checkpoints.
    calls.clear()
    with torch.no_grad():
        checkpointed.eval()(x, longer)
    assert calls == []


def test_init_pann_weights():
    model = small_encoder("cnn14", fusion=True)
    for p in model.parameters():
        p.data.fill_(7.0)
    model.fc1.weight._is_hf_initialized = True  # as if loaded from a checkpoint: must be left alone
    model.apply(init_pann_weights)
    conv = model.conv_block2.conv1.weight
    fan_in, fan_out = conv.shape[1] * 9, conv.shape[0] * 9
    assert conv.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5 and conv.std() > 0
    assert (model.fc1.weight == 7.0).all()
    assert (model.fc1.bias == 0).all() and (model.mel_conv2d[0].bias == 0).all()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()
            assert (m.running_mean == 0).all() and (m.running_var == 1).all()


@pytest.mark.parametrize("fusion", [False, True])
def test_a_fresh_clap_model_gives_its_pann_encoder_pann_init(fusion):
    """transformers initialises leaf modules only; the PANN scheme must still reach every conv of a fresh model
    (before the fix every conv and fc1 got the generic N(0, 0.02), and from-scratch training crawled)."""
    from clapforge.modeling_clap.configuration_laion_clap import LaionClapConfig
    from clapforge.modeling_clap.modeling_laion_clap import LaionClapModel

    audio = PannConfig(variant="cnn10", block_channels=[8, 16, 32, 64], enable_fusion=fusion).to_dict()
    text = {"model_type": "bert", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 32}
    torch.manual_seed(0)
    model = LaionClapModel(LaionClapConfig(audio_config=audio, text_config=text, enable_fusion=fusion))
    encoder = model.audio_model
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 + (1 if fusion else 0) + (4 if fusion else 0)  # blocks, mel_conv2d, fusion's 4 convs
    for conv in [*convs, encoder.fc1]:
        fan_in = conv.weight[0].numel()
        fan_out = conv.weight.shape[0] * (conv.weight[0, 0].numel() if conv.weight.ndim == 4 else 1)
        xavier_std = (2 / (fan_in + fan_out)) ** 0.5
        assert conv.weight.std().item() == pytest.approx(xavier_std, rel=0.35), conv
    for m in encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()
    # The projection heads and the text tower keep the generic init.
    assert model.audio_projection.linear1.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_head_dropout_is_configurable_and_defaults_to_laion():
    assert PannConfig().head_dropout == 0.5
    encoder = small_encoder("cnn6", head_dropout=0.0, dropout=0.0).train()
    x = torch.randn(2, 1, 200, MELS)
    torch.testing.assert_close(encoder(x), encoder(x))  # no dropout left: training mode is deterministic here
    laion = small_encoder("cnn6").train()
    assert not torch.equal(laion(x), laion(x))
