"""A trained model's card names its data: the corpus (a local path or a Hub id) and the split of every result in the
`model-index`, validation from training and, once `clapforge demo` has evaluated the held-out split, test."""

from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard

import clapforge
from clapforge import LaionClapProcessor
from clapforge.hub import add_card_results
from clapforge.resources import recipe_path
from clapforge.training.contrastive import ContrastiveObjective
from clapforge.training.recipe import load_recipe
from conftest import make_tokenizer

VALIDATION = {"zero_shot_top1": 0.775, "t2a_R@10": 0.5, "chance/t2a_R@10": 0.05, "n_clips": 40}
TEST = {"zero_shot_top1": 0.805, "t2a_R@10": 0.55, "chance/t2a_R@10": 0.05, "n_clips": 40}


def results(folder) -> list[tuple[str, str, str, str, float]]:
    card = ModelCard.load(folder / "README.md")
    return [(r.dataset_name, r.dataset_type, r.dataset_split, r.metric_type, r.metric_value)
            for r in card.data.eval_results]


@pytest.mark.parametrize("corpus", ["runs/demo/corpus", "someone/audio-captions"], ids=["local", "hub"])
def test_trained_models_card_names_its_corpus_and_carries_the_test_split(tmp_path, corpus):
    recipe = load_recipe(recipe_path("demo"), [f"data.train={corpus}", f"data.validation={corpus}",
                                               f"output_dir={tmp_path}"])
    torch.manual_seed(0)
    model = clapforge.create_model("test-tiny")
    processor = LaionClapProcessor(clapforge.create_feature_extractor("test-tiny", model.config), make_tokenizer())
    # The objective's export is what train() calls at the end; only its recipe is read.
    folder = ContrastiveObjective.export(SimpleNamespace(recipe=recipe), model, processor, VALIDATION, tmp_path)

    assert results(folder) == [
        (corpus, corpus, "validation", "zero_shot_top1", 0.775),
        (corpus, corpus, "validation", "t2a_R@10", 0.5),
    ]
    assert "validation set" not in (folder / "README.md").read_text()

    add_card_results(folder, TEST, "test")  # what `clapforge demo` does after evaluating the exported folder
    assert results(folder)[2:] == [
        (corpus, corpus, "test", "zero_shot_top1", 0.805),
        (corpus, corpus, "test", "t2a_R@10", 0.55),
    ]
    text = ModelCard.load(folder / "README.md").text
    assert f"On {corpus} (validation; 40 clips)" in text and f"On {corpus} (test; 40 clips)" in text
    assert text.index("(validation;") < text.index("(test;") < text.index("## Training recipe")

    # Evaluating again replaces the split's results instead of adding a second set.
    add_card_results(folder, {**TEST, "zero_shot_top1": 0.81}, "test")
    assert [r[2:] for r in results(folder)] == [
        ("validation", "zero_shot_top1", 0.775), ("validation", "t2a_R@10", 0.5),
        ("test", "zero_shot_top1", 0.81), ("test", "t2a_R@10", 0.55),
    ]
    assert ModelCard.load(folder / "README.md").text.count("(test;") == 1


def test_model_card_lists_every_split():
    from clapforge.hub import model_card

    card = ModelCard(model_card("clap", metrics=VALIDATION, dataset_name="ashraq/esc50", dataset_split="validation",
                                split_metrics={"test": TEST}))
    assert {(r.dataset_name, r.dataset_split) for r in card.data.eval_results} == {
        ("ashraq/esc50", "validation"), ("ashraq/esc50", "test")
    }


def test_the_cards_examples_run_as_written(tmp_path):
    """The card's "How to use" blocks run offline against the exported folder, named as the card names the repo."""
    import os
    import re
    import shutil
    import subprocess
    import sys

    from clapforge.hub import export_hub_folder
    from conftest import randomize_, write_wav

    torch.manual_seed(0)
    model = randomize_(clapforge.create_model("test-tiny"))
    processor = LaionClapProcessor(clapforge.create_feature_extractor("test-tiny", model.config), make_tokenizer())
    folder = export_hub_folder(model, processor, tmp_path / "clap-tiny", metrics=VALIDATION,
                               dataset_name="runs/demo/corpus", repo_id="clap-tiny")
    shutil.copyfile(write_wav(tmp_path / "dog.wav", seed=1, seconds=1.0), tmp_path / "rain.flac")
    examples = re.findall(r"^```python\n(.*?)^```$", ModelCard.load(folder / "README.md").text, flags=re.S | re.M)
    assert len(examples) == 3
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "home"), HF_MODULES_CACHE=str(tmp_path / "m"))
    for code in examples:
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"{code}\n---\n{result.stderr[-3000:]}"
