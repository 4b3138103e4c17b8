"""The one precision policy and its application: `precision="bf16"` runs the model under bf16 autocast in every entry
point (API, CLI embed/classify/search), and `"auto"` picks per device (bf16 with bf16 kernels, int8 beside an int8
export without them, fp32 otherwise), says what it picked and records it in the output.

How "bf16 applied" is observed: the model's tower methods are wrapped to record whether CPU autocast to bfloat16 was
on when they ran, and the API's numbers are compared with the model run directly under `torch.autocast`.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

import clapforge
from clapforge.cli import main as cli_main
from clapforge.inference import precision
from clapforge.inference.loading import load_engine
from clapforge.inference.precision import choose_precision
from clapforge.modeling_clap.modeling_laion_clap import LaionClapModel
from clapforge.tools import api
from clapforge.tools.embeddings_file import read_index
from conftest import REAL_NATIVE_BF16, make_tokenizer, randomize_, tone, write_wav


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    model_dir = root / "model"
    clapforge.LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), make_tokenizer()).save_pretrained(
        model_dir)
    randomize_(clapforge.create_model("test-tiny"), seed=3, scale=0.3).save_pretrained(model_dir)
    for i in range(3):
        write_wav(root / "audio" / f"{i}.wav", seed=i, seconds=0.5 + 0.25 * i)
    return model_dir


@pytest.fixture
def towers_record(monkeypatch):
    """[(tower, autocast dtype or None)] for every tower call of a LaionClapModel in this test."""
    calls = []

    def recording(tower, method):
        def run(self, *args, **kwargs):
            on = torch.is_autocast_enabled("cpu")
            calls.append((tower, torch.get_autocast_dtype("cpu") if on else None))
            return method(self, *args, **kwargs)

        return run

    monkeypatch.setattr(LaionClapModel, "get_audio_embeds", recording("audio", LaionClapModel.get_audio_embeds))
    monkeypatch.setattr(LaionClapModel, "get_text_embeds", recording("text", LaionClapModel.get_text_embeds))
    return calls


def _direct(folder: Path, clips, texts, bf16: bool):
    """(audio (N, E), text (T, E)) of the model run directly, in fp32 or under bf16 autocast."""
    model = LaionClapModel.from_pretrained(folder).eval()
    processor = clapforge.LaionClapProcessor.from_pretrained(folder)
    features = processor(audio=clips, sampling_rate=48000)
    tokens = processor(text=texts)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        audio = model.get_audio_embeds(features["input_features"], features["is_longer"]).float()
        text = model.get_text_embeds(tokens["input_ids"], tokens["attention_mask"]).float()
    return audio, text, model.logit_scale_a.detach().exp()


CLIPS = [tone(0.6, 330.0, seed=1), tone(1.2, 880.0, seed=2)]
TEXTS = ["a dog barks", "rain on a roof"]


def test_api_bf16_gives_bf16_results(folder, towers_record):
    audio = api.embed_audio(CLIPS, folder, sampling_rate=48000, precision="bf16")
    text = api.embed_text(TEXTS, folder, precision="bf16")
    assert {dtype for _, dtype in towers_record} == {torch.bfloat16}  # every tower call ran under bf16 autocast
    bf16_audio, bf16_text, _ = _direct(folder, CLIPS, TEXTS, bf16=True)
    fp32_audio, fp32_text, _ = _direct(folder, CLIPS, TEXTS, bf16=False)
    # The same bf16 computation (same kernels, same chunking of 2 clips): equal to float32 rounding.
    torch.testing.assert_close(audio, bf16_audio, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(text, bf16_text, atol=1e-6, rtol=1e-5)
    # ... and not the fp32 numbers (bf16 keeps 8 bits of mantissa: unit-norm embeddings move by ~1e-3).
    assert (audio - fp32_audio).abs().max() > 1e-4 and (text - fp32_text).abs().max() > 1e-4


def test_api_classify_and_search_apply_bf16(folder, towers_record, tmp_path):
    labels = ["dog", "rain"]
    probabilities = api.classify(CLIPS, labels, folder, sampling_rate=48000, precision="bf16")
    audio, prompts, scale = _direct(folder, CLIPS, [f"This is a sound of {label}." for label in labels], bf16=True)
    # The scorer's cosine renormalises: a unit vector rounded through bf16 has a norm off by ~1e-3.
    cosine = torch.nn.functional.normalize(audio, dim=-1) @ torch.nn.functional.normalize(prompts, dim=-1).T
    expected = (scale * cosine).softmax(-1)
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=1e-4)
    assert {dtype for _, dtype in towers_record} == {torch.bfloat16}

    index = tmp_path / "clips.parquet"
    assert cli_main(["embed", str(folder), str(folder.parent / "audio"), str(index), "--quiet", "--precision",
                     "fp32"]) == 0
    towers_record.clear()
    hits = api.search(index, text="a dog barks", precision="bf16", top_k=3)
    assert towers_record == [("text", torch.bfloat16)]
    stored = read_index(index)
    _, query, _ = _direct(folder, CLIPS, ["a dog barks"], bf16=True)
    query = torch.nn.functional.normalize(query[0], dim=0)  # search renormalises the query, as the scorer does
    expected_scores = torch.nn.functional.normalize(stored.embeddings, dim=-1) @ query
    for hit in hits:
        assert hit["score"] == pytest.approx(float(expected_scores[stored.keys.index(hit["key"])]), abs=1e-5)


@pytest.mark.parametrize("command", ["embed", "classify", "search"])
def test_cli_precision_bf16_runs_the_towers_in_bf16(folder, towers_record, tmp_path, command):
    audio = folder.parent / "audio"
    if command == "embed":
        args = ["embed", str(folder), str(audio), str(tmp_path / "x.parquet"), "--quiet"]
        expected_towers = {"audio"}
    elif command == "classify":
        args = ["classify", str(folder), str(audio / "0.wav"), "--labels", "dog,rain"]
        expected_towers = {"audio", "text"}
    else:
        index = tmp_path / "i.parquet"
        assert cli_main(["embed", str(folder), str(audio), str(index), "--quiet", "--precision", "fp32"]) == 0
        towers_record.clear()
        args = ["search", str(index), "a dog"]
        expected_towers = {"text"}
    assert cli_main([*args, "--precision", "bf16"]) == 0
    assert {tower for tower, _ in towers_record} == expected_towers
    assert {dtype for _, dtype in towers_record} == {torch.bfloat16}
    if command == "embed":
        assert read_index(tmp_path / "x.parquet").metadata["precision"] == "bf16"


def test_fp32_is_exactly_fp32(folder, towers_record):
    api.embed_audio(CLIPS, folder, sampling_rate=48000, precision="fp32")
    assert {dtype for _, dtype in towers_record} == {None}


# ---------------------------------------------------------------------------------------------------------------
# "auto"


@pytest.mark.parametrize(
    ("device", "bf16_kernels", "int8_export", "backend", "expected"),
    [
        ("cpu", True, False, "auto", ("bf16", "torch")),
        ("cpu", True, True, "auto", ("bf16", "torch")),  # bf16 beats int8 where the CPU has the kernels
        ("cpu", False, True, "auto", ("int8", "onnx")),
        ("cpu", False, False, "auto", ("fp32", "torch")),
        ("cpu", True, True, "onnx", ("int8", "onnx")),  # an explicit backend narrows what auto may pick
        ("cpu", True, False, "onnx", ("fp32", "onnx")),
        ("cpu", False, True, "torch", ("fp32", "torch")),
        ("cuda", True, True, "auto", ("bf16", "torch")),
    ],
)
def test_auto_picks_per_device(monkeypatch, device, bf16_kernels, int8_export, backend, expected):
    monkeypatch.setattr(precision, "native_bf16", lambda _: bf16_kernels)
    choice = choose_precision("auto", device, backend=backend, int8_export=int8_export)
    assert (choice.precision, choice.backend) == expected
    assert choice.requested == "auto" and choice.reason


@pytest.mark.parametrize("asked", ["fp32", "bf16", "int8"])
def test_an_explicit_precision_means_exactly_that(monkeypatch, asked):
    monkeypatch.setattr(precision, "native_bf16", lambda _: True)
    choice = choose_precision(asked, "cpu", int8_export=True)
    assert (choice.precision, choice.requested) == (asked, asked)
    assert choice.backend == ("onnx" if asked == "int8" else "torch")


def test_auto_on_this_machine_uses_its_bf16_kernels(folder, monkeypatch, caplog):
    """Unpatched: on an AMX / AVX-512 BF16 CPU, auto is bf16; on an AVX2 one, fp32 (no int8 export here)."""
    monkeypatch.setattr(precision, "native_bf16", REAL_NATIVE_BF16)
    with caplog.at_level("INFO", logger="clapforge.inference.precision"):
        engine = load_engine(folder, device="cpu", precision="auto")
    has_kernels = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert engine.precision == ("bf16" if has_kernels else "fp32")
    assert f"precision auto -> {engine.precision}" in caplog.text  # what it chose is logged


def test_auto_is_recorded_in_the_output_and_printed(folder, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(precision, "native_bf16", lambda _: True)
    out = tmp_path / "auto.parquet"
    assert cli_main(["embed", str(folder), str(folder.parent / "audio"), str(out), "--quiet"]) == 0
    assert read_index(out).metadata["precision"] == "bf16"
    assert "precision bf16 on the torch backend (auto: " in capsys.readouterr().out


def test_auto_stays_within_cosine_0999_of_fp32_on_htsat_tiny(monkeypatch):
    """The policy's promise, on the architecture the benchmarks measure: what auto picks here (bf16 with bf16 kernels,
    else fp32) stays within cosine 0.999 of fp32 on 10 s clips."""
    monkeypatch.setattr(precision, "native_bf16", REAL_NATIVE_BF16)
    torch.manual_seed(0)
    model = clapforge.create_model("htsat-tiny").eval()
    extractor = clapforge.create_feature_extractor("htsat-tiny")
    clips = [tone(10.0, f, seed=i) + 0.05 * np.random.default_rng(i).standard_normal(480000).astype(np.float32)
             for i, f in enumerate((220.0, 1500.0))]
    auto = load_engine((model, extractor), precision="auto").embed_audio(clips, 48000)
    fp32 = load_engine((model, extractor), precision="fp32").embed_audio(clips, 48000)
    cosine = torch.nn.functional.cosine_similarity(auto, fp32, dim=-1)
    assert cosine.min() >= 0.999

