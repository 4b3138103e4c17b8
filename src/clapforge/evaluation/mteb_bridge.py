"""Running a clapforge model in MTEB / MAEB, and its results as files, a table and a model-index.

    meta = model_meta("runs/demo/hub")
    results = run_mteb(meta, "MAEB", "mteb-results")      # or a task list, or synthetic_tasks(corpus)

The model side is `mteb_model.py`, the local tasks `mteb_tasks.py`.

Result files: `run_mteb` passes `mteb.ResultCache(out_dir)`, so mteb writes its own files under
`out_dir/results/<model name as path>/<revision>/<task>.json` (plus `model_meta.json`). A local folder's revision is
a digest of its weights and configuration files, so a retrained folder never reuses another one's results. mteb
reuses a cached task result whatever data it was computed on, so local tasks are always run again; named mteb tasks
resume from the cache unless `overwrite=True`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..prompts import DEFAULT_PROMPT
from .mteb_model import model_meta
from .mteb_tasks import SYNTHETIC, T2A_TASK, ZERO_SHOT_TASK, synthetic_tasks

MTEB_URL = "https://github.com/embeddings-benchmark/mteb"
# Reported in the model-index besides each task's main score, when a task has them.
MODEL_INDEX_METRICS = ("recall_at_1", "recall_at_5", "recall_at_10", "ndcg_at_10", "accuracy", "f1", "v_measure")


def resolve_tasks(
    benchmark: str | Any, data: str | os.PathLike | None = None, split: str = "test", prompt: str = DEFAULT_PROMPT
) -> list[Any]:
    """The mteb tasks of `benchmark`: "synthetic" (the two local tasks on `data`), a named mteb benchmark ("MAEB",
    `mteb.get_benchmark`), a comma-separated list of mteb task names (`mteb.get_tasks`), or tasks as they are."""
    import mteb

    if not isinstance(benchmark, str):
        tasks = list(benchmark.tasks) if hasattr(benchmark, "tasks") else list(benchmark)
        return tasks
    if benchmark.strip().lower() == SYNTHETIC:
        if data is None:
            raise ValueError("the synthetic benchmark needs --data: a clapforge corpus folder (`clapforge synth`)")
        return synthetic_tasks(data, split=split, prompt=prompt)
    try:
        return list(mteb.get_benchmark(benchmark.strip()).tasks)
    except KeyError:
        pass
    names = [name.strip() for name in benchmark.split(",") if name.strip()]
    try:
        return list(mteb.get_tasks(tasks=names))
    except KeyError as error:
        raise ValueError(f"{benchmark!r} is neither an mteb benchmark nor a list of mteb task names "
                         f"({error.args[0] if error.args else error})") from None


def run_mteb(
    model: str | os.PathLike | Any,
    tasks_or_benchmark: str | Any,
    out_dir: str | os.PathLike | None = None,
    *,
    batch_size: int = 16,
    data: str | os.PathLike | None = None,
    split: str = "test",
    prompt: str = DEFAULT_PROMPT,
    device: str | None = None,
    overwrite: bool = False,
    prediction_folder: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run mteb on a clapforge model; mteb's result files go under `out_dir` (default: mteb's own cache, `MTEB_CACHE`
    or ~/.cache/mteb). Returns the summary `summarize` makes.

    `model` is a folder, a Hub id or a `model_meta(...)`; `tasks_or_benchmark` anything `resolve_tasks` takes
    (`data`, `split` and `prompt` are the synthetic tasks'). Local tasks always run; named mteb tasks resume from
    the cache unless `overwrite`. With `prediction_folder`, mteb also saves each task's predictions there
    (`<task>_predictions.json`: a zero-shot task's clip-by-class similarities, a retrieval task's ranked documents
    and scores per query). A task that fails raises.
    """
    import mteb
    from mteb.models import ModelMeta

    tasks = resolve_tasks(tasks_or_benchmark, data=data, split=split, prompt=prompt)
    meta = model if isinstance(model, ModelMeta) else model_meta(model, device=device)
    cache = mteb.ResultCache(out_dir) if out_dir is not None else mteb.ResultCache()
    encode_kwargs = {"batch_size": batch_size, "show_progress_bar": progress}
    local = [t for t in tasks if getattr(t, "clapforge_local", False)]
    named = [t for t in tasks if not getattr(t, "clapforge_local", False)]
    task_results = []
    for group, strategy in ((named, "always" if overwrite else "only-missing"), (local, "always")):
        if group:
            result = mteb.evaluate(meta, tasks=group, cache=cache, co2_tracker=False, encode_kwargs=encode_kwargs,
                                   overwrite_strategy=strategy, show_progress_bar=progress,
                                   prediction_folder=prediction_folder)
            task_results.extend(result.task_results)
    return summarize(task_results, tasks, meta, cache)


def summarize(task_results: Iterable[Any], tasks: Iterable[Any], meta: Any, cache: Any | None = None) -> dict:
    """A JSON-ready summary of mteb TaskResults: per task its type, data, main score and every numeric score by
    split and subset, and where mteb wrote its result file. `model_index_from_mteb` reads it."""
    import mteb

    by_name = {t.metadata.name: t for t in tasks}
    summary: dict[str, Any] = {"model": meta.name, "revision": meta.revision, "mteb_version": mteb.__version__,
                               "tasks": {}}
    if cache is not None:
        summary["results_dir"] = str(Path(cache.get_task_result_path("TASK", meta)).parent)
    for result in task_results:
        task = by_name.get(result.task_name)
        metadata = task.metadata if task is not None else _registered_metadata(result.task_name)
        scores = {split: {entry["hf_subset"]: {k: v for k, v in entry.items() if _is_number(v)} for entry in entries}
                  for split, entries in result.scores.items()}
        mains = [entry["main_score"] for entries in result.scores.values() for entry in entries]
        summary["tasks"][result.task_name] = {
            "type": metadata.type if metadata else None,
            "category": metadata.category if metadata else None,
            "hf_task_type": _hub_task_type(metadata),
            "dataset": metadata.dataset["path"] if metadata else result.task_name,
            "dataset_revision": result.dataset_revision,
            "main_score_name": metadata.main_score if metadata else "main_score",
            "main_score": sum(mains) / len(mains) if mains else None,
            "scores": scores,
            **({"result_file": str(cache.get_task_result_path(result.task_name, meta))} if cache is not None else {}),
        }
    return summary


def model_index_from_mteb(
    results: Mapping[str, Any] | Any, model_name: str, tasks: Iterable[Any] = ()
) -> list[dict[str, Any]]:
    """The Hub `model-index` entries of mteb results (a `run_mteb` summary, or an `mteb.ModelResult` with the tasks
    it ran when they are not registered in mteb, as the local tasks are not).

    One result per task, split and subset, its dataset the task's (a Hub dataset id, or a local corpus' path) at its
    revision, its metrics the task's main score then those of MODEL_INDEX_METRICS the task has; the source is MTEB.
    Built with huggingface_hub's `EvalResult` / `ModelCardData` and parsed back, as `clapforge.hub.model_card` does.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    if not isinstance(results, Mapping):  # an mteb ModelResult
        from mteb.models import ModelMeta

        results = summarize(results.task_results, tasks, ModelMeta.create_empty(
            overwrites={"name": results.model_name or "unknown/model", "revision": results.model_revision}))
    eval_results = []
    for task_name, task in results["tasks"].items():
        main = task["main_score_name"]
        for split, subsets in task["scores"].items():
            for subset, scores in subsets.items():
                keys = [main] + [k for k in MODEL_INDEX_METRICS if k != main and k in scores]
                if "recall_at_1" in scores:  # a retrieval task's accuracy is its recall_at_1 again
                    keys = [k for k in keys if k != "accuracy" or k == main]
                for key in keys:
                    if key not in scores:
                        continue
                    eval_results.append(EvalResult(
                        task_type=task["hf_task_type"],
                        task_name=task["type"] or task["hf_task_type"],
                        dataset_type=task["dataset"],
                        dataset_name=task_name if subset == "default" else f"{task_name} ({subset})",
                        dataset_config=None if subset == "default" else subset,
                        dataset_split=split,
                        dataset_revision=task["dataset_revision"],
                        metric_type=key,
                        metric_name=key.replace("_at_", "@"),
                        metric_value=float(scores[key]),
                        source_name="MTEB",
                        source_url=MTEB_URL,
                    ))
    if not eval_results:
        return []
    card = f"---\n{ModelCardData(model_name=model_name, eval_results=eval_results).to_yaml()}\n---\n"
    return ModelCard(card).data.to_dict()["model-index"]


def markdown_summary(summary: Mapping[str, Any], digits: int = 2) -> str:
    """A markdown table of a `run_mteb` summary: one row per task, split and subset, main score in %."""
    lines = [f"MTEB results of {summary.get('model_name') or summary['model']} (revision {summary['revision']})", "",
             "| task | split | subset | main score | value (%) |", "|---|---|---|---|---:|"]
    for name, task in summary["tasks"].items():
        for split, subsets in task["scores"].items():
            for subset, scores in subsets.items():
                value = scores.get(task["main_score_name"], scores.get("main_score"))
                lines.append(f"| {name} | {split} | {subset} | {task['main_score_name']} | {100 * value:.{digits}f} |")
    return "\n".join(lines) + "\n"


def write_mteb_results(summary: Mapping[str, Any], out: str | os.PathLike, model_name: str) -> dict[str, Path]:
    """Write `out` (the summary JSON), `<stem>.md` and `<stem>.model-index.yaml` beside it; returns the paths."""
    from .tasks import write_result_files

    return write_result_files(out, summary, markdown_summary(summary), model_index_from_mteb(summary, model_name))


def _registered_metadata(task_name: str) -> Any:
    import mteb

    try:
        return mteb.get_task(task_name).metadata
    except KeyError:
        return None


def _hub_task_type(metadata: Any) -> str:
    """The Hub task type: clapforge's own for zero-shot audio classification and audio-text retrieval, else mteb's."""
    from ..hub import RETRIEVAL_TASK, ZERO_SHOT_TASK

    if metadata is None:
        return "other"
    if metadata.type == "AudioZeroshotClassification":
        return ZERO_SHOT_TASK[0]
    if metadata.category in ("t2a", "a2t") and "Retrieval" in metadata.type:
        return RETRIEVAL_TASK[0]
    try:
        return metadata._hf_task_type()[0]  # mteb's own mapping (private; absent in other versions)
    except (AttributeError, IndexError, KeyError):
        return "other"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


__all__ = ["MODEL_INDEX_METRICS", "SYNTHETIC", "T2A_TASK", "ZERO_SHOT_TASK", "markdown_summary",
           "model_index_from_mteb", "model_meta", "resolve_tasks", "run_mteb", "summarize", "synthetic_tasks",
           "write_mteb_results"]
