"""A corpus' labels.json (as `clapforge synth` writes it): the zero-shot class names, and the renaming of each
example's raw labels to them. Zero-shot evaluation, training validation and the MTEB tasks all read it here.

labels.json: {"classes": [raw label, ...] (the class index order), "labels": {raw label: class name}, ...}.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_labels_table(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """(the class names in index order, {raw label: class name}) of a labels.json; a label without a name keeps its
    raw form."""
    table = json.loads(Path(path).read_text(encoding="utf-8"))
    names = dict(table.get("labels", {}))
    return [names.get(c, c) for c in table["classes"]], names


def rename_labels(examples: list[dict], names: dict[str, str]) -> None:
    """Each example's `labels` renamed to their class names, in place."""
    for example in examples:
        example["labels"] = [names.get(label, label) for label in example["labels"]]


def labelled_split(corpus: str | Path, split: str = "test") -> tuple[list[dict], list[str]]:
    """A split of a corpus with a labels.json, read in order with `stream_dataset`, labels renamed to their class
    names; and the class names in index order."""
    from .stream import stream_dataset

    class_names, names = read_labels_table(Path(corpus) / "labels.json")
    examples = list(stream_dataset(str(corpus), split=split, shuffle=False))
    rename_labels(examples, names)
    return examples, class_names
