"""A clapforge model folder described for MTEB / MAEB (`mteb.ModelMeta`).

How a model reaches mteb: `model_meta(folder_or_hub_id)` describes it as an `mteb.ModelMeta` whose loader is mteb's own
`SentenceTransformerEncoderWrapper` (every clapforge model folder is also a sentence-transformers folder), with
modalities audio and text. Always hand mteb that ModelMeta, never a bare `SentenceTransformer` or a name: without it
mteb assumes a text-only model and refuses the audio tasks.

    meta = model_meta("runs/demo/hub")
    results = run_mteb(meta, "MAEB", "mteb-results")      # or a task list, or synthetic_tasks(corpus)

No wrapper of our own. mteb's sentence-transformers wrapper serves audio correctly once the ModelMeta sets it up
(checked against mteb 2.26 and sentence-transformers 6.3; the tests compare the scores with `evaluate_clap`'s):
- batches: the wrapper gives sentence-transformers one dict per row holding only the modalities the row has. Audio
  and text are encoded in separate calls (queries and corpus of a retrieval task, samples and candidate labels of a
  zero-shot task); a row holding both would be refused by sentence-transformers ("cannot combine them in a single
  input"), never summed, unlike mteb's own CLAP wrapper.
- rate: mteb's `AudioCollator` resamples every clip to the wrapper's `target_sampling_rate`, 16 kHz unless told
  otherwise. `loader_kwargs` sets it to the folder's feature-extractor rate (48 kHz), so a 48 kHz clip reaches our
  feature extractor untouched, and a clip at another rate is resampled once, by torchaudio's windowed sinc (the
  resampler our feature extractor uses itself). The collator averages channels, as clapforge's decoder does.
- length: `max_samples` is left unset, so the collator never truncates: a long clip reaches the feature extractor
  whole and gets clapforge's long-audio handling (fusion, or the deterministic centred crop).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_CONFIG_FILES = ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer.json",
                 "tokenizer_config.json", "modules.json", "sentence_bert_config.json",
                 "config_sentence_transformers.json")


def model_meta(
    model: str | os.PathLike,
    *,
    revision: str | None = None,
    languages: Sequence[str] | None = ("eng-Latn",),
    license: str | None = None,
    release_date: str | None = None,
    training_datasets: Iterable[str] | None = None,
    public_training_code: str | None = None,
    public_training_data: str | None = None,
    device: str | None = None,
) -> Any:
    """The `mteb.ModelMeta` of a clapforge model folder or Hub id (see the module docstring).

    Read from the folder (a Hub id is fetched with `snapshot_download`, as sentence-transformers would): `embed_dim`
    is config.json's `projection_dim`, `max_tokens` sentence_bert_config.json's `max_seq_length`, `n_parameters`
    and `memory_usage_mb` the element and byte counts of the safetensors files (registered buffers included), the
    loader's `target_sampling_rate` the feature extractor's `sampling_rate`. A local folder is named by its absolute
    path (mteb passes the name to the loader), its revision is a digest of its files and its release date the day its
    weights were written; a Hub model's revision is the commit fetched. `license` defaults to the model card's.
    """
    from mteb.models import ModelMeta
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    path = Path(model).expanduser()
    local = path.is_dir()
    if local:
        folder = path.resolve()
        name, reference = str(folder), None
        revision = revision or folder_digest(folder)
    else:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(model), revision=revision))
        name, reference = str(model), f"https://huggingface.co/{model}"
        revision = folder.name  # the snapshot folder is named by its commit
    if not (folder / "modules.json").is_file():
        raise ValueError(f"{model} has no sentence-transformers configuration (modules.json); save it again with "
                         "this clapforge (`LaionClapModel.save_pretrained` writes it)")
    config = _read_json(folder / "config.json")
    st_file = folder / "sentence_bert_config.json"
    st_config = _read_json(st_file) if st_file.is_file() else {}
    n_parameters, n_bytes = safetensors_size(folder)
    if local and release_date is None:
        written = max(p.stat().st_mtime for p in folder.glob("*.safetensors"))
        release_date = datetime.fromtimestamp(written, UTC).date().isoformat()
    return ModelMeta(
        loader=SentenceTransformerEncoderWrapper,
        # No max_samples: the collator must not truncate long clips (module docstring).
        loader_kwargs={"trust_remote_code": True, "target_sampling_rate": feature_sampling_rate(folder),
                       "local_files_only": local, **({"device": device} if device else {})},
        name=name,
        revision=revision,
        release_date=release_date,
        languages=list(languages) if languages is not None else None,
        n_parameters=n_parameters,
        memory_usage_mb=round(n_bytes / 2**20, 2),
        max_tokens=st_config.get("max_seq_length"),
        embed_dim=config["projection_dim"],
        license=license if license is not None else _card_license(folder),
        open_weights=True,
        public_training_code=public_training_code,
        public_training_data=public_training_data,
        framework=["Sentence Transformers", "PyTorch", "safetensors"],
        reference=reference,
        similarity_fn_name="cosine",
        use_instructions=False,
        training_datasets=set(training_datasets) if training_datasets is not None else None,
        modalities=["audio", "text"],
    )


def feature_sampling_rate(folder: str | os.PathLike) -> int:
    """The feature extractor's `sampling_rate`, from processor_config.json (transformers 5) or
    preprocessor_config.json."""
    folder = Path(folder)
    processor = folder / "processor_config.json"
    if processor.is_file() and "sampling_rate" in _read_json(processor).get("feature_extractor", {}):
        return int(_read_json(processor)["feature_extractor"]["sampling_rate"])
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file() and "sampling_rate" in _read_json(preprocessor):
        return int(_read_json(preprocessor)["sampling_rate"])
    raise ValueError(f"{folder} has no feature extractor configuration (processor_config.json or "
                     "preprocessor_config.json with a sampling_rate)")


def safetensors_size(folder: str | os.PathLike) -> tuple[int, int]:
    """(elements, bytes) of every tensor in the folder's safetensors files, read from their headers alone."""
    elements = size = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for key, entry in header.items():
            if key != "__metadata__":
                elements += math.prod(entry["shape"])
                size += entry["data_offsets"][1] - entry["data_offsets"][0]
    if not size:
        raise ValueError(f"{folder} holds no safetensors weights")
    return elements, size


def folder_digest(folder: str | os.PathLike, length: int = 16) -> str:
    """A digest of a model folder's weights and configuration files: its mteb revision."""
    digest = hashlib.sha256()
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) + [folder / n for n in _CONFIG_FILES if (folder / n).is_file()]
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(2**24), b""):  # noqa: B023 -- f is the loop's own file
                digest.update(block)
    return digest.hexdigest()[:length]


def _card_license(folder: Path) -> str | None:
    card = folder / "README.md"
    if not card.is_file():
        return None
    from huggingface_hub import ModelCard

    return ModelCard.load(card).data.to_dict().get("license")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
