"""Plain-text output of the commands: tables padded to their widest cell, times as minutes:seconds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: columns padded to their widest cell, numbers right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[c]) for row in cells]) for c, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(row[c], int | float) for row in rows) for c in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(row) for row in cells]).rstrip()


def format_seconds(value: float) -> str:
    """m:ss.ss, e.g. 1:05.20."""
    minutes, seconds = divmod(value, 60)
    return f"{int(minutes)}:{seconds:05.2f}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
