"""Every saved model folder loads as a `SentenceTransformer` where clapforge cannot be imported, and `encode()` gives
clapforge's own embeddings: texts, and audio of any length, rate and channel count (arrays and files), fused or not."""

import json
import os
import subprocess
import sys
import textwrap
import wave

import numpy as np
import pytest
import torch

import clapforge
from clapforge import LaionClapProcessor
from conftest import make_tokenizer, randomize_

TEXTS = ["a dog barks in the rain", "a siren wails in the distance", "birds sing at dawn"]
SECONDS = (2, 10, 25)  # short (repeat-padded), exactly the model's length, long (fusion or centred crop)

REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["clapforge"] = None  # from here on, `import clapforge` raises ImportError
    import numpy as np, torch
    from sentence_transformers import SentenceTransformer
    folder, out = sys.argv[1], sys.argv[2]
    try:
        import clapforge
        raise SystemExit("clapforge was importable")
    except ImportError:
        pass
    spec = json.loads(open(folder + "/inputs.json").read())
    model = SentenceTransformer(folder, trust_remote_code=True, local_files_only=True, device="cpu")
    stereo = np.load(folder + "/stereo_44k.npz")
    mono = np.load(folder + "/mono_48k.npz")
    # One rate per call: sentence-transformers refuses a batch that mixes rates.
    embeds = {
        "text": model.encode(spec["texts"], convert_to_tensor=True),
        "stereo_44k": model.encode([{"array": stereo[k], "sampling_rate": 44100} for k in stereo.files],
                                   convert_to_tensor=True),
        "mono_48k": model.encode([{"array": mono[k], "sampling_rate": 48000} for k in mono.files],
                                 convert_to_tensor=True),
        "files": model.encode(spec["files"], convert_to_tensor=True),
    }
    embeds["similarity"] = model.similarity(embeds["mono_48k"], embeds["text"])
    torch.save({**embeds, "modalities": sorted(model.modalities), "module": type(model[0].model).__module__}, out)
    """
)


def clips(channels: int, sr: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = [np.arange(int(s * sr)) / sr for s in SECONDS]
    return [
        (0.3 * np.sin(2 * np.pi * (300 + 200 * i) * ti) + 0.05 * rng.standard_normal((channels, ti.size)))
        .astype(np.float32).squeeze(0 if channels == 1 else ())
        for i, ti in enumerate(t)
    ]


def write_wav(path, samples: np.ndarray, sr: int) -> str:
    """(C, T) float in [-1, 1] -> 16-bit PCM wav."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(samples.T, -1, 1) * 32767).astype("<i2").tobytes())
    return str(path)


@pytest.fixture(params=[False, True], ids=["unfused", "fused"])
def folder(request, tmp_path):
    torch.manual_seed(0)
    model = randomize_(clapforge.create_model("test-tiny", enable_fusion=request.param))
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    LaionClapProcessor(clapforge.create_feature_extractor("test-tiny", model.config), make_tokenizer()).save_pretrained(
        folder
    )
    stereo, mono = clips(2, 44100, 1), clips(1, 48000, 2)
    np.savez(folder / "stereo_44k.npz", *stereo)
    np.savez(folder / "mono_48k.npz", *mono)
    files = [write_wav(tmp_path / f"clip{i}.wav", clip, 44100) for i, clip in enumerate(stereo)]
    (folder / "inputs.json").write_text(json.dumps({"texts": TEXTS, "files": files}))
    return folder, stereo, mono, files


def encode_without_clapforge(folder, tmp_path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    out = tmp_path / "st.pt"
    result = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(folder), str(out)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


def test_folder_loads_as_sentence_transformer_with_clapforges_embeddings(folder, tmp_path):
    folder, stereo, mono, files = folder
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        assert (folder / name).is_file(), name
    remote = encode_without_clapforge(folder, tmp_path)
    # "message" is declared only so that sentence-transformers' batch check lets a list of .wav and .oga paths reach
    # the folder's module (sentence_transformers_laion_clap.py), which embeds audio and text only.
    assert remote["modalities"] == ["audio", "message", "text"]
    assert not remote["module"].startswith("clapforge"), remote["module"]

    ours = {
        "text": clapforge.embed_text(TEXTS, model=folder),
        "stereo_44k": clapforge.embed_audio(stereo, model=folder, sampling_rate=44100),
        "mono_48k": clapforge.embed_audio(mono, model=folder, sampling_rate=48000),
        "files": clapforge.embed_audio(files, model=folder),
    }
    for key, expected in ours.items():
        got = remote[key].float().cpu()
        assert got.shape == expected.shape and got.shape[0] == 3, key
        cosine = torch.nn.functional.cosine_similarity(got, expected)
        assert cosine.min() >= 0.99999, (key, cosine)
        torch.testing.assert_close(got.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    # Cross-modal similarity is the cosine of clapforge's embeddings.
    torch.testing.assert_close(remote["similarity"].float(), ours["mono_48k"] @ ours["text"].T, atol=1e-5, rtol=0)


def test_convert_and_export_folders_carry_the_sentence_transformers_files(tmp_path):
    """The files come from `LaionClapModel.save_pretrained`, which every writer of a model folder goes through."""
    from clapforge.convert import convert_checkpoint

    model = clapforge.create_model("test-tiny")
    model.save_pretrained(tmp_path / "ours")
    convert_checkpoint(tmp_path / "ours", tmp_path / "hf", to="transformers", no_tokenizer=True)
    convert_checkpoint(tmp_path / "hf", tmp_path / "back", no_tokenizer=True)
    config = json.loads((tmp_path / "back" / "sentence_bert_config.json").read_text())
    assert config["modality_config"]["audio"]["method"] == "get_audio_embeds"
    assert config["modality_config"]["text"]["method"] == "get_text_embeds"
    # transformers' own ClapModel folder is not ours to describe.
    assert not (tmp_path / "hf" / "modules.json").exists()


def test_sentence_transformers_trainer_fine_tunes_on_audio_caption_pairs(folder, tmp_path):
    """The stretch goal of issue 14: the sentence-transformers trainer runs on (audio, caption) pairs with an
    in-batch contrastive loss and moves both towers."""
    from datasets import Audio, Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    folder = folder[0]
    model = SentenceTransformer(str(folder), trust_remote_code=True, local_files_only=True, device="cpu")
    rng = np.random.default_rng(0)
    rows = {
        "audio": [{"array": (0.1 * rng.standard_normal(48000 * 3)).astype(np.float32), "sampling_rate": 48000}
                  for _ in range(8)],
        "caption": TEXTS + ["the sound of a bell"] + TEXTS + ["keys jingle"],
    }
    pairs = Dataset.from_dict(rows).cast_column("audio", Audio(sampling_rate=48000))
    clap = model[0].model
    before = {name: p.detach().clone() for name, p in clap.named_parameters() if "projection" in name}
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4,
                                                max_steps=2, report_to=[], save_strategy="no", use_cpu=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs,
                                         loss=MultipleNegativesRankingLoss(model))
    assert np.isfinite(trainer.train().training_loss)
    moved = {name.split(".")[0] for name, p in clap.named_parameters() if name in before and
             not torch.equal(before[name], p.detach())}
    assert moved == {"audio_projection", "text_projection"}
