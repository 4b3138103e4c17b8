"""mteb runs a clapforge model through its own sentence-transformers wrapper (`clapforge.evaluation.mteb_bridge`), and
on the local tasks built from a synthetic corpus its scores equal clapforge's own `evaluate_clap` on the same clips
and prompt: the same accuracy and text->audio R@1/5/10, and, clip by clip, the same similarities. Offline."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import clapforge
from clapforge import LaionClapProcessor
from clapforge.cli import main
from clapforge.data.labels import labelled_split
from clapforge.data.synth import synthesize_corpus
from clapforge.evaluation.evaluate import evaluate_clap
from clapforge.evaluation.mteb_bridge import T2A_TASK, ZERO_SHOT_TASK, model_index_from_mteb, model_meta, run_mteb
from clapforge.evaluation.mteb_tasks import lossless_audio_bytes
from clapforge.inference.embedding import embed_audio_batches, embed_texts
from clapforge.inference.loading import load_model, tokenizer_of
from clapforge.prompts import format_prompt
from conftest import make_tokenizer, randomize_

PROMPT = "A recording of {label}."  # not the default: the prompt must reach mteb's candidate labels
KS = (1, 5, 10)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-cache"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """30 test clips (1-22 s: repeat-padded, exactly 10 s and cropped), 92 captions, 15 classes; ~3 s to make."""
    out = tmp_path_factory.mktemp("mteb") / "corpus"
    synthesize_corpus(out, 60, seed=3, workers=1, progress=False, validation_fraction=0.05, test_fraction=0.5)
    return out


def save_model(folder, enable_fusion: bool = False, seed: int = 0):
    """A test-tiny model folder with random weights and a tokenizer, as `LaionClapModel.save_pretrained` writes it."""
    torch.manual_seed(seed)
    model = randomize_(clapforge.create_model("test-tiny", enable_fusion=enable_fusion), seed=seed)
    model.save_pretrained(folder)
    LaionClapProcessor(clapforge.create_feature_extractor("test-tiny", model.config), make_tokenizer()).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("mteb") / "model")


@pytest.fixture(scope="module")
def fused_folder(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("mteb") / "fused", enable_fusion=True)


def clapforge_side(folder, corpus):
    """evaluate_clap's scores and the embeddings behind them, on the test split with PROMPT."""
    model, processor = load_model(folder, "cpu")
    tokenizer = tokenizer_of(processor)
    examples, class_names = labelled_split(corpus, "test")
    scores = evaluate_clap(model, tokenizer, examples, class_names, prompt=PROMPT, batch_size=4)
    audio = embed_audio_batches(model, processor, [e["audio"] for e in examples], 4, 48000)  # (N, E)
    captions = [c for e in examples for c in e["captions"]]
    text = embed_texts(model, tokenizer, captions)  # (N_t, E)
    classes = embed_texts(model, tokenizer, [format_prompt(PROMPT, name) for name in class_names])  # (K, E)
    return scores, examples, audio, text, classes


def test_model_meta_describes_the_folder_for_mteb(folder):
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from safetensors.torch import load_file

    meta = model_meta(folder)
    config = json.loads((folder / "config.json").read_text())
    assert meta.modalities == ["audio", "text"] and meta.loader is SentenceTransformerEncoderWrapper
    assert meta.name == str(folder.resolve()) and meta.embed_dim == config["projection_dim"] and meta.max_tokens == 77
    assert meta.loader_kwargs == {"trust_remote_code": True, "target_sampling_rate": 48000, "local_files_only": True}
    assert meta.n_parameters == sum(t.numel() for t in load_file(folder / "model.safetensors").values())
    assert meta.similarity_fn_name.value == "cosine" and meta.open_weights
    # What mteb builds from it: audio reaches the model at 48 kHz and untruncated.
    wrapper = meta.load_model()
    assert wrapper.target_sampling_rate == 48000 and wrapper.max_samples is None
    assert wrapper.mteb_model_meta.modalities == ["audio", "text"]


def test_model_meta_revision_follows_the_weights(folder, tmp_path):
    first = model_meta(folder).revision
    assert model_meta(folder).revision == first
    other = save_model(tmp_path / "other", seed=1)
    assert model_meta(other).revision != first
    (other / "modules.json").unlink()  # a folder sentence-transformers cannot load is refused up front
    with pytest.raises(ValueError, match="no sentence-transformers configuration"):
        model_meta(other)


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_mteb_scores_equal_clapforge_eval_on_the_synthetic_tasks(fused, corpus, tmp_path, request):
    folder = request.getfixturevalue("fused_folder" if fused else "folder")
    assert json.loads((folder / "config.json").read_text())["audio_config"]["enable_fusion"] is fused
    predictions = tmp_path / "predictions"
    summary = run_mteb(folder, "synthetic", tmp_path / "results", data=corpus, prompt=PROMPT, batch_size=4,
                       prediction_folder=predictions, progress=False)
    ours, examples, audio, text, classes = clapforge_side(folder, corpus)
    assert max(len(e["audio"]) for e in examples) > 20 * 48000 > 10 * 48000 > min(len(e["audio"]) for e in examples)

    zero_shot = summary["tasks"][ZERO_SHOT_TASK]["scores"]["test"]["default"]
    retrieval = summary["tasks"][T2A_TASK]["scores"]["test"]["default"]
    # Zero-shot: the same accuracy, and for every clip the same similarity to every class prompt.
    assert zero_shot["accuracy"] == pytest.approx(ours["zero_shot_top1"], abs=1e-12)
    probs = json.loads((predictions / f"{ZERO_SHOT_TASK}_predictions.json").read_text())["default"]["test"]
    torch.testing.assert_close(torch.tensor(probs), audio @ classes.T, atol=1e-5, rtol=0)
    # Text->audio: mteb rounds to 5 decimals; with one relevant clip per caption, recall@k = hit rate@k = R@k.
    assert ours["n_captions"] == 92
    for k in KS:
        assert retrieval[f"recall_at_{k}"] == pytest.approx(ours[f"t2a_R@{k}"], abs=6e-6), k
        assert retrieval[f"hit_rate_at_{k}"] == retrieval[f"recall_at_{k}"]
    assert retrieval["accuracy"] == retrieval["recall_at_1"]
    # Every query's scores are the cosines of clapforge's caption and clip embeddings.
    ranked = json.loads((predictions / f"{T2A_TASK}_predictions.json").read_text())["default"]["test"]
    keys = [e["key"] for e in examples]
    expected = text @ audio.T  # (N_t, N)
    queries = [f"{e['key']}#{j}" for e in examples for j in range(len(e["captions"]))]
    assert set(ranked) == set(queries)
    for row, query in enumerate(queries):
        got = torch.tensor([ranked[query][key] for key in keys])
        torch.testing.assert_close(got, expected[row], atol=1e-5, rtol=0)

    # mteb's own result files, where the summary says they are.
    for name in (ZERO_SHOT_TASK, T2A_TASK):
        result = json.loads(Path(summary["tasks"][name]["result_file"]).read_text())
        assert result["task_name"] == name
        main_score = summary["tasks"][name]["main_score"]
        assert result["scores"]["test"][0]["main_score"] == pytest.approx(main_score, abs=1e-6)  # written rounded
    # The model-index carries the same numbers.
    index = model_index_from_mteb(summary, "tiny")
    values = {(r["dataset"]["name"], m["type"]): m["value"] for r in index[0]["results"] for m in r["metrics"]}
    assert values[(ZERO_SHOT_TASK, "accuracy")] == zero_shot["accuracy"]
    assert values[(T2A_TASK, "recall_at_10")] == retrieval["recall_at_10"]


def test_eval_command_runs_the_synthetic_benchmark(folder, corpus, tmp_path, capsys):
    out = tmp_path / "report" / "r.json"
    assert main(["eval", str(folder), "--benchmark", "synthetic", "--data", str(corpus), "--out", str(out),
                 "--batch-size", "8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert ZERO_SHOT_TASK in printed and "mteb result files" in printed
    files = sorted((tmp_path / "report" / "r_mteb" / "results").glob("*/*/*.json"))
    assert {f.name for f in files} == {f"{ZERO_SHOT_TASK}.json", f"{T2A_TASK}.json", "model_meta.json"}
    summary = json.loads(out.read_text())
    assert summary["model_name"] == "model" and summary["model"] == str(folder.resolve())
    mteb_files = {f.stem: json.loads(f.read_text()) for f in files if f.stem != "model_meta"}
    index = yaml.safe_load(out.with_suffix(".model-index.yaml").read_text())["model-index"]
    assert index[0]["name"] == "model"
    by_task = {r["dataset"]["name"]: r for r in index[0]["results"]}
    assert by_task[ZERO_SHOT_TASK]["task"]["type"] == "zero-shot-audio-classification"
    assert by_task[T2A_TASK]["task"]["type"] == "audio-text-retrieval"
    for name, result in by_task.items():
        scores = mteb_files[name]["scores"]["test"][0]
        assert result["dataset"]["revision"] == mteb_files[name]["dataset_revision"]
        assert result["source"]["name"] == "MTEB"
        assert result["metrics"][0]["type"] == summary["tasks"][name]["main_score_name"]
        for metric in result["metrics"]:
            assert metric["value"] == pytest.approx(scores[metric["type"]], abs=1e-6), (name, metric["type"])
    assert out.with_suffix(".md").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--benchmark", "synthetic"], "needs --data"),
        (["--benchmark", "MAEB", "--prompt", "a {label}"], "--prompt applies to --task or --benchmark synthetic"),
        (["--benchmark", "synthetic", "--data", "CORPUS", "--prompt", "a {label}", "--prompt", "the {label}"],
         "one --prompt"),
        (["--benchmark", "synthetic", "--data", "CORPUS", "--prompt", "no placeholder"], "placeholder"),
        (["--benchmark", "NoSuchTaskAnywhere"], "neither an mteb benchmark nor a list of mteb task names"),
        (["--benchmark", "MAEB", "--fold", "1"], "--fold applies to --task only"),
        (["--task", "esc50"], "needs --data"),
    ],
)
def test_eval_command_rejects_bad_benchmark_arguments(folder, corpus, argv, message, capsys):
    argv = [str(corpus) if a == "CORPUS" else a for a in argv]
    assert main(["eval", str(folder), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["--task", "esc50", "--benchmark", "MAEB"]])
def test_eval_command_needs_exactly_one_of_task_and_benchmark(folder, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(folder), "--data", "x", *argv])
    assert exit_info.value.code == 2
    assert "--task" in capsys.readouterr().err


@pytest.mark.parametrize("on_grid", [True, False], ids=["flac", "float-wav"])
def test_local_task_audio_decodes_to_the_same_samples(on_grid):
    from datasets import Audio, Dataset, Features

    rng = np.random.default_rng(0)
    if on_grid:  # what clapforge's 16-bit shards decode to
        samples = (rng.integers(-32768, 32768, 48000 * 3) / 32768).astype(np.float32)
    else:
        samples = (0.3 * rng.standard_normal(48000 * 3)).clip(-1, 1).astype(np.float32)
    data = lossless_audio_bytes(samples, 48000)
    assert data[:4] == (b"fLaC" if on_grid else b"RIFF")
    table = Dataset.from_dict({"audio": [{"bytes": data, "path": None}]},
                              features=Features({"audio": Audio(sampling_rate=48000)}))
    decoded = table[0]["audio"]
    assert decoded["sampling_rate"] == 48000
    np.testing.assert_array_equal(np.asarray(decoded["array"]).reshape(-1), samples)
