"""Issue 22: one projection-head builder, activation names refused at config time, objectives found through a
registry they join, and no import circle in `training/`."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clapforge
from clapforge.modeling_clap.activations_laion_clap import ACTIVATIONS
from clapforge.modeling_clap.configuration_laion_clap import HtsatConfig, LaionClapConfig
from clapforge.modeling_clap.modeling_htsat import Mlp
from clapforge.modeling_clap.modeling_laion_clap import (
    LaionClapAudioModelWithProjection,
    LaionClapModel,
    LaionClapTextModelWithProjection,
    ProjectionHead,
    build_projection,
)
from clapforge.modeling_clap.modeling_laion_clap_classification import LaionClapForAudioClassification
from clapforge.presets import PRESETS, load_preset_config
from clapforge.training.classification import ClassificationObjective
from clapforge.training.contrastive import ContrastiveObjective
from clapforge.training.objective import objective_for, register_objective
from clapforge.training.recipe import OBJECTIVES, Recipe, RecipeError

TRAINING_DIR = Path(clapforge.__file__).parent / "training"


def assert_refuses(make, field: str, name: str = "swish") -> None:
    with pytest.raises(ValueError) as error:
        make(name)
    message = str(error.value)
    assert field in message and repr(name) in message, message
    assert all(known in message for known in ACTIVATIONS), message


# ---- activations ------------------------------------------------------------------------------------------------


def test_an_unknown_activation_in_a_config_is_refused_with_the_known_names():
    assert_refuses(lambda act: LaionClapConfig(projection_hidden_act=act), "projection_hidden_act")
    assert_refuses(lambda act: HtsatConfig(hidden_act=act), "hidden_act")
    assert_refuses(lambda act: LaionClapConfig(audio_config={"hidden_act": act}), "hidden_act")


def test_a_module_built_directly_refuses_an_unknown_activation():
    # Before the table, ProjectionHead fell back to GELU and HTS-AT's MLP to ReLU.
    assert_refuses(lambda act: ProjectionHead(4, 4, act), "activation")
    assert_refuses(lambda act: Mlp(4, 8, act, 0.0), "activation")


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds_with_the_activations_it_names(name):
    config = load_preset_config(name)
    with torch.device("meta"):
        model = LaionClapModel(config)
    for head in (model.text_projection, model.audio_projection):
        assert type(head.activation) is ACTIVATIONS[config.projection_hidden_act]
    if isinstance(config.audio_config, HtsatConfig):
        mlps = [m for m in model.audio_model.modules() if isinstance(m, Mlp)]
        assert mlps and all(type(m.act) is ACTIVATIONS[config.audio_config.hidden_act] for m in mlps)


# ---- the projection-head builder --------------------------------------------------------------------------------


def layout(module: torch.nn.Module) -> tuple[list, list]:
    """Each submodule's name and class, each parameter's name and shape."""
    return [(n, type(m)) for n, m in module.named_modules()], [(n, p.shape) for n, p in module.named_parameters()]


def test_every_model_class_builds_its_heads_with_the_builder():
    # Both activations differ from the defaults, so a head or MLP built with a hard-coded one would show.
    config = load_preset_config("test-tiny", projection_hidden_act="gelu", audio_config={"hidden_act": "relu"})
    config.id2label = {0: "dog", 1: "siren"}
    models = [
        LaionClapModel(config),
        LaionClapAudioModelWithProjection(config),
        LaionClapTextModelWithProjection(config),
        LaionClapForAudioClassification(config),
    ]
    for model in models:
        heads = {name: m for name, m in model.named_modules() if isinstance(m, ProjectionHead)}
        assert heads, type(model).__name__
        for name, head in heads.items():
            assert layout(head) == layout(build_projection(config, name.removesuffix("_projection"))), name
            assert isinstance(head.activation, torch.nn.GELU)
    mlps = [m for model in models for m in model.modules() if isinstance(m, Mlp)]
    assert mlps and all(isinstance(m.act, torch.nn.ReLU) for m in mlps)
    # The keys checkpoints were written with.
    keys = {k for k in models[0].state_dict() if "_projection." in k}
    layers = [f"linear{i}.{p}" for i in (1, 2) for p in ("weight", "bias")]
    assert keys == {f"{tower}_projection.{layer}" for tower in ("audio", "text") for layer in layers}


# ---- the objective registry -------------------------------------------------------------------------------------


# A fresh process, since this one has registered the objectives already by importing their modules above.
LOOP_REGISTERS = """
import json
import clapforge.training.train
from clapforge.training.objective import objective_for
from clapforge.training.recipe import OBJECTIVES, ClassificationConfig, Recipe
labels = ClassificationConfig(labels=["a", "b"])
print(json.dumps({name: type(objective_for(Recipe(objective=name, classification=labels))).__name__
                  for name in OBJECTIVES}))
"""


def test_importing_the_training_loop_registers_every_recipe_objective():
    result = subprocess.run([sys.executable, "-c", LOOP_REGISTERS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {
        "contrastive": ContrastiveObjective.__name__,
        "classification": ClassificationObjective.__name__,
    }


def test_an_unknown_objective_is_refused_with_the_registered_names():
    with pytest.raises(RecipeError) as error:
        objective_for(Recipe(objective="distillation"))
    message = str(error.value)
    assert "'distillation'" in message and all(name in message for name in OBJECTIVES), message
    with pytest.raises(ValueError, match="recipe.OBJECTIVES"):
        register_objective("distillation")
    with pytest.raises(ValueError, match="already registered"):
        register_objective("contrastive")(ContrastiveObjective)


# ---- no import circle in training/ ------------------------------------------------------------------------------


def sibling_imports(path: Path) -> set[str]:
    """The modules of the same package that `path` imports, at module level or inside a function: an import deferred
    into a function still needs the other module, so a circle through it is still a circle (issue 22's was one)."""
    siblings = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            # `from .x.y import n` needs x; `from . import x, y` needs x and y.
            siblings |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
    return siblings


def import_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of `graph` (module -> modules it imports) as a path that ends where it starts, or None."""

    def walk(path: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt in path:
                return path[path.index(nxt) :] + [nxt]
            if circle := walk(path + [nxt]):
                return circle
        return None

    return next((circle for module in sorted(graph) if (circle := walk([module]))), None)


def test_import_circle_finds_a_circle_through_a_deferred_import(tmp_path):
    (tmp_path / "base.py").write_text("def lookup():\n    from .derived import Derived\n")
    (tmp_path / "derived.py").write_text("from .base import lookup\n")
    graph = {path.stem: sibling_imports(path) for path in tmp_path.glob("*.py")}
    assert import_circle(graph) == ["base", "derived", "base"]


def test_no_training_module_imports_one_that_imports_it_back():
    graph = {path.stem: sibling_imports(path) for path in TRAINING_DIR.glob("*.py")}
    assert {"objective", "contrastive", "classification"} <= set(graph)  # the scan sees the package
    circle = import_circle(graph)
    assert circle is None, " -> ".join(circle)
