"""`train(recipe)` end to end on the test-tiny preset and a small `clapforge synth` corpus, in this process.

- resume: stopped after a checkpoint and resumed (mid-epoch, and at an epoch boundary) ends with the same weights as
  an uninterrupted run (data position, optimizer, scheduler and dropout RNG restored);
- a crash while writing a checkpoint leaves the previous one loadable, and a later save removes the debris;
- bad recipes fail before training, naming the field; a NaN loss stops the run naming the step and last checkpoint;
- the final Hub folder loads with AutoModel/AutoProcessor (trust_remote_code) in a fresh process, and its model card
  carries the validation metrics as a model-index;
- logit_scale_a is clamped to [0, ln 100] after every step.

The 2-process equivalence of the distributed loss is in tests/test_train_distributed.py.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import clapforge.training.contrastive as contrastive_module
import clapforge.training.train as train_module
from clapforge.training.checkpoint import checkpoint_name, complete_checkpoints, resolve_resume, save_checkpoint
from clapforge.training.recipe import RecipeError, load_recipe
from clapforge.training.train import TrainingDiverged, train
from conftest import make_tokenizer

RECIPE = Path(__file__).parents[1] / "recipes" / "test-tiny.yaml"
CLIPS = 30  # synth splits 24 train / 3 validation / 3 test
TRAIN_CLIPS = 24


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from clapforge.data.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("corpus") / "corpus"
    manifest = synthesize_corpus(out, CLIPS, seed=1, workers=1, progress=False)
    assert manifest["splits"]["train"]["clips"] == TRAIN_CLIPS
    return out


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    make_tokenizer(vocab_size=1000).save_pretrained(folder)
    return folder


def recipe_for(corpus: Path, tok: Path, out: Path, *overrides: str, validation: bool = False):
    return load_recipe(
        RECIPE,
        [
            f"data.train={corpus}",
            f"data.validation={corpus if validation else 'null'}",
            f"tokenizer={tok}",
            f"output_dir={out}",
            "log_with=null",
            *overrides,
        ],
    )


def final_weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoints" / checkpoint_name(step) / "model.safetensors")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """A resumed run repeats the uninterrupted run's computations (same batches and shapes, same kernels, in this
    process), so the weights agree up to rounding at most. The tolerance is 100x below what one AdamW step moves a
    weight (lr 1e-3, about 1e-3 per step), so a skipped, repeated or reordered batch fails."""
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


class Stop(Exception):
    """Raised by a test hook to stop a run the way a crash would."""


# ---------------------------------------------------------------------------------------------------------------
# Resume

# 24 clips / batch 4 = 6 steps per epoch: step 3 is mid-epoch, step 6 ends epoch 0, step 7 is in epoch 1.
RESUME_OVERRIDES = (
    "train.batch_size=4",
    "train.max_steps=7",
    "train.warmup_steps=2",
    "checkpoint.every=3",
    "checkpoint.keep_last=3",
)


@pytest.fixture(scope="module")
def uninterrupted(corpus, tokenizer_dir, tmp_path_factory):
    """7 steps in one go, with validation and the default TensorBoard tracker: (output_dir, returned metrics)."""
    out = tmp_path_factory.mktemp("run") / "uninterrupted"
    metrics = train(recipe_for(corpus, tokenizer_dir, out, *RESUME_OVERRIDES, "log_with=tensorboard", validation=True))
    return out, metrics


def test_resumed_run_ends_with_the_same_weights(uninterrupted, corpus, tokenizer_dir, tmp_path):
    reference, _ = uninterrupted
    assert [p.name for p in complete_checkpoints(reference / "checkpoints")] == [checkpoint_name(s) for s in (3, 6, 7)]
    out = tmp_path / "resumed"
    real_save = train_module.save_checkpoint

    def save_then_crash(accelerator, folder, step, keep_last):
        path = real_save(accelerator, folder, step, keep_last)
        if step == 3:
            raise Stop(f"stopped after saving step {step}")
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "save_checkpoint", save_then_crash)
        with pytest.raises(Stop):
            train(recipe_for(corpus, tokenizer_dir, out, *RESUME_OVERRIDES))
    assert [p.name for p in complete_checkpoints(out / "checkpoints")] == [checkpoint_name(3)]
    # The first 3 steps were the same as the uninterrupted run's (a sanity check of the comparison below).
    assert_same_weights(final_weights(out, 3), final_weights(reference, 3))

    train(recipe_for(corpus, tokenizer_dir, out, *RESUME_OVERRIDES, "resume=latest"))
    resumed = final_weights(out, 7)
    assert_same_weights(resumed, final_weights(reference, 7))
    # ... and the steps after the resume did change the weights (the comparison is not vacuous).
    changed = [n for n, w in final_weights(reference, 3).items() if not torch.allclose(w, resumed[n], atol=1e-5)]
    assert len(changed) > len(resumed) // 2


def test_resume_at_an_epoch_boundary(uninterrupted, corpus, tokenizer_dir, tmp_path):
    """Resuming from step 6 (the stream of epoch 0 just ran out) starts epoch 1 exactly as the uninterrupted run."""
    reference, _ = uninterrupted
    out = tmp_path / "from-step-6"
    checkpoint = reference / "checkpoints" / checkpoint_name(6)
    train(recipe_for(corpus, tokenizer_dir, out, *RESUME_OVERRIDES, f"resume={checkpoint}"))
    assert [p.name for p in complete_checkpoints(out / "checkpoints")] == [checkpoint_name(7)]
    assert_same_weights(final_weights(out, 7), final_weights(reference, 7))


def test_resume_needs_a_complete_checkpoint(tmp_path):
    (tmp_path / "checkpoints" / ".partial-step-00000002").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        resolve_resume("latest", tmp_path / "checkpoints")
    with pytest.raises(FileNotFoundError, match="COMPLETE"):
        resolve_resume(str(tmp_path / "checkpoints" / ".partial-step-00000002"), tmp_path / "checkpoints")


# ---------------------------------------------------------------------------------------------------------------
# A crash while writing a checkpoint


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def test_crash_while_saving_leaves_the_previous_checkpoint(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    counter = Counter()
    accelerator.register_for_checkpointing(counter)
    folder = tmp_path / "checkpoints"

    def train_step():
        model(torch.randn(5, 4)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        counter.value += 1

    train_step()
    train_step()
    good = save_checkpoint(accelerator, folder, 2, keep_last=2)
    saved_weight = model.weight.detach().clone()
    train_step()
    train_step()

    real_save_state = Accelerator.save_state

    def crash_midway(self, output_dir=None, **kwargs):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 100)  # a torn file
        raise OSError("disk full (simulated)")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Accelerator, "save_state", crash_midway)
        with pytest.raises(OSError, match="simulated"):
            save_checkpoint(accelerator, folder, 4, keep_last=2)

    # The debris exists, but is neither a complete checkpoint nor "latest".
    debris = folder / f".partial-{checkpoint_name(4)}"
    assert (debris / "model.safetensors").is_file()
    assert not (folder / checkpoint_name(4)).exists()
    assert complete_checkpoints(folder) == [good]
    assert resolve_resume("latest", folder) == good

    # The previous checkpoint loads: weights, optimizer and the registered object return to step 2.
    accelerator.load_state(str(resolve_resume("latest", folder)))
    torch.testing.assert_close(model.weight.detach(), saved_weight)
    assert counter.value == 2
    assert accelerator.unwrap_model(model) is not None

    # A later save (here of another step than the crashed one) removes the debris.
    assert Accelerator.save_state is real_save_state
    train_step()
    save_checkpoint(accelerator, folder, 3, keep_last=2)
    assert not debris.exists()
    assert [p.name for p in complete_checkpoints(folder)] == [checkpoint_name(2), checkpoint_name(3)]
    assert sorted(p.name for p in folder.iterdir()) == [checkpoint_name(2), checkpoint_name(3)]


# ---------------------------------------------------------------------------------------------------------------
# Bad recipes fail before training


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("preset=no-such-preset", "preset"),
        ("train.batch_size=1", "train.batch_size"),
        ("train.bogus=3", "train: unknown field(s) ['bogus']"),
        ("bogus=3", "recipe: unknown field(s) ['bogus']"),
        ("train.lr", "override 'train.lr': expected dotted.key=value"),
        ("=3", "override '=3'"),
        ("train.lr=fast", "train.lr: expected a number"),
        ("train.batch_size.x=1", "train.batch_size"),
        ("train.mixed_precision=fp64", "train.mixed_precision"),
    ],
)
def test_bad_recipe_is_refused_when_loaded(override, field, corpus, tokenizer_dir, tmp_path):
    with pytest.raises(RecipeError) as error:
        recipe_for(corpus, tokenizer_dir, tmp_path / "out", override)
    assert str(error.value).startswith(field) or field in str(error.value)
    assert not (tmp_path / "out").exists()


def _text_tower(folder: Path, model_type: str, hidden: int) -> Path:
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    config_class, model_class = {"bert": (BertConfig, BertModel), "roberta": (RobertaConfig, RobertaModel)}[model_type]
    # Everything else as test-tiny's text tower, so that only the named field disagrees.
    config = config_class(
        vocab_size=1000,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        type_vocab_size=1,
        pad_token_id=1,
    )
    model_class(config).save_pretrained(folder)
    return folder


def _full_model(folder: Path, **audio_config) -> Path:
    import clapforge

    clapforge.create_model("test-tiny", audio_config=audio_config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("problem", "field", "detail"),
    [
        ("missing train data", "data.train", "does not exist"),
        ("missing validation data", "data.validation", "does not exist"),
        ("text tower 48 wide", "init.text", "hidden_size=48"),
        ("a BERT text tower", "init.text", "model_type='bert'"),
        ("no tokenizer", "tokenizer", "no tokenizer"),
        ("init.model of another audio width", "init.model", "embed_dim=16"),
    ],
)
def test_bad_recipe_is_refused_before_training(problem, field, detail, corpus, tokenizer_dir, tmp_path):
    out = tmp_path / "out"
    overrides = {
        "missing train data": [f"data.train={tmp_path / 'nowhere'}"],
        "missing validation data": [f"data.validation={tmp_path / 'nowhere'}"],
        "text tower 48 wide": [f"init.text={_text_tower(tmp_path / 'text48', 'roberta', 48)}"],
        "a BERT text tower": [f"init.text={_text_tower(tmp_path / 'bert32', 'bert', 32)}"],
        "no tokenizer": ["tokenizer=null"],
        "init.model of another audio width": [f"init.model={_full_model(tmp_path / 'wide', embed_dim=16)}"],
    }[problem]
    recipe = recipe_for(corpus, tokenizer_dir, out, *overrides)
    with pytest.raises(RecipeError) as error:
        train(recipe)
    assert str(error.value).startswith(f"{field}:") and detail in str(error.value)
    assert not (out / "checkpoints").exists() and not (out / "hub").exists()


def test_matching_text_tower_is_accepted(corpus, tokenizer_dir, tmp_path):
    """The control for the width check: a 32-wide RoBERTa text tower loads, and its weights are used."""
    from clapforge.training.recipe import load_recipe as load
    from clapforge.training.weights import build_model

    folder = _text_tower(tmp_path / "text32", "roberta", 32)
    model, _, pretrained = build_model(load(RECIPE, [f"init.text={folder}", f"tokenizer={tokenizer_dir}"]))
    assert pretrained == ("text_model.",)
    donor = load_file(folder / "model.safetensors")
    torch.testing.assert_close(
        model.text_model.embeddings.word_embeddings.weight, donor["embeddings.word_embeddings.weight"]
    )


def test_cli_reports_a_bad_recipe(corpus, tokenizer_dir, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clapforge",
            "train",
            "--config",
            str(RECIPE),
            f"data.train={corpus}",
            f"tokenizer={tokenizer_dir}",
            f"output_dir={out}",
            "train.batch_size=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "bad recipe: train.batch_size: must be at least 2" in done.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# A NaN loss


def test_nan_loss_stops_the_run(corpus, tokenizer_dir, tmp_path, monkeypatch):
    calls = []
    real_loss = contrastive_module.global_contrastive_loss

    def nan_at_step_4(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 4 else loss

    monkeypatch.setattr(contrastive_module, "global_contrastive_loss", nan_at_step_4)
    out = tmp_path / "out"
    recipe = recipe_for(corpus, tokenizer_dir, out, "train.batch_size=2", "train.max_steps=6", "checkpoint.every=2")
    with pytest.raises(TrainingDiverged) as error:
        train(recipe)
    message = str(error.value)
    assert "at step 4" in message and "nan" in message.lower()
    assert message.endswith(str(out / "checkpoints" / checkpoint_name(2)))
    assert len(calls) == 4
    # Nothing after the NaN was saved, and the named checkpoint is complete.
    assert complete_checkpoints(out / "checkpoints") == [out / "checkpoints" / checkpoint_name(2)]
    assert not (out / "hub").exists()


# ---------------------------------------------------------------------------------------------------------------
# The end product

LOAD_HUB_FOLDER = """
import json, sys
import numpy as np, torch
from transformers import AutoModel, AutoProcessor
folder = sys.argv[1]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
audio = [np.sin(np.arange(48000 * 2) * 2 * np.pi * f / 48000).astype(np.float32) for f in (220, 880)]
inputs = processor(text=["a low hum", "a high beep"], audio=audio, sampling_rate=48000, return_tensors="pt")
with torch.no_grad():
    out = model(**inputs)
print(json.dumps({"module": type(model).__module__, "class": type(model).__name__,
                  "audio": list(out.audio_embeds.shape), "text": list(out.text_embeds.shape),
                  "logit_scale_a": model.logit_scale_a.item()}))
"""


def test_hub_folder_loads_with_auto_classes_and_carries_the_metrics(uninterrupted, tmp_path):
    out, metrics = uninterrupted
    folder = out / "hub"
    # A process where clapforge cannot be imported: the folder's own code must do.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HF_HOME": str(tmp_path / "hf_home")}
    done = subprocess.run(
        [sys.executable, "-I", "-c", LOAD_HUB_FOLDER, str(folder)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    import json

    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["class"] == "LaionClapModel" and not loaded["module"].startswith("clapforge")
    assert loaded["audio"] == [2, 128] and loaded["text"] == [2, 128]
    trained = final_weights(out, 7)["logit_scale_a"].item()
    assert loaded["logit_scale_a"] == pytest.approx(trained)  # the trained weights, not a fresh init

    # The model card's model-index holds the final validation metrics that train() returned.
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    results = front["model-index"][0]["results"]
    reported = {m["type"]: m["value"] for result in results for m in result["metrics"]}
    assert metrics, "the run had validation data: train() must return metrics"
    scores = {k: v for k, v in metrics.items() if not k.startswith(("chance/", "n_"))}  # not results (see hub.py)
    assert {"t2a_R@1", "a2t_R@10", "t2a_mAP@10", "a2t_mAP@10", "zero_shot_top1"} <= set(scores)
    assert set(scores) <= set(reported)
    for key, value in scores.items():
        assert reported[key] == pytest.approx(value), key
    assert "test-tiny" in card


# ---------------------------------------------------------------------------------------------------------------
# The logit scale clamp


@pytest.mark.parametrize("start", [math.log(100) + 1.0, -1.0])
def test_logit_scale_is_clamped_after_a_step(start, corpus, tokenizer_dir, tmp_path):
    """Start from a full checkpoint (init.model) whose logit_scale_a is outside [0, ln 100]: one step brings it back.

    Without the clamp one AdamW step at lr 1e-3 moves it by about 1e-3, far from either bound.
    """
    import clapforge

    torch.manual_seed(0)
    model = clapforge.create_model("test-tiny")
    with torch.no_grad():
        model.logit_scale_a.fill_(start)
    model.save_pretrained(tmp_path / "init")
    out = tmp_path / "out"
    train(
        recipe_for(
            corpus, tokenizer_dir, out, f"init.model={tmp_path / 'init'}", "train.batch_size=2", "train.max_steps=1"
        )
    )
    after = final_weights(out, 1)["logit_scale_a"].item()
    expected = math.log(100) if start > 0 else 0.0
    assert after == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_falls_back_to_fp32_where_the_cpu_only_emulates_it(monkeypatch, caplog, native):
    """On an AVX2-only CPU bf16 autocast is ~10x slower than fp32 (the demo recipe asks for bf16 to be faster):
    training then runs in fp32 and says so; with native bf16 (or another precision) the recipe is followed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_module, "native_bf16", lambda device: native)
    with caplog.at_level("WARNING"):
        assert train_module._mixed_precision("bf16") == ("bf16" if native else "no")
        assert train_module._mixed_precision("no") == "no"
    assert ("no bf16 kernels" in caplog.text) != native


def test_native_bf16_reads_the_cpus_kernels(monkeypatch):
    from conftest import REAL_NATIVE_BF16 as native_bf16  # the suite's fixture stands in for it elsewhere

    for supported in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda s=supported: s)
        assert native_bf16("cpu") is supported
