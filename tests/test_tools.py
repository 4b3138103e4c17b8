"""`clapforge embed` / `search` / `classify`, window mode and the Python API, on test-tiny and made-up audio."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchcodec.encoders import AudioEncoder

import clapforge
from clapforge.cli import main as tools_main
from clapforge.data.shards import decode_audio
from clapforge.inference.compile import compile_audio_tower
from clapforge.inference.engine import CPU_CLIPS_PER_CALL, EmbeddingEngine
from clapforge.tools import api
from clapforge.tools.embed import TEST_SLEEP_ENV, embed_files
from clapforge.tools.embeddings_file import read_index
from conftest import dynamo_warnings, make_tokenizer, randomize_

ROOT = Path(__file__).resolve().parents[1]
READABLE = ["a.wav", "b.flac", "long.flac", "sub/c.ogg", "sub/d.mp3", "sub/deep/e.wav"]
UNREADABLE = {"corrupt.wav": "could not be decoded", "empty.flac": "empty"}
# Small parts and batches so that a 8-input folder spans 4 parts: resuming and rank splitting have something to do.
PARTS = ["--part-size", "2", "--batch-size", "2"]
# Subprocesses do not see conftest's "auto as on AVX2": those whose numbers are compared ask for fp32.
FP32 = ["--precision", "fp32"]


def _cli_module() -> str:
    return "clapforge"


def _write(path: Path, audio: np.ndarray, sr: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    AudioEncoder(torch.from_numpy(np.atleast_2d(audio).astype(np.float32)), sample_rate=sr).to_file(str(path))


def _tones(seconds: float, sr: int, channels: int, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return np.stack([0.3 * np.sin(2 * np.pi * freq * (c + 1) * t) + 0.02 * rng.standard_normal(t.shape)
                     for c in range(channels)])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    model_dir = root / "model"
    torch.manual_seed(0)
    clapforge.LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), make_tokenizer()).save_pretrained(
        model_dir)
    randomize_(clapforge.create_model("test-tiny"), seed=1, scale=0.2).save_pretrained(model_dir)
    audio = root / "audio"
    _write(audio / "a.wav", _tones(3, 96000, 6, 300, 0), 96000)  # 6 channels, 96 kHz
    _write(audio / "b.flac", _tones(0.1, 8000, 1, 500, 1), 8000)  # 0.1 s
    _write(audio / "sub/c.ogg", _tones(12, 44100, 2, 700, 2), 44100)  # stereo, longer than a clip
    _write(audio / "sub/d.mp3", _tones(5, 22050, 1, 900, 3), 22050)
    _write(audio / "sub/deep/e.wav", _tones(1, 16000, 2, 1100, 4), 16000)
    # 10 minutes, mono 8 kHz: a pure tone keeps the FLAC small.
    _write(audio / "long.flac", 0.3 * np.sin(2 * np.pi * 200 * np.arange(600 * 8000) / 8000), 8000)
    (audio / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x07" * 64)
    (audio / "empty.flac").write_bytes(b"")
    (audio / "notes.txt").write_text("not audio, not scanned")
    return root


@pytest.fixture(scope="module")
def reference(work):
    """An uninterrupted single-process run with DataLoader workers: the output every other run must reproduce."""
    out = work / "reference.parquet"
    report = embed_files(work / "model", work / "audio", out, batch_size=2, part_size=2, num_workers=2,
                         progress=False)
    return out, report


def _env(work: Path, **extra: str) -> dict:
    env = dict(os.environ, HF_HOME=str(work / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))
    env.update(extra)
    return env


def _same_index(a: Path, b: Path) -> None:
    left, right = read_index(a), read_index(b)
    assert left.keys == right.keys
    # The same batches, but computed in other processes with other thread counts (DataLoader workers run one thread,
    # each accelerate rank its share): matrix products may then split and sum rows in another order (MKL's AVX2 code
    # path does; its AVX-512 one does not), so the embeddings agree to rounding, not bit for bit. They are unit
    # vectors and test-tiny's sums have <= ~1e3 terms: ~sqrt(n) * 6e-8 ~ 2e-6. A part reused for the wrong files, or
    # a clip embedded twice or from the wrong samples, moves them by as much as two clips' embeddings differ.
    torch.testing.assert_close(left.embeddings, right.embeddings, rtol=0, atol=1e-5)
    assert torch.equal(left.durations, right.durations)
    assert left.metadata == right.metadata
    assert json.loads(Path(f"{a}.errors.json").read_text()) == json.loads(Path(f"{b}.errors.json").read_text())


def test_embed_folder_mixed_formats(work, reference):
    out, report = reference
    index = read_index(out)
    assert index.keys == READABLE  # sorted relative paths; notes.txt is not audio
    assert {e["key"]: e["reason"] for e in report.errors}.keys() == UNREADABLE.keys()
    for error in report.errors:
        assert UNREADABLE[error["key"]] in error["reason"]
    assert json.loads(Path(f"{out}.errors.json").read_text()) == report.errors
    assert not Path(f"{out}.parts").exists()
    np.testing.assert_allclose(index.durations.numpy(), [3, 0.1, 600, 12, 5, 1], atol=2e-3)
    assert index.embeddings.shape == (6, 128)
    assert index.metadata["model"] == str((work / "model").resolve())

    # Equal to the model on the processor's features of the decoded file (the 6-channel one and the 10-minute one).
    model, processor = api.load_model(work / "model")
    for key in ("a.wav", "long.flac"):
        features = processor(audio=decode_audio(work / "audio" / key), sampling_rate=48000)
        with torch.no_grad():
            expected = model.get_audio_embeds(features["input_features"], features["is_longer"])[0]
        torch.testing.assert_close(index.embeddings[index.keys.index(key)], expected, atol=1e-5, rtol=1e-5)

    # The same run to safetensors holds the same numbers; a rerun of a finished output does nothing.
    st = work / "reference.safetensors"
    embed_files(work / "model", work / "audio", st, batch_size=2, part_size=2, progress=False)
    assert read_index(st).keys == index.keys
    assert torch.equal(read_index(st).embeddings, index.embeddings)
    again = embed_files(work / "model", work / "audio", out, batch_size=2, part_size=2, progress=False)
    assert again.up_to_date and again.computed == 0 and again.embedded == 6


def test_embed_killed_then_resumed_matches_uninterrupted(work, reference):
    out = work / "killed.parquet"
    parts = Path(f"{out}.parts")
    cmd = [sys.executable, "-m", _cli_module(), "embed", str(work / "model"), str(work / "audio"), str(out),
           *PARTS, *FP32, "--num-workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(work, **{TEST_SLEEP_ENV: "30"}), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (parts / "part-00000.parquet").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no part file appeared"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its DataLoader worker
        proc.wait()
    assert not out.exists()
    assert sorted(p.name for p in parts.glob("part-*.parquet")) == ["part-00000.parquet"]

    report = embed_files(work / "model", work / "audio", out, batch_size=2, part_size=2, progress=False)
    assert report.computed == 6  # 8 inputs, the first part's 2 reused
    _same_index(out, reference[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_embed_accelerate_two_processes_matches_single(work, reference):
    out = work / "two.parquet"
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port",
           str(_free_port()), "-m", _cli_module(), "embed", str(work / "model"), str(work / "audio"), str(out),
           *PARTS, *FP32, "--num-workers", "0", "--quiet"]
    result = subprocess.run(cmd, env=_env(work, ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote" in result.stdout and result.stdout.count("wrote") == 1  # rank 0 reports, once
    _same_index(out, reference[0])


def _direct_text(work: Path, text: str) -> torch.Tensor:
    model, processor = api.load_model(work / "model")
    tokens = processor(text=[text])
    with torch.no_grad():
        return model.get_text_embeds(tokens["input_ids"], tokens["attention_mask"])[0]


def _table(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()[2:]]


def test_search_text_and_audio_against_direct_computation(work, reference, capsys):
    index = read_index(reference[0])
    query = "a dog barks in the rain"
    scores = index.embeddings @ _direct_text(work, query)
    order = scores.argsort(descending=True).tolist()[:4]
    capsys.readouterr()
    assert tools_main(["search", str(reference[0]), query, "--top-k", "4"]) == 0  # the index names its model
    rows = _table(capsys.readouterr().out)
    assert [row[2] for row in rows] == [index.keys[i] for i in order]
    assert [float(row[1]) for row in rows] == pytest.approx([float(scores[i]) for i in order], abs=1e-4)

    found = api.search(reference[0], audio=work / "audio" / "sub/d.mp3", top_k=len(index))
    assert found[0]["key"] == "sub/d.mp3" and found[0]["score"] == pytest.approx(1.0, abs=1e-5)
    audio_scores = index.embeddings @ index.embeddings[index.keys.index("sub/d.mp3")]
    assert [r["key"] for r in found] == [index.keys[i] for i in audio_scores.argsort(descending=True).tolist()]
    assert tools_main(["search", str(reference[0]), "--audio", str(work / "audio" / "b.flac"), "--top-k", "1"]) == 0
    assert _table(capsys.readouterr().out)[0][2] == "b.flac"


def test_classify_against_direct_computation(work, capsys):
    labels = ["dog", "rain", "siren"]
    files = [work / "audio" / "a.wav", work / "audio" / "sub/d.mp3"]
    model, processor = api.load_model(work / "model")
    features = processor(audio=[decode_audio(f) for f in files], sampling_rate=48000)
    with torch.no_grad():
        audio = model.get_audio_embeds(features["input_features"], features["is_longer"])
        tokens = processor(text=[f"This is a sound of {label}." for label in labels])
        text = model.get_text_embeds(tokens["input_ids"], tokens["attention_mask"])
        expected = (model.logit_scale_a.exp() * audio @ text.T).softmax(-1)
    assert expected.max() - expected.min() > 0.05  # a model whose answer depends on the label

    torch.testing.assert_close(api.classify(files, labels, work / "model"), expected, atol=1e-5, rtol=1e-4)
    capsys.readouterr()
    code = tools_main(["classify", str(work / "model"), *map(str, files), str(work / "audio" / "empty.flac"),
                       "--labels", ",".join(labels)])
    assert code == 0
    out = capsys.readouterr().out
    rows = _table(out.split("\n1 file(s) could not be read")[0])
    assert [Path(r[0]).name for r in rows] == ["a.wav", "d.mp3"]
    assert [[float(v) for v in r[2:]] for r in rows] == [pytest.approx(p, abs=1e-4) for p in expected.tolist()]
    assert [r[1] for r in rows] == [labels[i] for i in expected.argmax(-1).tolist()]
    assert "empty.flac" in out and "is empty" in out


def test_window_mode_finds_the_matching_window(work, reference, capsys):
    sr = 48000
    rng = np.random.default_rng(7)
    t = np.arange(10 * sr) / sr
    chirp = 0.4 * np.sign(np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 2000 * t)
    segments = [0.4 * np.sin(2 * np.pi * 250 * t), 0.3 * rng.standard_normal(t.shape).clip(-1, 1), chirp,
                0.2 * np.sin(2 * np.pi * 60 * t)]
    long = np.concatenate(segments + [segments[0][: 4 * sr]]).astype(np.float32)  # 44 s: 4 windows and 4 s
    folder = work / "segments"
    _write(folder / "story.wav", long, sr)
    _write(folder / "other.flac", segments[3][: 3 * sr], sr)
    _write(work / "query.wav", segments[2], sr)  # exactly the third window's samples
    out = work / "windows.safetensors"
    report = embed_files(work / "model", folder, out, window=True, batch_size=3, progress=False)
    assert report.embedded == 2
    index = read_index(out)
    story = index.keys.index("story.wav")
    picked = index.window_rows == story
    assert index.window_bounds[picked].tolist() == [[0, 10], [10, 20], [20, 30], [30, 40], [40, 44]]

    # Each window's embedding is the model's embedding of that slice as a clip; the whole-file one is still there.
    model, processor = api.load_model(work / "model")
    decoded = decode_audio(folder / "story.wav")
    slices = [decoded[s * sr : (s + 10) * sr] for s in range(0, 44, 10)]
    features = processor(audio=slices, sampling_rate=sr)
    with torch.no_grad():
        direct = model.get_audio_embeds(features["input_features"], features["is_longer"])
    torch.testing.assert_close(index.window_embeddings[picked], direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(index.embeddings[story], api.embed_audio(folder / "story.wav", work / "model")[0],
                               atol=1e-5, rtol=1e-5)

    results = api.search(out, audio=work / "query.wav", windows=True)
    assert results[0]["key"] == "story.wav" and (results[0]["start"], results[0]["end"]) == (20, 30)
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-5)
    # A text query: the reported window is the best-scoring window of that file, by direct computation.
    text = _direct_text(work, "a siren wails in the distance")
    best = int((direct @ text).argmax())
    capsys.readouterr()
    assert tools_main(["search", str(out), "a siren wails in the distance", "--windows"]) == 0
    row = next(r for r in _table(capsys.readouterr().out) if r[2] == "story.wav")
    assert (row[3], row[4]) == (f"0:{10 * best:05.2f}", f"0:{min(10 * best + 10, 44):05.2f}")
    assert float(row[1]) == pytest.approx(float(direct[best] @ text), abs=1e-4)
    with pytest.raises(ValueError, match="no windows"):
        api.search(reference[0], text="rain", windows=True)


def test_python_api(work):
    model_dir = work / "model"
    loaded = api.load_model(model_dir)
    assert api.load_model(str(model_dir)) is loaded  # loaded once, cached
    sr = 16000
    clips = [_tones(2, sr, 1, 440, 9)[0].astype(np.float32), _tones(1, sr, 2, 660, 10).astype(np.float32)]
    features = loaded[1](audio=clips, sampling_rate=sr)
    with torch.no_grad():
        expected = loaded[0].get_audio_embeds(features["input_features"], features["is_longer"])
    torch.testing.assert_close(clapforge.tools.api.embed_audio(clips, model=model_dir, sampling_rate=sr), expected)
    torch.testing.assert_close(api.embed_audio(clips, model=loaded, sampling_rate=sr, batch_size=1), expected,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sampling_rate"):
        api.embed_audio(clips, model=model_dir)
    mixed = api.embed_audio([work / "audio" / "b.flac", clips[0]], model=model_dir, sampling_rate=sr)
    torch.testing.assert_close(mixed[1], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[0], api.embed_audio(str(work / "audio" / "b.flac"), model=model_dir)[0])
    texts = ["a dog barks in the rain", "birds sing at dawn"]
    direct = torch.stack([_direct_text(work, t) for t in texts])
    torch.testing.assert_close(api.embed_text(texts, model=model_dir), direct, atol=1e-5, rtol=1e-5)
    assert api.embed_text("birds sing at dawn", model=loaded).shape == (1, 128)


def test_embed_list_file_and_dataset_source(work, reference):
    import datasets

    listing = work / "files.txt"
    listing.write_text("# two files and a missing one\naudio/sub/d.mp3\naudio/b.flac\naudio/missing.wav\n")
    out = work / "listed.parquet"
    report = embed_files(work / "model", listing, out, progress=False)
    index = read_index(out)
    assert index.keys == ["audio/b.flac", "audio/sub/d.mp3"]
    assert [e["key"] for e in report.errors] == ["audio/missing.wav"] and "does not exist" in report.errors[0]["reason"]
    # Each test declares the reference it needs: under xdist, the test that also writes the safetensors copy may
    # run in another worker.
    reference = read_index(reference[0])
    for key in index.keys:
        torch.testing.assert_close(index.embeddings[index.keys.index(key)],
                                   reference.embeddings[reference.keys.index(key.removeprefix("audio/"))])

    rows = {"audio": [str(work / "audio" / "sub/d.mp3"), str(work / "audio" / "b.flac")], "name": ["d", "b"]}
    parquet = work / "rows.parquet"
    ds = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())
    ds.with_format("arrow").map(datasets.table.embed_table_storage, batched=True).to_parquet(str(parquet))
    out = work / "rows.safetensors"
    embed_files(work / "model", parquet, out, dataset=True, key_column="name", progress=False)
    index = read_index(out)
    assert index.keys == ["d", "b"]  # row order
    torch.testing.assert_close(index.embeddings, reference.embeddings[[reference.keys.index("sub/d.mp3"),
                                                                       reference.keys.index("b.flac")]])


def test_embed_bf16_agrees_with_fp32_and_never_mixes_with_its_parts(work, reference, tmp_path):
    out, _ = reference
    fp32 = read_index(out)
    bf16_out = tmp_path / "bf16.parquet"
    embed_files(work / "model", work / "audio", bf16_out, batch_size=2, part_size=2, progress=False,
                precision="bf16")
    bf16 = read_index(bf16_out)
    assert bf16.keys == fp32.keys and bf16.metadata["precision"] == "bf16" and fp32.metadata["precision"] == "fp32"
    cosine = torch.nn.functional.cosine_similarity(bf16.embeddings.float(), fp32.embeddings.float(), dim=-1)
    print(f"bf16 vs fp32 cosine per file: {cosine.tolist()}")
    assert cosine.min() > 0.99 and not torch.equal(bf16.embeddings, fp32.embeddings)  # close, and really bf16
    # A finished fp32 output is not "up to date" for a bf16 request: it is recomputed, not silently reused.
    again = embed_files(work / "model", work / "audio", bf16_out, batch_size=2, part_size=2, progress=False)
    assert not again.up_to_date and read_index(bf16_out).metadata["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision must be one of .*got 'fp16'"):
        embed_files(work / "model", work / "audio", bf16_out, precision="fp16", progress=False)


def test_cpu_chunks_give_the_embeddings_of_one_call(work):
    """Six clips run as chunks of CPU_CLIPS_PER_CALL (4 + 2): the same embeddings as one six-clip call."""
    model, processor = api.load_model(work / "model")
    clips = [_tones(1 + i, 48000, 1, 300 + 100 * i, i)[0].astype(np.float32) for i in range(6)]
    features = processor(audio=clips, sampling_rate=48000)
    assert len(clips) > CPU_CLIPS_PER_CALL
    with torch.inference_mode():
        whole = model.get_audio_embeds(features["input_features"], features["is_longer"])
    chunked = EmbeddingEngine.wrap(model, processor, "fp32").embed_features(features["input_features"],
                                                                            features["is_longer"])
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # torch.compile builds C++ kernels
def test_embed_compile_matches_eager_with_one_graph(work, reference, capsys):
    """`clapforge embed --compile`: the eager embeddings, and no recompile for short chunks (they are padded)."""
    out, _ = reference
    compiled_out = out.with_name("compiled.parquet")
    torch._dynamo.reset()  # graphs compiled by other tests in this worker would count as earlier compiles
    # Batches of 6 files: the first holds 4 readable ones (one chunk), the second 2 (a chunk padded to 4).
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert tools_main(["embed", str(work / "model"), str(work / "audio"), str(compiled_out), "--compile",
                           "--batch-size", "6", "--part-size", "8", "--quiet"]) == 0
    eager, compiled = read_index(out), read_index(compiled_out)
    assert compiled.keys == eager.keys
    torch.testing.assert_close(compiled.embeddings, eager.embeddings, atol=1e-4, rtol=1e-4)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.slow  # torch.compile builds C++ kernels
def test_compiled_fused_tower_matches_eager_on_mixed_lengths(tiny_fused_model):
    """A fused model compiles too (its fusion branch depends on the data, so it runs eagerly between graphs) and
    matches eager on long and short clips, without dynamo warning about graph breaks."""
    extractor = clapforge.create_feature_extractor("test-tiny", tiny_fused_model.config)
    rng = np.random.default_rng(0)
    batches = [[3, 12, 4, 15, 2], [12, 14, 16, 18, 11], [2, 3, 4, 5, 6]]  # seconds: mixed, all long, all short
    torch._dynamo.reset()
    eager_engine = EmbeddingEngine.wrap(tiny_fused_model, extractor, "fp32")
    compiled_engine = EmbeddingEngine.wrap(tiny_fused_model, extractor, "fp32", compile=True)
    with dynamo_warnings() as warnings:
        for seconds in batches:
            clips = [0.1 * rng.standard_normal(48000 * s).astype(np.float32) for s in seconds]
            features = extractor(clips, sampling_rate=48000)
            assert features["is_longer"].view(-1).tolist() == [s > 10 for s in seconds]
            eager = eager_engine.embed_features(features["input_features"], features["is_longer"])
            fast = compiled_engine.embed_features(features["input_features"], features["is_longer"])
            torch.testing.assert_close(fast, eager, atol=1e-5, rtol=1e-5)
    assert not [message for message in warnings if "Graph break" in message]


def test_compile_without_a_cpp_compiler_says_so(work, monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("no-such-c++-compiler",))
    model, _ = api.load_model(work / "model")
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler"):
        compile_audio_tower(model)
