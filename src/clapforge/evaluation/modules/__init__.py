"""`evaluate` modules for clapforge's metrics, one folder each (package data): `clap_retrieval`, `clap_zero_shot`.

`evaluate.load(module_path("clap_retrieval"))` loads one offline (set `HF_EVALUATE_OFFLINE=1` to be sure nothing is
fetched). evaluate copies the module into `HF_MODULES_CACHE` and keeps its inputs in an Arrow cache under
`HF_HOME` unless `keep_in_memory=True`.
"""

from pathlib import Path

MODULES = ("clap_retrieval", "clap_zero_shot")


def module_path(name: str) -> str:
    """The absolute folder of the evaluate module `name`, for `evaluate.load`."""
    if name not in MODULES:
        raise ValueError(f"unknown module {name!r}: expected one of {MODULES}")
    return str(Path(__file__).parent / name)


__all__ = ["MODULES", "module_path"]
