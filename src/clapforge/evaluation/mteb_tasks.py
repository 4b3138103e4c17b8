"""A split of a clapforge corpus as MTEB tasks (zero-shot audio classification, text-to-audio retrieval).

Local tasks: `synthetic_tasks(corpus)` turns a split of a clapforge corpus with a labels.json (`clapforge synth`
writes one) into a zero-shot audio classification task (the class prompts of `inference.zero_shot.class_prompts`) and a
text-to-audio retrieval task (every caption a query, its own clip the one relevant document). Their audio goes to
mteb as the `datasets` Audio column mteb's own tasks have, encoded losslessly (16-bit FLAC when the samples are on
the 16-bit grid, as clapforge's shards are, else 32-bit float WAV), so mteb decodes exactly the samples
`stream_dataset` gives `evaluate_clap`. The split is held in memory while the task is loaded.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Any

from ..inference.zero_shot import class_prompts
from ..prompts import DEFAULT_PROMPT
from .mteb_model import _digest

SYNTHETIC = "synthetic"  # the `--benchmark` name of the two local tasks
ZERO_SHOT_TASK = "ClapforgeZeroShot"
T2A_TASK = "ClapforgeT2ARetrieval"


def synthetic_tasks(corpus_dir: str | os.PathLike, split: str = "test", prompt: str = DEFAULT_PROMPT) -> list[Any]:
    """[zero-shot audio classification, text-to-audio retrieval] mteb tasks on one split of a corpus folder.

    The corpus is read as `clapforge.data.labels.labelled_split` reads it (`stream_dataset` in order, labels renamed
    by labels.json), which is what `evaluate_clap` scores in `clapforge demo`:
    - zero-shot (`ClapforgeZeroShot`, main score accuracy): every clip whose first label is a class of labels.json,
      among all classes, each class's text `format_prompt(prompt, name)`;
    - text-to-audio (`ClapforgeT2ARetrieval`, type Any2AnyRetrieval, category t2a, main score hit_rate_at_5): every
      caption of every clip is a query whose one relevant document is its clip; the corpus is every clip. With one
      relevant document, mteb's recall_at_k and hit_rate_at_k are both `evaluate_clap`'s `t2a_R@k`.
    Each task's dataset revision is a digest of the split's shards and labels.json (and the prompt), so results
    name the data they were computed on.
    """
    from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, Value
    from mteb.abstasks import AbsTaskRetrieval, AbsTaskZeroShotClassification
    from mteb.abstasks.task_metadata import TaskMetadata

    from ..data.labels import labelled_split, read_labels_table

    corpus = Path(corpus_dir).expanduser().resolve()
    if not (corpus / "labels.json").is_file():
        raise FileNotFoundError(f"{corpus} has no labels.json (the class names of a `clapforge synth` corpus)")
    if not (corpus / split).is_dir():
        raise FileNotFoundError(f"{corpus} has no {split}/ split")
    class_names, _ = read_labels_table(corpus / "labels.json")
    candidates = class_prompts(class_names, prompt)
    data_digest = _corpus_digest(corpus, split)
    common = {
        "eval_splits": [split],
        "eval_langs": ["eng-Latn"],
        "modalities": ["audio", "text"],
        "annotations_creators": "derived",
        "sample_creation": "created",
        "dialect": [],
        "bibtex_citation": "",
    }

    def read() -> tuple[list[dict], Any]:
        examples, _ = labelled_split(corpus, split)
        if not examples:
            raise ValueError(f"{corpus}/{split} holds no examples")
        rates = {int(e["sampling_rate"]) for e in examples}
        if len(rates) != 1:
            raise ValueError(f"{corpus}/{split} mixes sampling rates {sorted(rates)}")
        rate = rates.pop()
        audio = [{"bytes": lossless_audio_bytes(e["audio"], rate), "path": None} for e in examples]
        return examples, (audio, Audio(sampling_rate=rate))

    class ZeroShot(AbsTaskZeroShotClassification):
        metadata = TaskMetadata(
            name=ZERO_SHOT_TASK,
            description=f"Zero-shot classification of the {split} split of the clapforge corpus {corpus}, with the "
                        f"prompt {prompt!r} and labels.json's class names.",
            dataset={"path": str(corpus), "revision": _digest(data_digest, prompt)},
            type="AudioZeroshotClassification",
            category="a2t",
            main_score="accuracy",
            **common,
        )
        input_column_name = "audio"
        label_column_name = "label"
        clapforge_local = True

        def get_candidate_labels(self) -> list[str]:  # noqa: PLR6301 -- mteb's interface
            return list(candidates)

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            examples, (audio, audio_feature) = read()
            index = {name: k for k, name in enumerate(class_names)}
            rows = [i for i, e in enumerate(examples) if e["labels"] and e["labels"][0] in index]
            if not rows:
                raise ValueError(f"no clip of {corpus}/{split} has a class of labels.json as its first label")
            features = Features({"id": Value("string"), "audio": audio_feature,
                                 "label": ClassLabel(names=list(class_names))})
            table = Dataset.from_dict({"id": [examples[i]["key"] for i in rows], "audio": [audio[i] for i in rows],
                                       "label": [index[examples[i]["labels"][0]] for i in rows]}, features=features)
            self.dataset = DatasetDict({split: table})
            self.data_loaded = True

    class TextToAudio(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=T2A_TASK,
            description=f"Text-to-audio retrieval on the {split} split of the clapforge corpus {corpus}: every "
                        "caption is a query, its clip the one relevant document, every clip the corpus.",
            dataset={"path": str(corpus), "revision": data_digest},
            type="Any2AnyRetrieval",
            category="t2a",
            main_score="hit_rate_at_5",
            **{**common, "modalities": ["text", "audio"]},
        )
        clapforge_local = True

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            examples, (audio, audio_feature) = read()
            keys = [e["key"] for e in examples]
            if len(set(keys)) != len(keys):
                raise ValueError(f"{corpus}/{split} repeats clip keys")
            ids, texts, relevant = [], [], {}
            for e in examples:
                if not e["captions"]:
                    raise ValueError(f"clip {e['key']!r} has no caption")
                for j, caption in enumerate(e["captions"]):
                    query = f"{e['key']}#{j}"
                    ids.append(query)
                    texts.append(caption)
                    relevant[query] = {e["key"]: 1}
            documents = Dataset.from_dict({"id": keys, "audio": audio},
                                          features=Features({"id": Value("string"), "audio": audio_feature}))
            queries = Dataset.from_dict({"id": ids, "text": texts})
            self.dataset = {"default": {split: {"corpus": documents, "queries": queries, "relevant_docs": relevant,
                                                "top_ranked": None}}}
            self.data_loaded = True

    return [ZeroShot(), TextToAudio()]


def lossless_audio_bytes(audio: Any, sampling_rate: int) -> bytes:
    """(T,) float audio as a file `datasets` decodes back to the same float32 samples: 16-bit FLAC when every sample
    is on the 16-bit grid (clapforge's shards), else a 32-bit float WAV."""
    import numpy as np

    from ..data.shards import encode_flac, quantize_int16

    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"expected non-empty (T,) mono audio, got shape {samples.shape}")
    if np.array_equal(quantize_int16(samples).astype(np.float32) / 32768.0, samples):
        return encode_flac(samples, sampling_rate)
    return _float_wav(samples, sampling_rate)


def _float_wav(samples: Any, sampling_rate: int) -> bytes:
    """Mono IEEE-float WAV (format tag 3), which the `wave` module cannot write."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sampling_rate, 4 * sampling_rate, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _corpus_digest(corpus: Path, split: str) -> str:
    digest = hashlib.sha256()
    for path in [corpus / "labels.json", *sorted((corpus / split).iterdir())]:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]
