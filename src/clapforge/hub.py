"""Publishing to the Hugging Face Hub: the model card, the Hub-ready folder, and the upload.

A Hub-ready folder is what `save_pretrained` writes for the model and the processor (safetensors, `config.json`
with `auto_map`, the flat code files, `processor_config.json`, the tokenizer) plus a `README.md` model card whose
YAML front matter carries the validation metrics as a `model-index`. Such a folder loads with
`AutoModel.from_pretrained(folder_or_repo, trust_remote_code=True)` where clapforge is not installed.

Where the Hub is: huggingface_hub reads `HF_ENDPOINT` (and `HF_HUB_DISABLE_XET`, `HF_TOKEN`) once, when it is first
imported, and transformers imports it, so setting those variables after `import clapforge` changes nothing for
downloads. `push_folder(endpoint=...)` talks to another endpoint without touching the environment (every call it
makes goes through one `HfApi(endpoint=...)`); for downloads, set the variables before the process starts. The
tests do both pushes and downloads in subprocesses started with that environment (see `tests/hub_server.py`).
What a failure to reach the Hub becomes (a short retry, then one line) is `hub_network`'s.

Nothing here touches the network at import time; huggingface_hub is imported inside the functions.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

PIPELINE_TAG = "zero-shot-audio-classification"
TAGS = ["clapforge", "clap", "laion-clap", "audio", "zero-shot-audio-classification", "custom_code"]
DEFAULT_IGNORE_PATTERNS = (".prepare/*", "*.tmp*", "*.old-*", "__pycache__/*", "*.pyc")
# Files a model folder owns entirely: on a re-push, remote ones that the new folder no longer has are deleted (a
# stale shard index or code file would otherwise shadow or break the new upload). Other remote files are left alone.
MODEL_OWNED_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.py")

# (task type, task name) for a metric key; see `_task_for_metric`.
ZERO_SHOT_TASK = (PIPELINE_TAG, "Zero-shot audio classification")
RETRIEVAL_TASK = ("audio-text-retrieval", "Audio-text retrieval")
_DIRECTIONS = {
    "t2a": "Text-to-audio",
    "a2t": "Audio-to-text",
    "text_to_audio": "Text-to-audio",
    "audio_to_text": "Audio-to-text",
}
_RETRIEVAL_KEY = re.compile(r"^(t2a|a2t|text_to_audio|audio_to_text)[_/](.+)$")


def _task_for_metric(key: str) -> tuple[str, str]:
    """Retrieval (`t2a_R@1`, `a2t_mAP@10`: `clapforge.evaluation`'s names) vs classification (`zero_shot_top1`)."""
    return RETRIEVAL_TASK if _RETRIEVAL_KEY.match(key) or "R@" in key or "mAP@" in key else ZERO_SHOT_TASK


def _metric_name(key: str) -> str:
    """A readable name: `t2a_R@10` -> `Text-to-audio R@10`, `zero_shot_top1` -> `Zero-shot top-1 accuracy`."""
    if match := _RETRIEVAL_KEY.match(key):
        return f"{_DIRECTIONS[match.group(1)]} {match.group(2)}"
    if match := re.fullmatch(r"zero_shot_top(\d+)", key):
        return f"Zero-shot top-{match.group(1)} accuracy"
    words = re.sub(r"[_/]+", " ", key).strip()
    return words[:1].upper() + words[1:]


def _format_value(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _split_metrics(metrics: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """(scores, chance level of each score, counts): `chance/<key>` and `n_<what>` are context, not results."""
    scores, chance, counts = {}, {}, {}
    for key, value in metrics.items():
        if key.startswith("chance/"):
            chance[key.removeprefix("chance/")] = float(value)
        elif key.startswith("n_"):
            counts[key.removeprefix("n_").replace("_", " ")] = int(value)
        else:
            scores[key] = float(value)
    return scores, chance, counts


def model_card(
    model_name: str,
    recipe: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    *,
    dataset_name: str | None = None,
    dataset_type: str | None = None,
    dataset_split: str = "validation",
    split_metrics: Mapping[str, Mapping[str, float]] | None = None,
    base_model: str | list[str] | None = None,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    language: str | list[str] | None = "en",
    library_name: str = "transformers",
    datasets: str | list[str] | None = None,
    description: str | None = None,
    architecture: Mapping[str, Any] | None = None,
    extra_tags: Iterable[str] = (),
) -> str:
    """The text of a README.md model card, YAML front matter included.

    `metrics` is what `clapforge.evaluation.evaluate_clap` returns on the validation data. Its scores become the
    card's `model-index`: retrieval keys (`t2a_R@1`, `a2t_mAP@10`, ...) under the task `audio-text-retrieval`, the
    others (`zero_shot_top1`, ...) under `zero-shot-audio-classification`, all against `dataset_name`
    (`dataset_type` defaults to it: a Hub dataset id when there is one; name the corpus, as a local path or a Hub id:
    without one the card can only say "<split> set"), on the split `dataset_split`. `split_metrics` maps other splits
    of the same data (`{"test": {...}}`) to their scores, listed after it. `chance/<key>` entries become a column of
    the card's table and `n_<what>` counts a sentence above it; neither is a result, so neither is in `model-index`.
    The front matter is
    built with huggingface_hub's `ModelCardData`/`EvalResult`, so it has the shape the Hub validates, and is parsed
    back through `ModelCard` before it is returned (an inconsistent card raises here, not on the Hub).

    `library_name` is "transformers" because that is what loads the model (with `trust_remote_code=True`); the
    `clapforge` tag says where it comes from. `recipe` (the training configuration) is shown as a YAML block.
    """
    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    dataset_name = dataset_name or f"{dataset_split} set"
    evaluations = [(dataset_split, metrics or {}), *((split, m) for split, m in (split_metrics or {}).items() if m)]
    eval_results, tables = [], []
    for split, split_scores in evaluations:
        results, table = _evaluation(split_scores, dataset_name, dataset_type or dataset_name, split)
        eval_results += results
        tables += [table] if table else []
    card_data = ModelCardData(
        model_name=model_name,
        license=license,
        language=language,
        library_name=library_name,
        pipeline_tag=PIPELINE_TAG,
        tags=[*TAGS, *extra_tags],
        base_model=base_model,
        datasets=datasets,
        eval_results=eval_results or None,
    )
    repo = repo_id or model_name
    sections = [
        f"# {model_name}",
        description
        or (
            "A [LAION-CLAP](https://arxiv.org/abs/2211.06687) contrastive language-audio model, built and trained with "
            "[clapforge](https://github.com/clapforge/clapforge). It maps audio clips and texts into one embedding "
            "space: compare a clip with label prompts for zero-shot classification, or rank clips by a text query."
        ),
    ]
    if architecture:
        sections.append("| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in architecture.items()))
    sections.append(
        "## How to use\n\n"
        "The model code ships with the weights, so only `transformers` and `torchaudio` are needed:\n\n"
        "```python\n"
        "import torch\n"
        "from transformers import AutoModel, AutoProcessor\n\n"
        f'model = AutoModel.from_pretrained("{repo}", trust_remote_code=True).eval()\n'
        f'processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)\n\n'
        'labels = ["a dog barking", "rain on a roof"]\n'
        "# audio: file paths (any format FFmpeg decodes, with torchcodec installed), or arrays with\n"
        "# `sampling_rate=` (any rate: it is resampled to the model's)\n"
        'inputs = processor(text=[f"This is a sound of {label}." for label in labels], audio=["dog.wav"])\n'
        "with torch.no_grad():\n"
        "    outputs = model(**inputs)\n"
        "probabilities = outputs.logits_per_audio.softmax(dim=-1)  # (clips, labels)\n"
        "audio_embeds, text_embeds = outputs.audio_embeds, outputs.text_embeds  # L2-normalised\n"
        "```\n\n"
        "With [sentence-transformers](https://sbert.net) (6.2 or newer), which also opens MTEB/MAEB and vector "
        "databases; audio is a path to an audio file (.wav, .flac, .mp3, .ogg, .oga, .opus, .m4a, .webm, .aiff, ...) "
        "or a `{\"array\", \"sampling_rate\"}` dict, one rate per call:\n\n"
        "```python\n"
        "from sentence_transformers import SentenceTransformer\n\n"
        f'model = SentenceTransformer("{repo}", trust_remote_code=True)\n'
        'audio_embeds = model.encode(["dog.wav", "rain.flac"])\n'
        'text_embeds = model.encode(["a dog barking", "rain on a roof"])\n'
        "similarity = model.similarity(audio_embeds, text_embeds)  # cosine, (clips, texts)\n"
        "```\n\n"
        "With [clapforge](https://github.com/clapforge/clapforge) (`pip install clapforge`), which adds batch "
        "embedding to an index, search and zero-shot classification of files:\n\n"
        "```python\n"
        "import clapforge\n\n"
        f'audio_embeds = clapforge.embed_audio(["dog.wav", "rain.flac"], model="{repo}")\n'
        f'probabilities = clapforge.classify(["dog.wav"], ["a dog barking", "rain on a roof"], model="{repo}")\n'
        "```"
    )
    if tables:
        sections.append("## Evaluation\n\n" + "\n\n".join(tables))
    if recipe:
        recipe_yaml = yaml.safe_dump(dict(recipe), sort_keys=False, allow_unicode=True).rstrip()
        sections.append(f"## Training recipe\n\n```yaml\n{recipe_yaml}\n```")
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    ModelCard(content)  # parse back: raises on front matter the Hub would reject
    return content


def add_card_results(
    folder: str | Path,
    metrics: Mapping[str, float],
    dataset_split: str,
    *,
    dataset_name: str | None = None,
    dataset_type: str | None = None,
) -> Path:
    """Add one more split's scores to the model card (README.md) of an exported folder: its `model-index` results
    and a table under "## Evaluation". The data defaults to that of the card's first result (the corpus the model
    was validated on); an earlier result of the same split is replaced. Used by `clapforge demo`, which evaluates the
    exported folder on the held-out test split after training. Returns the card's path."""
    from huggingface_hub import ModelCard

    path = Path(folder) / "README.md"
    card = ModelCard.load(path)
    existing = list(card.data.eval_results or [])
    name = dataset_name or (existing[0].dataset_name if existing else f"{dataset_split} set")
    type_ = dataset_type or (existing[0].dataset_type if existing and not dataset_name else name)
    results, table = _evaluation(metrics, name, type_, dataset_split)
    card.data.eval_results = [r for r in existing if r.dataset_split != dataset_split] + results
    text = re.sub(rf"\nOn [^\n]* \({re.escape(dataset_split)}[;)][^\n]*:\n\n(\|[^\n]*\n?)+", "\n", card.text)
    if table:
        if "## Evaluation" in text:
            start = text.index("## Evaluation")
            end = text.find("\n## ", start + 1)
            end = len(text.rstrip("\n")) if end < 0 else end
            text = text[:end].rstrip("\n") + "\n\n" + table + "\n" + text[end:]
        else:
            text = text.rstrip("\n") + "\n\n## Evaluation\n\n" + table + "\n"
    content = f"---\n{card.data.to_yaml()}\n---\n" + text
    ModelCard(content)  # parse back, as model_card does
    atomic_write_text(path, content)
    return path


def _evaluation(metrics: Mapping[str, float], name: str, type_: str, split: str) -> tuple[list, str]:
    """The `EvalResult`s of one split's scores and their table (with chance levels and counts) for the card."""
    from huggingface_hub import EvalResult

    scores, chance, counts = _split_metrics(metrics)
    results = [
        EvalResult(
            task_type=_task_for_metric(key)[0],
            task_name=_task_for_metric(key)[1],
            dataset_type=type_,
            dataset_name=name,
            dataset_split=split,
            metric_type=key,
            metric_name=_metric_name(key),
            metric_value=value,
        )
        for key, value in scores.items()
    ]
    if not results:
        return [], ""
    size = "; ".join(f"{n} {what}" for what, n in counts.items())
    rows = "\n".join(
        f"| {r.task_name} | {r.metric_name} | {_format_value(r.metric_value)} | "
        f"{_format_value(chance[r.metric_type]) if r.metric_type in chance else ''} |"
        for r in results
    )
    return results, (f"On {name} ({split}{'; ' + size if size else ''}):\n\n"
                     f"| task | metric | value | chance |\n|---|---|---|---|\n{rows}")


def _architecture(model: Any) -> dict[str, Any]:
    config = model.config
    audio = getattr(config, "audio_config", None)
    text = getattr(config, "text_config", None)
    rows = {
        "audio encoder": getattr(audio, "model_type", "?"),
        "text encoder": getattr(text, "model_type", "?"),
        "embedding size": getattr(config, "projection_dim", getattr(config, "joint_embed_dim", "?")),
        "feature fusion": getattr(config, "enable_fusion", False),
        "parameters": f"{sum(p.numel() for p in model.parameters()):,}",
    }
    return {k: v for k, v in rows.items() if v != "?"}


def export_hub_folder(
    model: Any,
    processor: Any,
    folder: str | Path,
    recipe: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    **card_kwargs: Any,
) -> Path:
    """Write a Hub-ready folder: weights (safetensors), code, config, processor, README.md model card.

    The folder is written next to its destination (`<folder>.tmp-xxxx`) and renamed into place only once complete:
    a failure while writing leaves an existing `folder` untouched and no partial folder behind. An existing folder
    is moved aside (`<folder>.old-xxxx`) just before the rename and deleted after it, so at every instant at least
    one complete export is on disk. `card_kwargs` go to `model_card` (`model_name` defaults to the folder's name).
    """
    folder = Path(folder).absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        card_kwargs.setdefault("model_name", folder.name)
        card_kwargs.setdefault("architecture", _architecture(model))
        (tmp / "README.md").write_text(model_card(recipe=recipe, metrics=metrics, **card_kwargs), encoding="utf-8")
        _check_model_folder(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{folder.name}.old-", dir=folder.parent))
        folder.rename(old / folder.name)
    tmp.rename(folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _check_model_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{folder} has no config.json: not a model folder (write one with `export_hub_folder` or "
            "`model.save_pretrained`)"
        )
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{folder} has no *.safetensors weights")


def _check_space_folder(folder: Path) -> None:
    from huggingface_hub import metadata_load

    readme = folder / "README.md"
    if not readme.is_file():
        raise ValueError(f"{folder} has no README.md: a Space needs one with a YAML header naming its sdk")
    if not (metadata_load(readme) or {}).get("sdk"):
        raise ValueError(f"{readme} has no `sdk:` in its YAML header (e.g. `sdk: gradio`)")


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    repo_type: str = "model",
    commit_message: str | None = None,
    ignore_patterns: Iterable[str] = DEFAULT_IGNORE_PATTERNS,
    delete_patterns: Iterable[str] | None = None,
    space_sdk: str | None = None,
    space_variables: Mapping[str, str] | None = None,
    endpoint: str | None = None,
) -> str:
    """Create the repo if needed and upload `folder` to it in one commit; returns the commit URL.

    A model folder must hold `config.json` and safetensors weights; a Space folder (`repo_type="space"`) a README.md
    whose YAML header names the `sdk` (also used to create the Space unless `space_sdk` is given);
    `space_variables` are set on the Space after the upload (e.g. `{"MODEL": "user/clap"}` for the demo app).
    `delete_patterns` are remote files removed unless the folder has them again; for a model it defaults to the
    weights and code files (`MODEL_OWNED_PATTERNS`), so a re-push never leaves stale shards or modules behind.
    `token` defaults to the logged-in one (`HF_TOKEN`); `endpoint` to `HF_ENDPOINT` as read at import.
    """
    from huggingface_hub import HfApi, metadata_load

    folder = Path(folder)
    if space_variables and repo_type != "space":
        raise ValueError("space_variables only apply to repo_type='space'")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    if repo_type == "model":
        _check_model_folder(folder)
        if delete_patterns is None:
            delete_patterns = MODEL_OWNED_PATTERNS
    elif repo_type == "space":
        _check_space_folder(folder)
        space_sdk = space_sdk or metadata_load(folder / "README.md")["sdk"]
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk)
    info = api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        repo_type=repo_type,
        commit_message=commit_message or f"Upload {folder.name} with clapforge",
        ignore_patterns=list(ignore_patterns),
        delete_patterns=list(delete_patterns) if delete_patterns else None,
    )
    for key, value in (space_variables or {}).items():
        api.add_space_variable(repo_id, key, value)
    return info.commit_url

