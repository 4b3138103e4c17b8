"""Files shipped in the package (recipes, the Space) and how the commands find them.

The wheel install itself is tested in test_wheel.py (slow); these are the fast checks of the same paths.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clapforge import demo, push
from clapforge.commands.train import resolve_config
from clapforge.resources import RECIPES_DIR, SPACE_DIR, recipe_names, recipe_path

ROOT = Path(__file__).resolve().parents[1]


def test_the_checkout_folders_are_the_package_folders():
    """One copy of each file: recipes/ and spaces_demo/ at the root lead to the package's folders."""
    assert (ROOT / "recipes").resolve() == RECIPES_DIR.resolve()
    assert (ROOT / "spaces_demo").resolve() == SPACE_DIR.resolve()
    assert RECIPES_DIR.resolve().is_relative_to(Path(demo.__file__).resolve().parent)


def test_the_commands_default_to_the_shipped_files():
    assert demo.RECIPE == recipe_path("demo") == RECIPES_DIR / "demo.yaml" and demo.RECIPE.is_file()
    assert push.DEFAULT_SPACE_DIR == SPACE_DIR
    assert all((SPACE_DIR / name).is_file() for name in push.SPACE_FILES)
    assert {"demo", "test-tiny", "esc50-linear-probe"} <= set(recipe_names())
    with pytest.raises(FileNotFoundError, match="no shipped recipe 'nope'"):
        recipe_path("nope")


def test_train_config_falls_back_to_a_shipped_recipe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("recipes/demo.yaml") == str(RECIPES_DIR / "demo.yaml")  # the README's path, no checkout
    assert resolve_config("test-tiny") == str(RECIPES_DIR / "test-tiny.yaml")
    assert "using the shipped recipe" in capsys.readouterr().err
    (tmp_path / "demo.yaml").write_text("name: mine\n")
    assert resolve_config("demo.yaml") == "demo.yaml"  # a file that exists always wins
    assert resolve_config("nope.yaml") == "nope.yaml"  # load_recipe reports it missing
    assert resolve_config("demo.json") == "demo.json"
