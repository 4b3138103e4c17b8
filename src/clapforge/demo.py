"""`clapforge demo` (= `make demo`): the main job on the built-in default, on a CPU, in under ten minutes.

1. corpus: `clapforge synth` into OUT/corpus, unless a complete corpus (its manifest.json) is already there;
2. train: the demo recipe that fits the device, on the corpus' train split, validating on its validation split;
   `train()` writes OUT/hub. Both recipes train the `pann-mini-minilm` preset (a small PANN from scratch,
   all-MiniLM-L6-v2 text tower): `recipes/demo.yaml` in bf16 where the device has bf16 kernels, `recipes/demo-fp32.yaml`
   in fp32 on fewer samples elsewhere, where a step costs ~3x more (`choose_recipe`, the precision policy's
   `native_bf16`); an explicit recipe is trained as given;
3. evaluate the exported OUT/hub folder on the held-out `test` split (captions from phrasings never seen in
   training) and print text->audio / audio->text R@1, R@10 and zero-shot accuracy with the prompt
   "This is a sound of {label}.", each next to chance.

A rerun keeps the corpus and trains afresh (OUT/checkpoints, OUT/logs and OUT/hub are replaced); `--resume`
continues an interrupted run from its latest checkpoint instead. The figures are written to OUT/demo.json.

Threads: torch's intra-op threads wait for each other at every parallel region, so on cores that other jobs keep
busy two threads run several times slower than one (benchmarks/RESULTS.md). Unless `--threads` says otherwise, the
demo uses every core, or one when the 1-minute load average is already at the core count.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json
from .resources import recipe_path

DEFAULT_OUT = "runs/demo"
DEFAULT_CLIPS = 2000
# Shipped in the package: the demo runs from a plain `pip install`. RECIPE trains in bf16 autocast; on a CPU without
# bf16 kernels train() would fall back to fp32, where RECIPE's 300 steps take ~22 min on 2 AVX2 cores, so there the
# demo trains RECIPE_FP32 (110 steps, same accuracy goals) instead (benchmarks/RESULTS.md, "make demo").
RECIPE = recipe_path("demo")
RECIPE_FP32 = recipe_path("demo-fp32")
GOALS = {"total_s": 10 * 60, "zero_shot_top1": 0.80, "t2a_R@10_over_chance": 10.0}
TABLE_ROWS = [
    ("text->audio R@1", "t2a_R@1"),
    ("text->audio R@10", "t2a_R@10"),
    ("audio->text R@1", "a2t_R@1"),
    ("audio->text R@10", "a2t_R@10"),
    ("zero-shot accuracy (top-1)", "zero_shot_top1"),
]


def default_threads() -> int:
    """All cores, or one when the 1-minute load average says other jobs already hold them all (module docstring)."""
    cores = os.cpu_count() or 1
    # All cores unless other jobs already oversubscribe them. The 1-minute load lags: right after `make install` or
    # another job it still reads 1-2 on idle cores, so a finer rule would starve the demo of a thread it could use.
    return cores if os.getloadavg()[0] < cores else 1


def choose_recipe(recipe: str | Path | None = None) -> tuple[Path, str]:
    """The recipe to train and why: `recipe` as given, else the demo recipe for the precision this device runs fast.

    The device is the one `train()` runs on, and the question the one its mixed-precision fallback asks
    (`inference.precision.native_bf16`), so the demo never trains a bf16 recipe that would fall back to fp32.
    """
    if recipe is not None:
        return Path(recipe), "as given"
    import torch

    from .inference.precision import native_bf16

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if native_bf16(device):
        where = "this GPU" if device == "cuda" else "this CPU (AMX or AVX-512 BF16)"
        return RECIPE, f"{where} has bf16 kernels: bf16 autocast"
    return RECIPE_FP32, "no bf16 kernels on this CPU (neither AVX-512 BF16 nor AMX): fp32, fewer steps"


def ensure_corpus(folder: Path, clips: int, seed: int) -> bool:
    """Synthesise the corpus unless a complete one is there (manifest.json is written last). True if made now."""
    if (folder / "manifest.json").is_file():
        return False
    from .data.synth import synthesize_corpus

    # overwrite: split folders without a manifest are the remains of an interrupted synthesis.
    synthesize_corpus(folder, clips, seed, overwrite=True)
    return True


def held_out_examples(corpus: Path) -> tuple[list[dict], list[str]]:
    """The held-out test split, each example's labels renamed to the zero-shot label names of labels.json."""
    from .data.labels import labelled_split

    return labelled_split(corpus, "test")


def evaluate_folder(folder: Path, corpus: Path, prompt: str, batch_size: int = 32) -> dict[str, float]:
    """Scores of the exported model folder on the test split (the folder as a user would load it)."""
    from .evaluation.evaluate import evaluate_clap
    from .inference.loading import load_engine

    # fp32: the figures the demo reports are the model's own, on any CPU.
    engine = load_engine(folder, device="cpu", precision="fp32")
    examples, class_names = held_out_examples(corpus)
    return evaluate_clap(engine, None, examples, class_names, prompt=prompt, batch_size=batch_size)


def format_table(metrics: dict[str, float]) -> str:
    lines = [f"{'held-out test split':<28} {'model':>7} {'chance':>7} {'x chance':>9}"]
    for title, key in TABLE_ROWS:
        value, chance = metrics[key], metrics[f"chance/{key}"]
        lines.append(f"{title:<28} {value:>7.1%} {chance:>7.1%} {value / chance:>8.1f}x")
    lines.append(
        f"({metrics['n_clips']} clips, {metrics['n_captions']} captions, {metrics.get('n_classes', 0)} classes)"
    )
    return "\n".join(lines)


def run_demo(
    out: str | Path = DEFAULT_OUT,
    *,
    clips: int = DEFAULT_CLIPS,
    seed: int = 0,
    recipe: str | Path | None = None,
    overrides: list[str] | None = None,
    threads: int | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Corpus, training, test evaluation (see the module docstring). Returns the figures also written to demo.json.

    `recipe`: a recipe file to train as given; None picks the demo recipe that fits the device (`choose_recipe`).
    """
    import torch

    from .hub import add_card_results
    from .training.recipe import load_recipe
    from .training.train import train

    out = Path(out)
    corpus = out / "corpus"
    started = time.perf_counter()
    loads = {"start": os.getloadavg()}
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    print(f"clapforge demo: {threads} torch thread(s) on {os.cpu_count()} cores, load average {loads['start'][0]:.1f}")

    made = ensure_corpus(corpus, clips, seed)
    corpus_s = time.perf_counter() - started
    loads["corpus"] = os.getloadavg()
    manifest = json.loads((corpus / "manifest.json").read_text())
    print(f"corpus: {corpus} ({'made' if made else 'kept'}, {manifest['clips']} clips, {manifest['hours']:.2f} h)")

    recipe, recipe_reason = choose_recipe(recipe)
    print(f"recipe: {recipe} ({recipe_reason})")
    recipe_overrides = [f"output_dir={out}", f"data.train={corpus}", f"data.validation={corpus}"]
    recipe_overrides += list(overrides or [])
    if resume:
        recipe_overrides.append("resume=latest")
    cfg = load_recipe(recipe, recipe_overrides)
    if not resume:
        for stale in ("checkpoints", "logs", "hub"):
            shutil.rmtree(out / stale, ignore_errors=True)
    train_started = time.perf_counter()
    validation = train(cfg)
    train_s = time.perf_counter() - train_started
    loads["train"] = os.getloadavg()

    eval_started = time.perf_counter()
    metrics = evaluate_folder(out / "hub", corpus, cfg.eval.prompt, cfg.eval.batch_size)
    if (out / "hub" / "README.md").is_file():  # the card carries the held-out test split beside validation
        add_card_results(out / "hub", metrics, "test")
    eval_s = time.perf_counter() - eval_started
    loads["eval"] = os.getloadavg()
    total_s = time.perf_counter() - started

    over_chance = metrics["t2a_R@10"] / metrics["chance/t2a_R@10"]
    goals = {
        "total_s": total_s <= GOALS["total_s"],
        "zero_shot_top1": metrics["zero_shot_top1"] >= GOALS["zero_shot_top1"],
        "t2a_R@10_over_chance": over_chance >= GOALS["t2a_R@10_over_chance"],
    }
    report = {
        "test": metrics,
        "validation": validation,
        "seconds": {"corpus": corpus_s, "train": train_s, "eval": eval_s, "total": total_s},
        "corpus_made": made,
        "load_average": loads,
        "threads": threads,
        "recipe_file": str(recipe),
        "recipe_reason": recipe_reason,
        "recipe": cfg.to_dict(),
        "goals_met": goals,
        "hub": str(out / "hub"),
    }
    atomic_write_json(out / "demo.json", report, indent=2)

    print()
    print(format_table(metrics))
    print()
    print(
        f"wall time {total_s / 60:.1f} min: corpus {corpus_s:.0f} s, training {train_s:.0f} s, evaluation "
        f"{eval_s:.0f} s (load average {loads['eval'][0]:.1f} at the end, {threads} thread(s))"
    )
    print(
        f"goals: zero-shot >= 80%: {_yes(goals['zero_shot_top1'])}; text->audio R@10 >= 10x chance "
        f"({over_chance:.1f}x): {_yes(goals['t2a_R@10_over_chance'])}; <= {GOALS['total_s'] / 60:.0f} min: "
        f"{_yes(goals['total_s'])}"
    )
    print(f"model folder (Hub-ready): {out / 'hub'}   figures: {out / 'demo.json'}")
    print(f"open it in the Space:     MODEL={out / 'hub'} make space")
    return report


def _yes(ok: bool) -> str:
    return "met" if ok else "MISSED"
