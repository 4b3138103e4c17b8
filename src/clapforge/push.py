"""Publishing a model folder, optionally with the demo Space: what `clapforge push MODEL_DIR REPO --space SPACE` runs.

MODEL_DIR is a Hub-ready folder (what `hub.export_hub_folder` or `save_pretrained` writes; its README.md model card
carries the evaluation results). It is uploaded to the model repo REPO in one commit. With `space`, the demo app
shipped in the package (`clapforge/spaces_demo/`: app.py, requirements.txt, README.md, examples/; the repository's
`spaces_demo/` links to it) goes to the Space repo SPACE, pointed at REPO twice: by the Space variable `MODEL`, which
the app reads, and by the card's `models:` entry, which links the two pages on the Hub. Both uploads go through
`hub.push_folder`, so HF_ENDPOINT/HF_TOKEN apply as usual.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from .resources import SPACE_DIR as DEFAULT_SPACE_DIR

SPACE_FILES = ("app.py", "requirements.txt", "README.md")


def prepare_space(space_dir: str | Path, model_repo: str, out: str | Path) -> Path:
    """Copy the demo app into `out` with its card's `models:` set to `[model_repo]`; returns `out`."""
    from huggingface_hub import metadata_load, metadata_save

    space_dir, out = Path(space_dir), Path(out)
    missing = [name for name in SPACE_FILES if not (space_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{space_dir} is not the demo app folder: it has no {', '.join(missing)}")
    shutil.copytree(space_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    metadata = metadata_load(out / "README.md") or {}
    metadata["models"] = [model_repo]
    metadata_save(out / "README.md", metadata)
    return out


def attach_results(folder: str | Path, results: list[str | Path]) -> None:
    """Add evaluations to a model folder's card: for each results JSON `clapforge eval --out` wrote, the entries of
    its `<stem>.model-index.yaml` join the card's `model-index`, and mteb's own result files (`<stem>_mteb/results/`,
    from `--benchmark`) are copied under `mteb_results/`."""
    import yaml
    from huggingface_hub import metadata_load, metadata_save

    folder = Path(folder)
    card = folder / "README.md"
    if not card.is_file():
        raise FileNotFoundError(f"{folder} has no README.md model card to add results to")
    metadata = metadata_load(card) or {}
    index = metadata.setdefault("model-index", [{"name": folder.name, "results": []}])
    for result in map(Path, results):
        block = result.with_suffix(".model-index.yaml")
        if not block.is_file():
            raise FileNotFoundError(f"{block} does not exist: pass a results JSON written by `clapforge eval --out`")
        for entry in yaml.safe_load(block.read_text(encoding="utf-8"))["model-index"]:
            index[0].setdefault("results", []).extend(entry["results"])
        mteb_files = result.with_name(f"{result.stem}_mteb") / "results"
        if mteb_files.is_dir():
            shutil.copytree(mteb_files, folder / "mteb_results", dirs_exist_ok=True)
    metadata_save(card, metadata)


def push(
    model_dir: str | Path,
    repo: str,
    space: str | None = None,
    *,
    private: bool = False,
    space_dir: str | Path = DEFAULT_SPACE_DIR,
    results: list[str | Path] = (),
) -> dict[str, str]:
    """Upload the model folder (with `results` attached to a copy of it, see `attach_results`), then (with `space`)
    the demo Space pointing at it; returns the commit URLs."""
    from .hub import push_folder

    model_dir = Path(model_dir)
    if not (model_dir / "README.md").is_file():
        print(f"note: {model_dir} has no README.md model card; `export_hub_folder` writes one", file=sys.stderr)
    if space is not None and not Path(space_dir, "app.py").is_file():  # fail before the model upload, not after
        raise FileNotFoundError(f"{space_dir} has no app.py: pass --space-dir, the demo app folder (spaces_demo/)")
    with tempfile.TemporaryDirectory(prefix="clapforge-model-") as tmp:
        if results:  # the user's folder stays as it is: the card with results is a copy's
            model_dir = Path(shutil.copytree(model_dir, Path(tmp) / model_dir.name))
            attach_results(model_dir, list(results))
        urls = {"model": push_folder(model_dir, repo, private=private)}
    if space is not None:
        with tempfile.TemporaryDirectory(prefix="clapforge-space-") as tmp:
            folder = prepare_space(space_dir, repo, Path(tmp) / "space")
            urls["space"] = push_folder(
                folder,
                space,
                repo_type="space",
                private=private,
                space_variables={"MODEL": repo},
                commit_message=f"Demo of {repo}",
            )
    return urls
