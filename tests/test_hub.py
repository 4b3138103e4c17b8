"""Publishing: the model card, the atomic Hub-ready export, and push/pull through a local server speaking the Hub API.

Clients of the local Hub run in subprocesses started with `hub_env` (HF_ENDPOINT, HF_TOKEN, HF_HUB_DISABLE_XET,
HF_HOME): huggingface_hub reads those once, at import, and this process imported it long ago.
"""

import json
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, metadata_load

import clapforge
from clapforge import LaionClapProcessor
from clapforge.hub import export_hub_folder, model_card, push_folder
from conftest import HUB_CODE_FILES, randomize_, tone
from hub_server import HubServer, hub_env

REPO = "tester/clap-tiny"
SPACE = "tester/clap-demo"
TEXTS = ["a dog barks in the rain", "a siren"]
RECIPE = {
    "preset": "test-tiny",
    "text_init": "sentence-transformers/all-MiniLM-L6-v2",
    "data": {"train": "synthetic:train", "validation": "synthetic:validation"},
    "optimizer": {"name": "adamw", "lr": 0.0001, "weight_decay": 0.2},
    "batch_size": 8,
    "steps": 300,
}
SCORES = {"zero_shot_top1": 0.8125, "t2a_R@1": 0.25, "t2a_R@10": 0.75, "a2t_mAP@10": 0.4375}
METRICS = {**SCORES, "n_clips": 16, "n_captions": 32, "chance/t2a_R@1": 0.0625, "chance/zero_shot_top1": 0.25}
CODE_FILES = HUB_CODE_FILES


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server


def make_processor(tokenizer) -> LaionClapProcessor:
    return LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), tokenizer)


def run_client(script: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def snapshot(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- the model card ---------------------------------------------------------------------------------------------


def test_model_card_parses_back_with_metrics_and_recipe(tmp_path):
    text = model_card(
        "clap-tiny", RECIPE, METRICS, dataset_name="clapforge synthetic", repo_id=REPO, base_model="roberta-base"
    )
    readme = tmp_path / "README.md"
    readme.write_text(text)

    metadata = metadata_load(readme)
    assert metadata["pipeline_tag"] == "zero-shot-audio-classification"
    assert metadata["library_name"] == "transformers"
    assert metadata["base_model"] == "roberta-base"
    assert {"clap", "audio", "zero-shot-audio-classification", "clapforge"} <= set(metadata["tags"])
    (index,) = metadata["model-index"]
    assert index["name"] == "clap-tiny"
    found = {}
    for result in index["results"]:
        assert result["dataset"]["name"] == "clapforge synthetic"
        for metric in result["metrics"]:
            found[metric["type"]] = (result["task"]["type"], metric["value"], metric["name"])
    assert {k: v[1] for k, v in found.items()} == SCORES  # chance levels and counts are context, not results
    assert found["zero_shot_top1"][0] == "zero-shot-audio-classification"
    assert found["zero_shot_top1"][2] == "Zero-shot top-1 accuracy"
    assert found["t2a_R@10"][0] == "audio-text-retrieval"
    assert found["a2t_mAP@10"][2] == "Audio-to-text mAP@10"

    card = ModelCard.load(readme)
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == SCORES
    recipe_block = re.search(r"```yaml\n(.*?)```", card.text, re.DOTALL)
    assert recipe_block is not None and yaml.safe_load(recipe_block.group(1)) == RECIPE
    assert f'AutoModel.from_pretrained("{REPO}", trust_remote_code=True)' in card.text
    # The usage section shows the three ways in, side by side.
    assert f'SentenceTransformer("{REPO}", trust_remote_code=True)' in card.text
    assert f'clapforge.embed_audio(["dog.wav", "rain.flac"], model="{REPO}")' in card.text
    assert "| Zero-shot audio classification | Zero-shot top-1 accuracy | 0.8125 | 0.2500 |" in card.text
    assert "| Audio-text retrieval | Audio-to-text mAP@10 | 0.4375 |  |" in card.text
    assert "(validation; 16 clips; 32 captions)" in card.text

    bare = ModelCard(model_card("clap-tiny"))
    assert bare.data.eval_results is None and "```yaml" not in bare.text


# ---- the Hub-ready folder ---------------------------------------------------------------------------------------


def test_export_hub_folder_writes_a_complete_repo(tiny_model, tokenizer, tmp_path):
    folder = export_hub_folder(tiny_model, make_processor(tokenizer), tmp_path / "clap-tiny", RECIPE, METRICS)
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md"} <= files
    assert files >= CODE_FILES, CODE_FILES - files
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModel"] == (
        "modeling_laion_clap.LaionClapModel"
    )
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_laion_clap.LaionClapProcessor"
    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == "clap-tiny"
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == SCORES
    assert "| audio encoder | laion_clap_htsat |" in card.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clap-tiny"]  # no temporary folder left


def test_export_replaces_an_existing_folder_only_when_complete(tiny_model, tokenizer, tmp_path, monkeypatch):
    processor = make_processor(tokenizer)
    folder = export_hub_folder(tiny_model, processor, tmp_path / "clap-tiny", RECIPE, METRICS)
    (folder / "stale.txt").write_text("from an earlier export")
    before = snapshot(folder)

    retrained = randomize_(clapforge.create_model("test-tiny"), seed=1)

    def fail_midway(directory, *args, **kwargs):
        (directory / "processor_config.json").write_text("{")  # a partial write, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(processor, "save_pretrained", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        export_hub_folder(retrained, processor, folder, RECIPE, {"zero_shot_top1": 0.9})
    assert snapshot(folder) == before, "a failed export changed the existing folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clap-tiny"]

    monkeypatch.undo()
    export_hub_folder(retrained, processor, folder, RECIPE, {"zero_shot_top1": 0.9})
    after = snapshot(folder)
    assert "stale.txt" not in after
    assert after["model.safetensors"] != before["model.safetensors"]
    assert ModelCard.load(folder / "README.md").data.eval_results[0].metric_value == 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clap-tiny"]


def test_push_refuses_folders_that_are_not_repos(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="no config.json"):
        push_folder(tmp_path, REPO, endpoint="http://127.0.0.1:9")  # fails before any request
    space = tmp_path / "space"
    space.mkdir()
    (space / "README.md").write_text("---\ntitle: demo\n---\n")
    with pytest.raises(ValueError, match="sdk"):
        push_folder(space, SPACE, repo_type="space", endpoint="http://127.0.0.1:9")
    with pytest.raises(FileNotFoundError):
        push_folder(tmp_path / "missing", REPO)


# ---- push and pull through the local Hub ------------------------------------------------------------------------

PUSH_SCRIPT = """
import json, sys
from clapforge.hub import push_folder
folder, stale_folder, space = sys.argv[1:4]
urls = [
    push_folder(stale_folder, "tester/clap-tiny", commit_message="first upload"),
    push_folder(folder, "tester/clap-tiny"),
    push_folder(space, "tester/clap-demo", repo_type="space", space_variables={"MODEL": "tester/clap-tiny"}),
]
print(json.dumps(urls))
"""

PULL_SCRIPT = """
import json, sys
sys.modules["clapforge"] = None  # the Hub copy of the code must do: `import clapforge` raises from here on
import numpy as np, torch
from huggingface_hub import HfApi, model_info
from transformers import AutoModel, AutoProcessor
clips_file, out = sys.argv[1:3]
texts = sys.argv[3:]
model = AutoModel.from_pretrained("tester/clap-tiny", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("tester/clap-tiny", trust_remote_code=True)
inputs = processor(text=texts, audio=list(np.load(clips_file).values()), sampling_rate=48000)
with torch.no_grad():
    output = model(**inputs)
api = HfApi()
info = model_info("tester/clap-tiny")
torch.save({"audio": output.audio_embeds, "text": output.text_embeds, "module": type(model).__module__}, out)
print(json.dumps({
    "model_files": api.list_repo_files("tester/clap-tiny"),
    "space_files": api.list_repo_files("tester/clap-demo", repo_type="space"),
    "eval": {r.metric_type: r.metric_value for r in info.card_data.eval_results},
    "sha": info.sha,
}))
"""

SPACE_README = """---
title: CLAP demo
sdk: gradio
app_file: app.py
models:
- tester/clap-tiny
---

# CLAP demo
"""


def test_push_then_load_from_the_hub_gives_the_same_embeddings(hub, tiny_model, tokenizer, tmp_path):
    processor = make_processor(tokenizer)
    folder = export_hub_folder(tiny_model, processor, tmp_path / "clap-tiny", RECIPE, METRICS, repo_id=REPO)
    stale_folder = tmp_path / "earlier"
    shutil.copytree(folder, stale_folder)
    (stale_folder / "modeling_obsolete.py").write_text("# code an earlier version shipped\n")
    (stale_folder / "extra.tmp-123").write_text("ignored by the push")
    space = tmp_path / "space"
    space.mkdir()
    (space / "README.md").write_text(SPACE_README)
    (space / "app.py").write_text("import gradio as gr\n")
    (space / "requirements.txt").write_text("transformers\ntorchaudio\n")

    push = run_client(PUSH_SCRIPT, str(folder), str(stale_folder), str(space), env=hub_env(hub.url, tmp_path / "h1"))
    urls = json.loads(push.stdout.strip().splitlines()[-1])
    model_head = json.loads((hub.repo_dir(REPO) / "meta.json").read_text())["commits"]
    assert [c["title"] for c in model_head] == ["initial commit", "first upload", "Upload clap-tiny with clapforge"]
    assert urls[1] == f"{hub.url}/{REPO}/commit/{model_head[-1]['id']}"
    assert "modeling_obsolete.py" in model_head[1]["files"] and "extra.tmp-123" not in model_head[1]["files"]
    # the second push deleted the module the folder no longer has, and re-sent identical bytes for the rest
    assert hub.files(REPO) == set(snapshot(folder)) | {".gitattributes"}
    stored = hub.repo_dir(REPO) / "files"
    assert all((stored / name).read_bytes() == data for name, data in snapshot(folder).items())
    assert hub.files(SPACE, "space") == {".gitattributes", "README.md", "app.py", "requirements.txt"}
    space_meta = json.loads((hub.repo_dir(SPACE, "space") / "meta.json").read_text())
    assert space_meta["sdk"] == "gradio" and space_meta["variables"]["MODEL"]["value"] == REPO

    clips = [tone(3.0, 440), tone(5.0, 880, seed=1)]
    np.savez(tmp_path / "clips.npz", *clips)
    before = len(hub.requests)
    args = [str(tmp_path / "clips.npz"), str(tmp_path / "remote.pt"), *TEXTS]
    pull = run_client(PULL_SCRIPT, *args, env=hub_env(hub.url, tmp_path / "h2"))
    listing = json.loads(pull.stdout.strip().splitlines()[-1])
    remote = torch.load(tmp_path / "remote.pt")

    inputs = processor(text=TEXTS, audio=clips, sampling_rate=48000)
    with torch.no_grad():
        local = tiny_model(**inputs)
    assert remote["module"].startswith("transformers_modules")
    torch.testing.assert_close(remote["audio"], local.audio_embeds, atol=0, rtol=0)
    torch.testing.assert_close(remote["text"], local.text_embeds, atol=0, rtol=0)

    assert CODE_FILES | {"README.md", "config.json", "model.safetensors"} <= set(listing["model_files"])
    assert "modeling_obsolete.py" not in listing["model_files"]
    assert set(listing["space_files"]) >= {"app.py", "README.md", "requirements.txt"}
    assert listing["eval"] == SCORES
    assert listing["sha"] == model_head[-1]["id"]
    log = [f"{r.method} {r.path} {r.status}" for r in hub.requests[before:]]
    weights = re.compile(rf"GET /{REPO}/resolve/[0-9a-f]{{40}}/model.safetensors 200$")
    assert any(weights.match(line) for line in log), "\n".join(log)  # the weights came from the server
    assert hub.unknown == []


def test_the_local_hub_validates_cards_like_the_hub(hub):
    def validate(content: str, repo_type: str = "model") -> tuple[int, dict]:
        body = json.dumps({"content": content, "repoType": repo_type}).encode()
        request = urllib.request.Request(f"{hub.url}/api/validate-yaml", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    assert validate(model_card("clap-tiny", RECIPE, METRICS)) == (200, {"errors": [], "warnings": []})
    broken = "---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n    metrics: []\n---\n"
    status, answer = validate(broken)
    assert status == 400 and len(answer["errors"]) == 3
    assert validate("---\ntitle: demo\n---\n", "space")[0] == 400
    assert validate("no header")[1]["warnings"]


def test_push_results_join_the_card_and_bring_mteb_files(tiny_model, tokenizer, tmp_path):
    """`clapforge push --results r.json`: the evaluation's model-index joins the card's, mteb's files come along, and
    the user's folder is left as it was."""
    from clapforge.push import attach_results
    from hub_server import _model_index_errors

    folder = export_hub_folder(tiny_model, make_processor(tokenizer), tmp_path / "clap-tiny", RECIPE, METRICS,
                               repo_id=REPO)
    esc50 = ModelCard(model_card("clap-tiny", metrics={"zero_shot_top1": 0.905}, dataset_name="ESC-50",
                                 dataset_split="all")).data.to_dict()["model-index"]
    (tmp_path / "r.model-index.yaml").write_text(yaml.safe_dump({"model-index": esc50}))
    (tmp_path / "r.json").write_text("{}")
    mteb_file = tmp_path / "r_mteb" / "results" / "clap-tiny" / "abc" / "ESC50_Zeroshot.json"
    mteb_file.parent.mkdir(parents=True)
    mteb_file.write_text('{"task_name": "ESC50_Zeroshot"}')
    before = snapshot(folder)

    copy = shutil.copytree(folder, tmp_path / "upload")
    attach_results(copy, [tmp_path / "r.json"])
    card = ModelCard.load(copy / "README.md")
    scores = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert scores[("ESC-50", "zero_shot_top1")] == 0.905
    assert {k: v for (d, k), v in scores.items() if d != "ESC-50"} == SCORES  # the card's own results are kept
    assert _model_index_errors(metadata_load(copy / "README.md")) == []
    assert (copy / "mteb_results" / "clap-tiny" / "abc" / "ESC50_Zeroshot.json").read_text() == mteb_file.read_text()
    assert snapshot(folder) == before
    with pytest.raises(FileNotFoundError, match="model-index.yaml does not exist"):
        attach_results(copy, [tmp_path / "missing.json"])
