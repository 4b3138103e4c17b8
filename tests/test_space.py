"""The Gradio Space (`spaces_demo/app.py`) launched on 127.0.0.1 and driven with gradio_client, and `clapforge push`.

The app loads a saved test-tiny model through `AutoModel`/`AutoProcessor` with remote code, as a Space does; every
answer is checked against the in-memory clapforge model called directly on the same decoded audio. Clips come in
several formats, rates and channel counts. The push test runs `clapforge push` against the local Hub server of
`hub_server.py` and loads the result back through that server.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported

import httpx
import numpy as np
import pytest
import soundfile
import torch
from huggingface_hub import metadata_load

import clapforge
from clapforge.data.shards import decode_audio
from conftest import make_tokenizer, randomize_, tone
from hub_server import HubServer, hub_env

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "spaces_demo"
PROMPT = "This is a sound of {label}."
LABELS = ["a dog barking", "a siren", "rain", "a bell"]
CAPTIONS = ["a dog barks twice", "a police siren wails", "rain falls on a roof", "a bell rings"]
MAX_SECONDS = 20.0  # the test app's clip limit (the app's default, 120 s, would need a 23 MB upload to exceed)


def load_app_module():
    """spaces_demo/app.py as a module (it is not a package: on a Space it is the top-level script)."""
    spec = importlib.util.spec_from_file_location("clap_space_app", APP_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_space_prompt_is_clapforges_default():
    from clapforge.prompts import DEFAULT_PROMPT

    assert load_app_module().DEFAULT_PROMPT == DEFAULT_PROMPT


def build_model_folder(folder: Path, logit_scale: float | None = None) -> tuple[torch.nn.Module, object]:
    """A randomised test-tiny model with its processor, saved the way a Hub repo is; returns both, in memory.

    `logit_scale` (the inverse temperature) spreads the near-uniform probabilities of a random model apart.
    """
    model = randomize_(clapforge.create_model("test-tiny"))
    if logit_scale is not None:
        with torch.no_grad():
            model.logit_scale_a.fill_(math.log(logit_scale))
    processor = clapforge.LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), make_tokenizer())
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(app, demo, **overrides) -> str:
    kwargs = {**app.launch_kwargs(), **overrides}
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **kwargs
    )
    return url


def write_clips(folder: Path) -> dict[str, Path]:
    """Clips in several formats, rates and channel counts (all short)."""
    folder.mkdir(parents=True, exist_ok=True)
    stereo = np.stack([tone(2.0, 440, sr=44100), tone(2.0, 660, sr=44100, seed=1)], axis=1)  # (T, 2)
    clips = {
        "stereo_44k.wav": (stereo, 44100, "PCM_16"),
        "mono_16k.flac": (tone(3.0, 1200, sr=16000, seed=2), 16000, "PCM_16"),
        "stereo_22k.ogg": (stereo[::2], 22050, "VORBIS"),
        "mono_48k.mp3": (tone(1.5, 300, seed=3), 48000, "MPEG_LAYER_III"),
    }
    paths = {}
    for name, (audio, rate, subtype) in clips.items():
        paths[name] = folder / name
        soundfile.write(paths[name], audio, rate, subtype=subtype)
    return paths


def expected_probabilities(model, processor, path: Path, labels: list[str]) -> dict[str, float]:
    inputs = processor(text=[PROMPT.format(label=x) for x in labels], audio=[decode_audio(path)], sampling_rate=48000)
    with torch.no_grad():
        probabilities = model(**inputs).logits_per_audio.softmax(dim=-1)[0]
    return dict(zip(labels, probabilities.tolist(), strict=True))


def expected_similarities(model, processor, paths: list[Path], texts: list[str]) -> torch.Tensor:
    """(clips, texts) cosine similarities."""
    inputs = processor(text=texts, audio=[decode_audio(p) for p in paths], sampling_rate=48000)
    with torch.no_grad():
        output = model(**inputs)
    return output.audio_embeds @ output.text_embeds.T


def label_scores(answer: dict) -> dict[str, float]:
    """A gr.Label value as the client returns it -> {label: confidence}."""
    return {c["label"]: c["confidence"] for c in answer["confidences"]}


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """(app module, url, model, processor, clips): the app launched once for the module."""
    from gradio_client import Client

    tmp = tmp_path_factory.mktemp("space")
    model, processor = build_model_folder(tmp / "model")
    app = load_app_module()
    app.MAX_SECONDS = MAX_SECONDS
    demo = app.build_demo(str(tmp / "model"))
    url = launch(app, demo, max_file_size="1mb")
    try:
        Client(url, verbose=False)  # the app answers before any test starts
        yield app, url, model, processor, write_clips(tmp / "clips")
    finally:
        demo.close()


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def audio_only_folder(folder: Path) -> Path:
    """What `clapforge convert x.pt out/ --no-tokenizer` writes: model and feature extractor, no tokenizer files."""
    randomize_(clapforge.create_model("test-tiny")).save_pretrained(folder)
    clapforge.create_feature_extractor("test-tiny").save_pretrained(folder)
    return folder


def assert_names_the_folder_and_the_fix(message: str, folder: Path) -> None:
    assert "has no tokenizer" in message and f"MODEL={folder}" in message, message
    assert "--tokenizer roberta-base" in message and "save_pretrained" in message, message


def test_a_model_folder_without_a_tokenizer_is_refused_at_start(tmp_path):
    """Here clapforge's processor class is registered, so transformers tries (and fails) to build a tokenizer."""
    folder = audio_only_folder(tmp_path / "audio-only")
    with pytest.raises(ValueError, match="has no tokenizer") as error:
        load_app_module().build_demo(str(folder))
    assert_names_the_folder_and_the_fix(str(error.value), folder)


SPACE_WITHOUT_CLAPFORGE = """
import importlib.util, sys
sys.modules["clapforge"] = None  # as on a Space: AutoProcessor returns the bare feature extractor
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
try:
    app.build_demo(sys.argv[2])
except ValueError as error:
    print(error)
"""


def test_a_model_folder_without_a_tokenizer_is_refused_where_clapforge_is_absent(tmp_path):
    folder = audio_only_folder(tmp_path / "audio-only")
    done = run(SPACE_WITHOUT_CLAPFORGE, str(APP_DIR / "app.py"), str(folder), env=dict(os.environ))
    assert_names_the_folder_and_the_fix(done.stdout, folder)


def test_classification_matches_the_model_for_every_format(space):
    from gradio_client import handle_file

    app, url, model, processor, clips = space
    c = client(url)
    for name, path in clips.items():
        # comma-separated labels, with a blank entry and a repeat that the app drops
        labels = ", ".join(LABELS) + ", , rain"
        answer, prompts = c.predict(handle_file(str(path)), labels, PROMPT, api_name="/classify")
        expected = expected_probabilities(model, processor, path, LABELS)
        scores = label_scores(answer)
        assert scores.keys() == expected.keys(), name
        np.testing.assert_allclose([scores[x] for x in LABELS], [expected[x] for x in LABELS], atol=1e-5, err_msg=name)
        assert answer["label"] == max(expected, key=expected.get), name
        assert prompts.splitlines() == [PROMPT.format(label=x) for x in LABELS]

    # one label per line and another prompt
    path = clips["mono_16k.flac"]
    answer, prompts = c.predict(
        handle_file(str(path)), "rain\n a bell \n", "the sound of {label}", api_name="/classify"
    )
    assert prompts.splitlines() == ["the sound of rain", "the sound of a bell"]
    assert set(label_scores(answer)) == {"rain", "a bell"}


def test_search_ranks_the_gallery_like_the_model(space):
    from gradio_client import handle_file

    app, url, model, processor, clips = space
    uploads = [clips["stereo_44k.wav"], clips["mono_48k.mp3"]]
    examples = [Path(p) for p in app.example_clips()]
    assert len(examples) >= 4
    query = "a dog barking"
    table, *players = client(url).predict(query, [handle_file(str(p)) for p in uploads], True, api_name="/search")

    gallery = uploads + examples
    similarity = expected_similarities(model, processor, gallery, [query])[:, 0]
    order = similarity.argsort(descending=True).tolist()
    assert [row[1] for row in table["data"]] == [gallery[i].name for i in order]
    assert [row[0] for row in table["data"]] == list(range(1, len(gallery) + 1))
    np.testing.assert_allclose([row[2] for row in table["data"]], similarity[order].numpy(), atol=1e-4)
    # a player for each of the top clips, holding that clip
    assert len(players) == app.TOP_K
    for rank, (player, i) in enumerate(zip(players, order, strict=False)):
        assert player["label"].startswith(f"{rank + 1}. {gallery[i].name}")
        assert Path(player["value"]).read_bytes() == gallery[i].read_bytes()

    # the built-in examples alone
    table, *_ = client(url).predict("rain", [], True, api_name="/search")
    assert sorted(row[1] for row in table["data"]) == sorted(p.name for p in examples)


def test_audio_to_text_ranks_captions_like_the_model(space):
    from gradio_client import handle_file

    app, url, model, processor, clips = space
    path = clips["stereo_22k.ogg"]
    table, probabilities = client(url).predict(handle_file(str(path)), "\n".join(CAPTIONS), api_name="/rank")
    similarity = expected_similarities(model, processor, [path], CAPTIONS)[0]
    order = similarity.argsort(descending=True).tolist()
    assert [row[1] for row in table["data"]] == [CAPTIONS[i] for i in order]
    np.testing.assert_allclose([row[2] for row in table["data"]], similarity[order].numpy(), atol=1e-4)
    scale = model.logit_scale_a.exp().item()
    expected = (scale * similarity).softmax(dim=-1)
    scores = label_scores(probabilities)
    np.testing.assert_allclose([scores[c] for c in CAPTIONS], expected.numpy(), atol=1e-5)


def test_bad_input_gets_a_message_not_a_crash(space, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    app, url, model, processor, clips = space
    c = client(url)
    long_clip = tmp_path / "long.flac"
    soundfile.write(long_clip, tone(MAX_SECONDS + 5, sr=8000), 8000)  # ~40 KB: under the upload limit
    with pytest.raises(AppError, match=r"long\.flac is 25 s long; this demo accepts clips up to 20 s"):
        c.predict(handle_file(str(long_clip)), "rain", PROMPT, api_name="/classify")
    with pytest.raises(AppError, match="up to 20 s"):
        c.predict(handle_file(str(long_clip)), "rain", api_name="/rank")
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio at all")
    with pytest.raises(AppError, match=r"Could not decode notes\.wav as audio"):
        c.predict(handle_file(str(not_audio)), "rain", PROMPT, api_name="/classify")
    with pytest.raises(AppError, match="Type at least one label"):
        c.predict(handle_file(str(clips["mono_16k.flac"])), " , ,", PROMPT, api_name="/classify")
    with pytest.raises(AppError, match=r"must contain \{label\}"):
        c.predict(handle_file(str(clips["mono_16k.flac"])), "rain", "no placeholder", api_name="/classify")

    big = tmp_path / "big.wav"  # 1.5 MB against the fixture's 1 MB upload limit
    soundfile.write(big, tone(15.0, sr=48000), 48000, subtype="PCM_16")
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
        c.predict(handle_file(str(big)), "rain", PROMPT, api_name="/classify")  # the client reads the app's limit
    with big.open("rb") as f:  # and the server refuses it from any other client
        response = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.wav", f, "audio/wav")}, timeout=30)
    assert response.status_code == 413 and "maximum allowed size of 1048576 bytes" in response.text

    # and the app still answers
    answer, _ = c.predict(handle_file(str(clips["mono_16k.flac"])), "rain, wind", PROMPT, api_name="/classify")
    assert set(label_scores(answer)) == {"rain", "wind"}


def run_load(
    url: str, path: Path, labels: list[str], expected: dict[str, float], clients: int = 20, requests: int = 5
) -> dict[str, float]:
    """`clients` threads, each with its own Client, send `requests` classifications one after the other.

    Returns latency percentiles (s) and the wall time; raises AssertionError on any wrong or failed answer.
    """
    from gradio_client import Client, handle_file

    start = threading.Barrier(clients)
    text = "\n".join(labels)

    def user(_: int) -> list[float]:
        c = Client(url, verbose=False)
        start.wait()
        latencies = []
        for _ in range(requests):
            t0 = time.perf_counter()
            answer, _ = c.predict(handle_file(str(path)), text, PROMPT, api_name="/classify")
            latencies.append(time.perf_counter() - t0)
            scores = label_scores(answer)
            np.testing.assert_allclose([scores[x] for x in labels], [expected[x] for x in labels], atol=1e-5)
        return latencies

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(x for user_latencies in pool.map(user, range(clients)) for x in user_latencies)
    wall = time.perf_counter() - t0
    assert len(latencies) == clients * requests
    return {
        "requests": len(latencies),
        "wall_s": wall,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[min(len(latencies) - 1, int(round(0.95 * len(latencies))) - 1)],
        "max_s": latencies[-1],
    }


def test_twenty_concurrent_clients_all_get_correct_answers(space):
    app, url, model, processor, clips = space
    path = clips["stereo_44k.wav"]
    stats = run_load(url, path, LABELS, expected_probabilities(model, processor, path, LABELS))
    print(f"\nload: {json.dumps({k: round(v, 3) for k, v in stats.items()})}")  # recorded by benchmarks/bench_space.py
    assert stats["requests"] == 100


# ---- clapforge push ---------------------------------------------------------------------------------------------

PUSH_SCRIPT = """
import sys
from clapforge import cli
sys.exit(cli.main(["push", *sys.argv[1:]]))
"""

PULL_SCRIPT = """
import sys
sys.modules["clapforge"] = None  # the Hub copy of the code must do
import numpy as np, torch
from transformers import AutoModel, AutoProcessor
clips_file, out, *texts = sys.argv[1:]
model = AutoModel.from_pretrained("tester/model", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("tester/model", trust_remote_code=True)
inputs = processor(text=texts, audio=list(np.load(clips_file).values()), sampling_rate=48000)
with torch.no_grad():
    output = model(**inputs)
torch.save({"audio": output.audio_embeds, "text": output.text_embeds, "module": type(model).__module__}, out)
"""


def run(script: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_push_uploads_the_model_and_a_space_pointing_at_it(tmp_path):
    from clapforge.hub import export_hub_folder

    model, processor = build_model_folder(tmp_path / "saved")
    folder = export_hub_folder(model, processor, tmp_path / "clap-tiny", metrics={"zero_shot_top1": 0.5})
    with HubServer(tmp_path / "hub") as hub:
        pushed = run(
            PUSH_SCRIPT, str(folder), "tester/model", "--space", "tester/space", env=hub_env(hub.url, tmp_path / "h1")
        )
        assert "model: " in pushed.stdout and "space: " in pushed.stdout

        clips = [tone(3.0, 440), tone(12.0, 880, seed=1)]
        texts = ["a dog barks in the rain", "a siren"]
        np.savez(tmp_path / "clips.npz", *clips)
        run(
            PULL_SCRIPT,
            str(tmp_path / "clips.npz"),
            str(tmp_path / "remote.pt"),
            *texts,
            env=hub_env(hub.url, tmp_path / "h2"),
        )
        remote = torch.load(tmp_path / "remote.pt")
        with torch.no_grad():
            local = model(**processor(text=texts, audio=clips, sampling_rate=48000))
        assert remote["module"].startswith("transformers_modules")
        torch.testing.assert_close(remote["audio"], local.audio_embeds, atol=0, rtol=0)
        torch.testing.assert_close(remote["text"], local.text_embeds, atol=0, rtol=0)
        assert {"config.json", "model.safetensors", "README.md"} <= hub.files("tester/model")

        space_files = hub.files("tester/space", "space")
        assert {"app.py", "requirements.txt", "README.md"} <= space_files
        assert {f"examples/{p.name}" for p in (APP_DIR / "examples").glob("*.flac")} <= space_files
        stored = hub.repo_dir("tester/space", "space")
        assert (stored / "files" / "app.py").read_bytes() == (APP_DIR / "app.py").read_bytes()
        card = metadata_load(stored / "files" / "README.md")
        assert card["sdk"] == "gradio" and card["app_file"] == "app.py" and card["models"] == ["tester/model"]
        assert card["sdk_version"] == metadata_load(APP_DIR / "README.md")["sdk_version"] == gradio_version()
        meta = json.loads((stored / "meta.json").read_text())
        assert meta["sdk"] == "gradio" and meta["variables"]["MODEL"]["value"] == "tester/model"
        assert hub.unknown == []


def gradio_version() -> str:
    import gradio

    return gradio.__version__


def test_search_tab_ranks_the_rows_of_a_table(tmp_path):
    """TABLE=OUT.lance: the search tab ranks the table's rows (exactly: 4 rows have no index) like
    `clapforge.search` on that table, plays the top files, and the Space's search defaults match clapforge's."""
    from gradio_client import Client

    from clapforge.tools import table_search as clap_search
    from clapforge.tools.embed import embed_files

    build_model_folder(tmp_path / "model")
    clips = write_clips(tmp_path / "library")
    out = tmp_path / "clips.lance"
    embed_files(tmp_path / "model", tmp_path / "library", out, batch_size=2, progress=False)
    app = load_app_module()
    assert (app.TABLE_NPROBES, app.TABLE_REFINE_FACTOR) == (clap_search.NPROBES, clap_search.REFINE_FACTOR)
    demo = app.build_demo(str(tmp_path / "model"), str(out))
    assert app.launch_kwargs(demo)["allowed_paths"][-1] == str(tmp_path / "library")
    url = launch(app, demo)
    try:
        query = "a dog barking"
        expected = clapforge.search(out, text=query, model=tmp_path / "model", top_k=len(clips), exact=True)
        table, *players = Client(url, verbose=False).predict(query, [], True, api_name="/search")
        assert [row[1] for row in table["data"]] == [r["key"] for r in expected]
        assert [row[0] for row in table["data"]] == list(range(1, len(clips) + 1))
        np.testing.assert_allclose([row[2] for row in table["data"]], [r["score"] for r in expected], atol=1e-4)
        shown = [p for p in players if p.get("value")]
        assert len(shown) == min(app.TOP_K, len(clips))
        for rank, (player, row) in enumerate(zip(shown, expected, strict=False)):
            assert player["label"].startswith(f"{rank + 1}. {row['key']}")
            assert Path(player["value"]).read_bytes() == clips[row["key"]].read_bytes()
    finally:
        demo.close()

    missing = tmp_path / "missing.lance"
    with pytest.raises(ValueError, match="missing.lance is not a clapforge table"):
        app.build_demo(str(tmp_path / "model"), str(missing))


def test_backend_onnx_serves_an_export_like_the_model(tmp_path):
    """BACKEND=onnx (PRECISION=fp32/int8): the Space runs `clapforge export`'s graphs in ONNX Runtime and answers as
    the PyTorch model does; wrong settings are refused at start, naming the fix."""
    from clapforge.export.onnx_folder import export_model

    model, processor = build_model_folder(tmp_path / "model", logit_scale=30.0)
    export_model(tmp_path / "model", tmp_path / "onnx", quantize="int8", log=lambda _: None)
    app = load_app_module()
    from clapforge.inference.onnx_backend import GRAPH_FILES, ONNX_DIR

    assert {key: f"{ONNX_DIR}/{name}" for key, name in GRAPH_FILES.items()} == app.ONNX_GRAPHS  # the Space's copy
    clips = write_clips(tmp_path / "clips")
    demo = app.ClapDemo(str(tmp_path / "onnx"), backend="onnx")
    for path in clips.values():
        scores, _ = demo.classify(str(path), ", ".join(LABELS), PROMPT)
        expected = expected_probabilities(model, processor, path, LABELS)
        np.testing.assert_allclose([scores[x] for x in LABELS], [expected[x] for x in LABELS], atol=1e-4)
    table, _ = demo.rank_captions(str(clips["mono_16k.flac"]), "\n".join(CAPTIONS))
    similarity = expected_similarities(model, processor, [clips["mono_16k.flac"]], CAPTIONS)[0]
    assert [row[1] for row in table] == [CAPTIONS[i] for i in similarity.argsort(descending=True).tolist()]
    int8 = app.ClapDemo(str(tmp_path / "onnx"), backend="onnx", precision="int8")
    int8_scores, _ = int8.classify(str(clips["mono_16k.flac"]), ", ".join(LABELS), PROMPT)
    assert max(int8_scores, key=int8_scores.get) in LABELS
    with pytest.raises(ValueError, match="clapforge export"):
        app.ClapDemo(str(tmp_path / "model"), backend="onnx")  # a model folder without onnx/
    with pytest.raises(ValueError, match="needs BACKEND=onnx"):
        app.ClapDemo(str(tmp_path / "model"), precision="int8")
    with pytest.raises(ValueError, match="BACKEND must be torch or onnx"):
        app.ClapDemo(str(tmp_path / "model"), backend="tensorflow")


def test_precision_bf16_runs_the_pytorch_towers_in_bf16(tmp_path):
    """PRECISION=bf16 (BACKEND=torch): the Space's embeddings are the model's under bfloat16 autocast, not fp32."""
    model, processor = build_model_folder(tmp_path / "model", logit_scale=30.0)
    app = load_app_module()
    clip = write_clips(tmp_path / "clips")["mono_16k.flac"]
    bf16, fp32 = app.ClapDemo(str(tmp_path / "model"), precision="bf16"), app.ClapDemo(str(tmp_path / "model"))
    audio = bf16.load_audio(str(clip))
    features = processor.feature_extractor([audio], sampling_rate=bf16.sampling_rate, return_tensors="pt")
    tokens = processor(text=CAPTIONS, return_tensors="pt")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected_audio = model.get_audio_embeds(features["input_features"], features.get("is_longer")).float()
        expected_text = model.get_text_embeds(tokens["input_ids"], tokens["attention_mask"]).float()
    torch.testing.assert_close(bf16.audio_embeds([audio]), expected_audio, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(bf16.text_embeds(CAPTIONS), expected_text, atol=1e-6, rtol=1e-5)
    assert (bf16.audio_embeds([audio]) - fp32.audio_embeds([audio])).abs().max() > 1e-4
