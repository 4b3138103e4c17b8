"""`clapforge push MODEL_DIR REPO [--space SPACE_REPO] [--private]`: publish a model folder, optionally with a Space.

MODEL_DIR is a Hub-ready folder (what `hub.export_hub_folder` or `save_pretrained` writes; its README.md model card
carries the evaluation results). It is uploaded to the model repo REPO in one commit. With `--space`, the demo app
in `spaces_demo/` (app.py, requirements.txt, README.md, examples/) goes to the Space repo SPACE_REPO, pointed at REPO
twice: by the Space variable `MODEL`, which the app reads, and by the card's `models:` entry, which links the two
pages on the Hub. Both uploads go through `hub.push_folder`, so HF_ENDPOINT/HF_TOKEN apply as usual.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

# The demo lives beside the package in a source checkout (src/clapforge/push.py -> <root>/spaces_demo).
DEFAULT_SPACE_DIR = Path(__file__).resolve().parents[2] / "spaces_demo"
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


def push(
    model_dir: str | Path,
    repo: str,
    space: str | None = None,
    *,
    private: bool = False,
    space_dir: str | Path = DEFAULT_SPACE_DIR,
) -> dict[str, str]:
    """Upload the model folder, then (with `space`) the demo Space pointing at it; returns the commit URLs."""
    from .hub import push_folder

    model_dir = Path(model_dir)
    if not (model_dir / "README.md").is_file():
        print(f"note: {model_dir} has no README.md model card; `export_hub_folder` writes one", file=sys.stderr)
    if space is not None and not Path(space_dir, "app.py").is_file():  # fail before the model upload, not after
        raise FileNotFoundError(f"{space_dir} has no app.py: pass --space-dir, the demo app folder (spaces_demo/)")
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


def _run(args: argparse.Namespace) -> int:
    urls = push(args.model_dir, args.repo, args.space, private=args.private, space_dir=args.space_dir)
    for kind, url in urls.items():
        print(f"{kind}: {url}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `clapforge push` to the CLI's sub-parsers."""
    parser = commands.add_parser(
        "push",
        help="upload a model folder to the Hub, optionally with a demo Space",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("model_dir", help="Hub-ready model folder (config.json, *.safetensors, code, README.md)")
    parser.add_argument("repo", help="model repo id, e.g. user/clap-small")
    parser.add_argument("--space", metavar="SPACE_REPO", help="also create or update this demo Space (user/name)")
    parser.add_argument("--private", action="store_true", help="create the repos as private")
    parser.add_argument("--space-dir", default=str(DEFAULT_SPACE_DIR), help="demo app folder (default: %(default)s)")
    parser.set_defaults(run=_run)
