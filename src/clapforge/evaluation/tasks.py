"""Run a benchmark the way the paper reports it, and write its results: JSON, a paper-style table, a model-index.

Shapes: N clips, N_t captions, K classes, P prompt templates, E joint embedding.

Audio is decoded with `clapforge.data.shards.decode_audio` (48 kHz mono, the channel mean) in DataLoader workers,
in clip order; a clip that does not decode (missing, empty, corrupt) is logged, skipped and listed in the results.
Embedding goes through an `EmbeddingEngine` (eval mode, the feature extractor's deterministic crop or fusion views,
so scores are reproducible; fp32 unless the caller passes an engine at another precision), class embeddings through
`inference.zero_shot`, scoring through `metrics.py`.

Zero-shot classification: a class's text embedding is the mean of the L2-normalised embeddings of its prompts, one
per template (the prompt ensembling of CLIP, Radford et al. 2021, sec. 3.1.4); with one template that is just its
embedding. Top-1 and top-5 accuracy over every clip read (or one fold's); without `--fold` the per-fold accuracies
are reported as well (with equal folds their mean equals the all-clips number).

Retrieval (AudioCaps, Clotho): every caption of every clip is a text->audio query; every clip is an audio->text
query whose relevant items are all its captions (R@k: any of them ranked < k); mAP@10 as in `retrieval_metrics`,
audio->text either `sorted` (correct AP, default) or `laion` (LAION-CLAP's published value); the report carries the
other variant's value too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..data.benchmark_sets import RETRIEVAL, ZERO_SHOT, Benchmark
from ..data.shards import SAMPLE_RATE, decode_audio
from ..inference.engine import EmbeddingEngine, as_engine
from ..inference.zero_shot import class_embeddings as engine_class_embeddings
from ..prompts import DEFAULT_PROMPT
from .metrics import A2T_MAP_VARIANTS, chance_levels, retrieval_metrics, zero_shot_accuracy

logger = logging.getLogger(__name__)

RETRIEVAL_KS = (1, 5, 10)
ZERO_SHOT_KS = (1, 5)
MAP_K = 10


class DecodedClips(torch.utils.data.Dataset):
    """Item i -> (i, (T,) float32 mono at `sample_rate` or None, why it is None or None). Never raises."""

    def __init__(self, benchmark: Benchmark, sample_rate: int = SAMPLE_RATE) -> None:
        self.clips = benchmark.clips
        self.table = benchmark.table
        self.audio_column = benchmark.audio_column
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        clip = self.clips[i]
        try:
            if clip.audio is None:
                raise FileNotFoundError(clip.missing or "no audio")
            source = clip.audio if isinstance(clip.audio, str) else self._row_audio(clip.audio)
            return i, decode_audio(source, self.sample_rate), None
        except Exception as error:  # one bad file must not end a long evaluation: it is reported and skipped
            return i, None, f"{type(error).__name__}: {error}"

    def _row_audio(self, row: int) -> bytes | str:
        value = self.table[row][self.audio_column]
        if isinstance(value, dict):
            if value.get("bytes"):
                return value["bytes"]
            if value.get("path"):
                return value["path"]
        elif isinstance(value, bytes | str):
            return value
        raise ValueError(f"row {row} has no audio in column {self.audio_column!r}")


def embed_benchmark_audio(
    model: torch.nn.Module | EmbeddingEngine,
    processor: Any,
    benchmark: Benchmark,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, list[int], list[dict[str, str]]]:
    """(N', E) embeddings of the clips that decode, their indices into `benchmark.clips`, and the skipped clips."""
    from tqdm.auto import tqdm

    engine = as_engine(model, processor)
    sample_rate = getattr(engine.feature_extractor, "sampling_rate", SAMPLE_RATE)
    loader = torch.utils.data.DataLoader(
        DecodedClips(benchmark, sample_rate), batch_size=batch_size, num_workers=num_workers, collate_fn=list
    )
    kept: list[int] = []
    skipped: list[dict[str, str]] = []

    def decoded() -> Iterator[Any]:
        bar = tqdm(total=len(benchmark.clips), unit="clip", desc=f"{benchmark.dataset} audio", disable=not progress)
        with bar:
            for batch in loader:
                for i, audio, reason in batch:
                    if audio is None:
                        clip = benchmark.clips[i]
                        logger.warning("skipped %s: %s", clip.key, reason)
                        skipped.append({"key": clip.key, "audio": str(clip.audio), "reason": reason})
                    else:
                        kept.append(i)
                        yield audio
                bar.update(len(batch))

    embeds = engine.embed_audio(decoded(), sample_rate, batch_size)  # (N', E)
    if not kept:
        raise ValueError(f"no clip of {benchmark.dataset} could be decoded ({len(skipped)} skipped; first: "
                         f"{skipped[0]['reason'] if skipped else 'none listed'})")
    return embeds, kept, skipped


def class_embeddings(
    model: torch.nn.Module | EmbeddingEngine,
    processor: Any,
    class_names: Sequence[str],
    prompts: Sequence[str],
    batch_size: int = 64,
) -> torch.Tensor:
    """(K, E) one L2-normalised text embedding per class: `inference.zero_shot.class_embeddings` (the mean over
    templates of the normalised prompts) of an engine, or of a model at fp32."""
    return engine_class_embeddings(as_engine(model, processor), class_names, prompts, batch_size)


def run_benchmark(
    model: torch.nn.Module | EmbeddingEngine,
    processor: Any,
    benchmark: Benchmark,
    *,
    model_name: str = "model",
    prompts: Sequence[str] = (DEFAULT_PROMPT,),
    a2t_map: str = "sorted",
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed and score `benchmark`; returns the results dict that `write_results` saves (see `results_json`)."""
    if a2t_map not in A2T_MAP_VARIANTS:
        raise ValueError(f"a2t_map must be one of {A2T_MAP_VARIANTS}, got {a2t_map!r}")
    engine = as_engine(model, processor)
    audio, kept, skipped = embed_benchmark_audio(engine, None, benchmark, batch_size, num_workers, progress)
    clips = [benchmark.clips[i] for i in kept]
    results: dict[str, Any] = {
        "model": model_name,
        "task": benchmark.task,
        "kind": benchmark.kind,
        "dataset": benchmark.dataset,
        "data": benchmark.data,
        "split": benchmark.split,
        "fold": benchmark.fold,
    }
    n = {"listed": len(benchmark.clips), "clips": len(clips), "skipped": len(skipped)}
    protocol: dict[str, Any] = {"sample_rate": SAMPLE_RATE, "channels": "mono (mean of channels)",
                                "long_audio": _long_audio_policy(engine), "precision": engine.precision}
    if benchmark.kind == ZERO_SHOT:
        prompts = list(prompts) or [DEFAULT_PROMPT]
        names = benchmark.class_names or []
        index = {name: k for k, name in enumerate(names)}
        unknown = sorted({c.label for c in clips if c.label not in index})
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not among the {len(names)} class names")
        targets = torch.tensor([index[c.label] for c in clips])  # (N',)
        classes = engine_class_embeddings(engine, names, prompts, max(batch_size, 64))  # (K, E)
        scores = {f"zero_shot_{k}": v for k, v in zero_shot_accuracy(audio, classes, targets, ZERO_SHOT_KS).items()}
        chance_ks = chance_levels(n_classes=len(names), zero_shot_ks=ZERO_SHOT_KS)
        chance = {f"zero_shot_{k}": v for k, v in chance_ks.items()}
        n["classes"] = len(names)
        protocol.update({"prompts": prompts, "prompt_ensemble": "mean of L2-normalised prompt embeddings per class"
                         if len(prompts) > 1 else "single prompt", "class_names": names, "top_k": list(ZERO_SHOT_KS)})
        folds = sorted({c.fold for c in clips if c.fold is not None})
        if benchmark.fold is None and len(folds) > 1:
            results["per_fold"] = {}
            for fold in folds:
                rows = torch.tensor([i for i, c in enumerate(clips) if c.fold == fold])
                fold_scores = zero_shot_accuracy(audio[rows.to(audio.device)], classes, targets[rows], ZERO_SHOT_KS)
                results["per_fold"][str(fold)] = {**{f"zero_shot_{k}": v for k, v in fold_scores.items()},
                                                  "n_clips": len(rows)}
    elif benchmark.kind == RETRIEVAL:
        captionless = [c.key for c in clips if not c.captions]
        if captionless:
            raise ValueError(f"{len(captionless)} clips have no caption, e.g. {captionless[0]!r}")
        captions = [text for c in clips for text in c.captions]
        text_to_audio = torch.tensor([i for i, c in enumerate(clips) for _ in c.captions])  # (N_t,)
        text = engine.embed_text(captions, max(batch_size, 64))  # (N_t, E)
        scores = retrieval_metrics(audio, text, text_to_audio, RETRIEVAL_KS, MAP_K, a2t_map=a2t_map)
        other = next(v for v in A2T_MAP_VARIANTS if v != a2t_map)
        other_value = retrieval_metrics(audio, text, text_to_audio, RETRIEVAL_KS, MAP_K, a2t_map=other)
        chance = chance_levels(text_to_audio=text_to_audio, n_audio=len(clips), ks=RETRIEVAL_KS, map_k=MAP_K)
        if a2t_map != "sorted":
            del chance[f"a2t_mAP@{MAP_K}"]  # chance_levels gives the sorted AP's; LAION's variant has none
        n["captions"] = len(captions)
        per_clip = sorted({len(c.captions) for c in clips})
        protocol.update({
            "a2t_map": a2t_map,
            "a2t_map_other": {other: other_value[f"a2t_mAP@{MAP_K}"]},
            "captions_per_clip": per_clip[0] if len(per_clip) == 1 else per_clip,
            "t2a": "every caption is a query; one relevant clip",
            "a2t": "every clip is a query; relevant: all its captions; R@k if any ranks < k",
            "ks": list(RETRIEVAL_KS),
            "map_k": MAP_K,
        })
    else:
        raise ValueError(f"unknown benchmark kind {benchmark.kind!r}")
    results.update({"metrics": scores, "chance": chance, "n": n, "protocol": protocol, "skipped": skipped})
    results["clapforge_version"] = version("clapforge")
    return results


def _long_audio_policy(engine: EmbeddingEngine) -> str:
    fe = engine.feature_extractor
    fusion = " with fusion" if getattr(engine.config, "enable_fusion", False) else ""
    return (f"{getattr(fe, 'max_length_s', 10)} s input{fusion}; truncation {getattr(fe, 'truncation', '?')} "
            f"(deterministic, no random crop), padding {getattr(fe, 'padding', '?')}")


# ---------------------------------------------------------------------------------------------------- reports

_RETRIEVAL_COLUMNS = [(f"{d}_{m}", f"{arrow} {m}") for d, arrow in (("t2a", "T→A"), ("a2t", "A→T"))
                      for m in (*(f"R@{k}" for k in RETRIEVAL_KS), f"mAP@{MAP_K}")]


def dataset_label(results: Mapping[str, Any]) -> str:
    """"ESC-50", "ESC-50 fold 1", "AudioCaps test"."""
    label = results["dataset"]
    if results.get("fold") is not None:
        label += f" fold {results['fold']}"
    if results.get("kind") == RETRIEVAL and results.get("split"):
        label += f" {results['split']}"
    return label


def markdown_table(results: Mapping[str, Any] | Sequence[Mapping[str, Any]], digits: int = 1) -> str:
    """Paper-style markdown tables (values in %) for one or several results dicts.

    Zero-shot (the paper's Table 4): rows are models, columns datasets, top-1 accuracy; then the same for top-5.
    Retrieval (Table 3): one table per dataset, rows models, columns T→A R@1/R@5/R@10/mAP@10 then A→T.
    Each table is followed by the clip counts and protocol it was computed with.
    """
    runs = [results] if isinstance(results, Mapping) else list(results)
    parts = []
    zero_shot = [r for r in runs if r["kind"] == ZERO_SHOT]
    if zero_shot:
        datasets = list(dict.fromkeys(dataset_label(r) for r in zero_shot))
        models = list(dict.fromkeys(r["model"] for r in zero_shot))
        cells = {(r["model"], dataset_label(r)): r for r in zero_shot}
        for k in ZERO_SHOT_KS:
            key = f"zero_shot_top{k}"
            if not any(key in r["metrics"] for r in zero_shot):
                continue
            lines = [f"| Model | {' | '.join(datasets)} |", "|---|" + "---:|" * len(datasets)]
            for model in models:
                values = [_pct(cells[(model, d)]["metrics"].get(key), digits) if (model, d) in cells else "–"
                          for d in datasets]
                lines.append(f"| {model} | {' | '.join(values)} |")
            parts.append(f"Zero-shot classification, top-{k} accuracy (%)\n\n" + "\n".join(lines))
        notes = [f"{dataset_label(r)}: {r['n']['clips']} clips, {r['n']['classes']} classes"
                 + (f", {r['n']['skipped']} skipped" if r["n"]["skipped"] else "")
                 + f"; prompts {', '.join(repr(p) for p in r['protocol']['prompts'])}" for r in _unique(zero_shot)]
        parts.append("\n".join(f"- {note}" for note in notes))
    retrieval = [r for r in runs if r["kind"] == RETRIEVAL]
    for dataset in dict.fromkeys(dataset_label(r) for r in retrieval):
        rows = [r for r in retrieval if dataset_label(r) == dataset]
        lines = ["| Model | " + " | ".join(title for _, title in _RETRIEVAL_COLUMNS) + " |",
                 "|---|" + "---:|" * len(_RETRIEVAL_COLUMNS)]
        for r in rows:
            lines.append(f"| {r['model']} | " + " | ".join(_pct(r["metrics"].get(key), digits)
                                                         for key, _ in _RETRIEVAL_COLUMNS) + " |")
        first = rows[0]
        note = (f"{first['n']['clips']} clips, {first['n']['captions']} captions"
                + (f", {first['n']['skipped']} skipped" if first["n"]["skipped"] else "")
                + f"; A→T mAP@{MAP_K}: {first['protocol']['a2t_map']}")
        parts.append(f"{dataset} retrieval (%)\n\n" + "\n".join(lines) + f"\n\n- {note}")
    return "\n\n".join(parts) + "\n"


def _unique(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    seen, out = set(), []
    for r in runs:
        if dataset_label(r) not in seen:
            seen.add(dataset_label(r))
            out.append(r)
    return out


def _pct(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def model_index(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `model-index` entries of a model card for these results, built by `clapforge.hub.model_card`.

    The card is built and parsed back (so the entries are what huggingface_hub validates); the scores go under
    `zero-shot-audio-classification` or `audio-text-retrieval`, against the dataset as the tables name it (with its
    fold), its type the task name (or the `datasets` source), its split the benchmark's split, fold or "all". A
    LAION-variant audio->text mAP is typed `a2t_mAP@10_laion`, so that it is never read as the correct one.
    """
    from huggingface_hub import ModelCard

    from ..hub import model_card

    scores = dict(results["metrics"])
    if results.get("protocol", {}).get("a2t_map") == "laion":
        scores = {(f"{key}_laion" if key.startswith("a2t_mAP@") else key): value for key, value in scores.items()}
    metrics = {**scores, **{f"chance/{k}": v for k, v in results["chance"].items()},
               **{f"n_{k}": v for k, v in results["n"].items()}}
    split = results.get("split") or (f"fold {results['fold']}" if results.get("fold") is not None else "all")
    name = results["dataset"] + (f" fold {results['fold']}" if results.get("fold") is not None else "")
    dataset_type = results["data"] if results["task"] == ZERO_SHOT else results["task"]
    card = model_card(results["model"], metrics=metrics, dataset_name=name, dataset_type=dataset_type,
                      dataset_split=str(split))
    return ModelCard(card).data.to_dict()["model-index"]


def write_results(results: Mapping[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """Write `out` (JSON), `<stem>.md` (the table) and `<stem>.model-index.yaml` beside it; returns the paths."""
    return write_result_files(out, results, markdown_table(results), model_index(results))


def write_result_files(
    out: str | os.PathLike, results: Mapping[str, Any], markdown: str, model_index_entries: list[dict[str, Any]]
) -> dict[str, Path]:
    """The layout every `clapforge eval --out` writes (and `push --results` reads): `out` (the results JSON),
    `<stem>.md` and `<stem>.model-index.yaml` beside it, each atomically; returns the paths."""
    import yaml

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": out, "markdown": out.with_suffix(".md"), "model_index": out.with_suffix(".model-index.yaml")}
    atomic_write_json(paths["json"], results, indent=2)
    atomic_write_text(paths["markdown"], markdown)
    block = yaml.safe_dump({"model-index": model_index_entries}, sort_keys=False, allow_unicode=True)
    atomic_write_text(paths["model_index"], block)
    return paths


__all__ = ["DecodedClips", "class_embeddings", "embed_benchmark_audio", "markdown_table", "model_index",
           "run_benchmark", "write_result_files", "write_results"]
