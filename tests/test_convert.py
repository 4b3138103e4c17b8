"""Converters: transformers ClapModel <-> clapforge parity, and LAION .pt checkpoints as released."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from transformers import ClapConfig, ClapModel

from clapforge import LaionClapModel
from clapforge.convert import convert_checkpoint, load_laion_state_dict
from conftest import NUMPY1_GLOBALS, make_tokenizer, randomize_, rewrite_pickle_globals

TINY_HF = dict(
    # 64-wide heads, as in every BERT-family tower LAION used: a LAION .pt does not record the head count.
    text_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=128, vocab_size=300),
    audio_config=dict(
        depths=[2, 2, 2, 2], patch_embeds_hidden_size=8, hidden_size=64, num_attention_heads=[1, 2, 4, 8]
    ),
)


def hf_model(size: str, fusion: bool) -> ClapModel:
    torch.manual_seed(0)
    if size == "tiny":
        config = ClapConfig(
            text_config=TINY_HF["text_config"], audio_config={**TINY_HF["audio_config"], "enable_fusion": fusion}
        )
    else:  # transformers' defaults: HTS-AT-tiny audio tower and a RoBERTa-base-sized text tower
        config = ClapConfig(audio_config={"enable_fusion": fusion})
    return randomize_(ClapModel(config))


# Parity between two implementations (transformers' ClapModel and ours) is checked in float64: they group the same
# operations differently (and the kernels sum in a per-CPU order), which in float32 leaves ~1e-7 of noise on the unit
# embeddings that no fixed tolerance bounds on every CPU. In float64 sums of up to ~3e3 terms of size <= ~10 round by
# at most 3e3 * 1.1e-16 * 10 ~ 3e-12: the audio towers agree to 1e-16. transformers' text tower computes its attention
# softmax in float32 whatever the input dtype (ClapTextSelfAttention's eager path), so the text embeddings keep that
# one float32 rounding of the attention weights: measured 4e-9 (tiny) and 2.5e-8 (RoBERTa-base size), on any CPU
# alike (softmax over <= 12 tokens). A converter error stays far above both: another LayerNorm eps (1e-12 -> 1e-5 in
# the text tower, 1e-5 -> 1e-6 in the audio tower) moves the embeddings by 7.7e-6 / 5.5e-6, a misplaced weight by
# ~1e-1.
TOL64 = {"audio": dict(rtol=0, atol=1e-10), "text": dict(rtol=0, atol=1e-6)}


def inputs(fusion: bool, vocab: int, batch: int = 3):
    """Float64 features: the models they are given to are converted to float64 first (TOL64)."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(batch, 4 if fusion else 1, 1001, 64, generator=generator, dtype=torch.float64)
    is_longer = torch.tensor([[True], [False], [True]])[:batch]
    ids = torch.randint(3, vocab, (batch, 12), generator=generator)
    ids[:, 0], ids[:, -1] = 0, 2
    mask = torch.ones_like(ids)
    mask[1, 7:], ids[1, 7:] = 0, 1
    return features, is_longer, ids, mask


def embeddings_hf(model, features, is_longer, ids, mask):
    with torch.no_grad():
        audio = model.get_audio_features(input_features=features, is_longer=is_longer).pooler_output
        text = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    return audio, text


def embeddings_ours(model, features, is_longer, ids, mask):
    with torch.no_grad():
        return model.get_audio_embeds(features, is_longer), model.get_text_embeds(ids, mask)


@pytest.mark.parametrize("fusion", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("size", ["tiny", pytest.param("default", marks=pytest.mark.slow)])  # default: 600 MB folders
def test_transformers_folder_converts_with_parity(size, fusion, tmp_path):
    source = hf_model(size, fusion)
    source.save_pretrained(tmp_path / "hf")
    report = convert_checkpoint(tmp_path / "hf", tmp_path / "ours", no_tokenizer=True)
    ours = LaionClapModel.from_pretrained(tmp_path / "ours").eval()
    # At the default size each folder holds 600 MB; freed now so that a test run fits on a small CI disk.
    shutil.rmtree(tmp_path / "hf")
    shutil.rmtree(tmp_path / "ours")
    assert ours.config.enable_fusion == fusion
    assert "text_model.embeddings.position_ids" in report.dropped_keys
    batch = inputs(fusion, source.config.text_config.vocab_size)
    expected = embeddings_hf(source.double(), *batch)
    for tower, theirs, mine in zip(TOL64, expected, embeddings_ours(ours.double(), *batch), strict=True):
        assert mine.shape == (3, 512) and mine.dtype == torch.float64
        torch.testing.assert_close(mine, theirs, **TOL64[tower], msg=lambda m, tower=tower: f"{tower}: {m}")


@pytest.mark.parametrize("fusion", [False, True], ids=["unfused", "fused"])
def test_export_to_transformers_roundtrips(fusion, tmp_path):
    import clapforge

    torch.manual_seed(0)
    model = randomize_(clapforge.create_model("test-tiny", enable_fusion=fusion))
    model.save_pretrained(tmp_path / "ours")
    convert_checkpoint(tmp_path / "ours", tmp_path / "hf", to="transformers", no_tokenizer=True)
    exported = ClapModel.from_pretrained(tmp_path / "hf").eval()  # transformers' own class loads it
    convert_checkpoint(tmp_path / "hf", tmp_path / "back", no_tokenizer=True)
    back = LaionClapModel.from_pretrained(tmp_path / "back").eval()
    batch = inputs(fusion, model.config.text_config.vocab_size)
    original = embeddings_ours(model.double(), *batch)
    exported_embeddings = embeddings_hf(exported.double(), *batch)
    back_embeddings = embeddings_ours(back.double(), *batch)
    for tower, a, b, c in zip(TOL64, original, exported_embeddings, back_embeddings, strict=True):
        torch.testing.assert_close(b, a, **TOL64[tower], msg=lambda m, tower=tower: f"{tower}: {m}")
        torch.testing.assert_close(c, a, atol=0, rtol=0)  # the same class and weights: the same computation


def test_export_refuses_what_transformers_cannot_hold(tmp_path):
    import clapforge

    clapforge.create_model("test-tiny", text_pooling="mean").save_pretrained(tmp_path / "ours")
    with pytest.raises(ValueError, match="HTS-AT \\+ RoBERTa"):
        convert_checkpoint(tmp_path / "ours", tmp_path / "hf", to="transformers")


# --- LAION .pt ------------------------------------------------------------------------------------------------
# LAION's names are derived from a transformers ClapModel by inverting transformers' own conversion mapping
# (shared/reference/LAION_CLAP.md section 5.5), so the expected embeddings come from an independent implementation.
HF_TO_LAION = [
    ("text_model.", "text_branch."),
    ("audio_model.audio_encoder.", "audio_branch."),
    ("attention.self.relative_position_bias_table", "attn.relative_position_bias_table"),
    ("attention.output.dense", "attn.proj"),
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
    ("batch_norm", "bn0"),
    ("_projection.linear1", "_projection.0"),
    ("_projection.linear2", "_projection.2"),
]


def laion_checkpoint_from(model: ClapModel) -> dict:
    state, qkv = {}, {}
    for key, tensor in model.state_dict().items():
        if key.startswith("text_model."):
            laion = "text_branch." + key.removeprefix("text_model.")  # the RoBERTa keeps transformers' names
        else:
            match = re.match(r"(.*)\.attention\.self\.(query|key|value)\.(weight|bias)$", key)
            if match:
                qkv.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = tensor
                continue
            laion = key
            for hf, ours in HF_TO_LAION:
                laion = laion.replace(hf, ours)
        state["module." + laion] = tensor
    for (prefix, kind), parts in qkv.items():
        name = prefix.replace("audio_model.audio_encoder.", "audio_branch.") + f".attn.qkv.{kind}"
        state["module." + name] = torch.cat([parts["query"], parts["key"], parts["value"]])
    # What the released files also carry and we must drop.
    state["module.audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.randn(513, 1, 1024)
    state["module.audio_branch.logmel_extractor.melW"] = torch.randn(513, 64)
    state["module.audio_branch.tscam_conv.weight"] = torch.randn(527, 64, 2, 3)
    state["module.audio_branch.head.weight"] = torch.randn(527, 527)
    state["module.text_transform.sequential.0.weight"] = torch.randn(512, 512)
    state["module.audio_transform.sequential.3.bias"] = torch.randn(512)
    state["module.audio_branch.layers.0.blocks.1.attn_mask"] = torch.zeros(64, 64, 64)
    return {"epoch": np.int64(45), "name": "630k-fusion", "best": np.float64(0.5), "state_dict": state}


@pytest.mark.parametrize("numpy_version", ["numpy1", "numpy2"])
@pytest.mark.parametrize("fusion", [False, True], ids=["unfused", "fused"])
def test_laion_checkpoint_converts_with_parity(fusion, numpy_version, tmp_path):
    source = hf_model("tiny", fusion)
    torch.save(laion_checkpoint_from(source), tmp_path / "630k.pt")
    if numpy_version == "numpy1":  # as every released file was pickled
        names = rewrite_pickle_globals(tmp_path / "630k.pt", NUMPY1_GLOBALS)
        assert "numpy.core.multiarray scalar" in names and not any("numpy._core" in n for n in names)
    tokenizer = make_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tok")
    report = convert_checkpoint(tmp_path / "630k.pt", tmp_path / "ours", tokenizer=tmp_path / "tok")
    dropped = set(report.dropped_keys)
    assert {
        "audio_branch.tscam_conv.weight",
        "text_transform.sequential.0.weight",
        "audio_branch.logmel_extractor.melW",
    } <= dropped
    saved_report = json.loads((tmp_path / "ours" / "conversion_report.json").read_text())
    assert set(saved_report["dropped_keys"]) == dropped
    assert (tmp_path / "ours" / "tokenizer.json").is_file()
    ours = LaionClapModel.from_pretrained(tmp_path / "ours").eval()
    audio = ours.config.audio_config
    assert (audio.embed_dim, audio.depths, audio.num_heads, ours.config.enable_fusion) == (
        8,
        [2, 2, 2, 2],
        [1, 2, 4, 8],
        fusion,
    )
    # The text tower is RoBERTa-like, read from the shapes; eps follows roberta-base (LAION), not transformers.
    assert ours.config.text_config.model_type == "roberta" and ours.config.text_config.num_hidden_layers == 2
    ours.text_model.config.layer_norm_eps = source.config.text_config.layer_norm_eps
    for module in ours.text_model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = source.config.text_config.layer_norm_eps
    batch = inputs(fusion, 300)
    expected = embeddings_hf(source.double(), *batch)
    for tower, theirs, mine in zip(TOL64, expected, embeddings_ours(ours.double(), *batch), strict=True):
        torch.testing.assert_close(mine, theirs, **TOL64[tower], msg=lambda m, tower=tower: f"{tower}: {m}")


@pytest.mark.parametrize(("embed_dim", "depths", "name"), [(96, [2, 2, 6, 2], "tiny"), (128, [2, 2, 12, 2], "base")])
def test_laion_architecture_is_read_from_tensors(embed_dim, depths, name, tmp_path):
    """The real HTS-AT tiny/base layouts are told apart by shapes, never by a name the user passes."""
    config = ClapConfig(
        text_config=TINY_HF["text_config"],
        audio_config=dict(patch_embeds_hidden_size=embed_dim, hidden_size=embed_dim * 8, depths=depths),
    )
    with torch.device("meta"):
        source = ClapModel(config)
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in laion_checkpoint_from(source)["state_dict"].items()}
    from clapforge.convert import laion_to_clapforge

    ours_config, _, _ = laion_to_clapforge({k.removeprefix("module."): v for k, v in state.items()})
    assert ours_config.audio_config.embed_dim == embed_dim and ours_config.audio_config.depths == depths, name
    assert ours_config.audio_config.num_heads == [4, 8, 16, 32]


def test_converter_refuses_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello, I am not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_laion_state_dict(text)

    class Payload:
        def __reduce__(self):
            return (print, ("this would run on load",))

    hostile = tmp_path / "hostile.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Payload()}, hostile)
    with pytest.raises(ValueError, match="refused by the safe loader: its pickle names __builtin__.print"):
        load_laion_state_dict(hostile)

    unrelated = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, unrelated)
    with pytest.raises(ValueError, match="not a LAION-CLAP checkpoint"):
        load_laion_state_dict(unrelated)

    with pytest.raises(FileNotFoundError):
        load_laion_state_dict(tmp_path / "missing.pt")


@pytest.mark.parametrize("hostile", ["builtins eval", "os system", "posix system"])
def test_numpy1_checkpoint_with_any_other_global_is_refused(hostile, tmp_path):
    """The allow-list takes numpy 1.x's names for numpy's scalar functions, and no other global under any name."""
    checkpoint = tmp_path / "630k.pt"
    torch.save(laion_checkpoint_from(hf_model("tiny", False)), checkpoint)
    names = rewrite_pickle_globals(checkpoint, {**NUMPY1_GLOBALS, "numpy._core.multiarray scalar": hostile})
    assert hostile in names
    with pytest.raises(ValueError, match=f"refused by the safe loader: its pickle names {hostile.replace(' ', '.')}"):
        load_laion_state_dict(checkpoint)
    with pytest.raises(ValueError, match="refused by the safe loader"):
        convert_checkpoint(checkpoint, tmp_path / "out", no_tokenizer=True)
    assert not (tmp_path / "out").exists()


def test_conversion_without_a_tokenizer_is_refused_unless_asked_for(tmp_path):
    """A folder without a tokenizer cannot embed text: convert names the fix instead of writing one silently."""
    torch.save(laion_checkpoint_from(hf_model("tiny", True)), tmp_path / "630k.pt")
    with pytest.raises(ValueError, match=r"630k.pt carries no tokenizer.*--tokenizer roberta-base.*--no-tokenizer"):
        convert_checkpoint(tmp_path / "630k.pt", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    convert_checkpoint(tmp_path / "630k.pt", tmp_path / "audio-only", no_tokenizer=True)
    written = {p.name for p in (tmp_path / "audio-only").iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= written
    assert not {"tokenizer.json", "vocab.json", "tokenizer_config.json"} & written
    # The extractor written beside the model is derived from its config: fused model, fusion features.
    assert json.loads((tmp_path / "audio-only" / "preprocessor_config.json").read_text())["truncation"] == "fusion"


def test_cli_convert_without_a_tokenizer_names_the_fix(tmp_path, capsys):
    from clapforge.cli import main

    torch.save(laion_checkpoint_from(hf_model("tiny", False)), tmp_path / "630k.pt")
    assert main(["convert", str(tmp_path / "630k.pt"), str(tmp_path / "refused")]) == 2
    assert "--tokenizer roberta-base" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert main(["convert", str(tmp_path / "630k.pt"), str(tmp_path / "audio-only"), "--no-tokenizer"]) == 0
    assert (tmp_path / "audio-only" / "conversion_report.json").is_file()


def test_cli_convert_reports_errors_clearly(tmp_path, capsys):
    from clapforge.cli import main

    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"\x00\x01garbage")
    assert main(["convert", str(bogus), str(tmp_path / "out")]) == 2
    assert "not a PyTorch checkpoint" in capsys.readouterr().err
