"""Files shipped inside the package: the training recipes and the Gradio Space, found through `importlib.resources`.

They live in the package (`recipes/`, `spaces_demo/` beside this file) so that a wheel carries them and `clapforge
demo` and `clapforge push --space` work after a plain `pip install`; the repository root's `recipes` and
`spaces_demo` are symlinks to these folders, so the documented paths (`recipes/demo.yaml`, `make space`) keep
working in a checkout with one copy of each file. Standard library only: the command modules read these paths
when they build the parser.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_path(*parts: str) -> Path:
    """A file or folder shipped in the package, on disk (pip installs wheels unpacked, so it always is)."""
    path = resources.files(__package__).joinpath(*parts)
    if not isinstance(path, Path):
        raise RuntimeError(f"clapforge/{'/'.join(parts)} is inside an archive ({path}); install clapforge unpacked")
    return path


RECIPES_DIR = package_path("recipes")
SPACE_DIR = package_path("spaces_demo")


def recipe_names() -> list[str]:
    """The shipped recipes, by name (`demo` for recipes/demo.yaml)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The shipped recipe `name` (`demo` or `demo.yaml`)."""
    path = RECIPES_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"no shipped recipe {name!r}: expected one of {', '.join(recipe_names())}")
    return path
