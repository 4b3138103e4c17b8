"""Bring checkpoints in and out of clapforge.

In: a LAION-CLAP `.pt` as released (`{"state_dict": {"module.…": …}, …}`), or a transformers `ClapModel` folder
(the `laion/clap-htsat-fused` layout). Out: a Hub-ready clapforge folder, or (`to="transformers"`) a folder that
transformers' own `ClapModel` loads.

The architecture is always read from the tensors (LAION) or the config (transformers), never from a name the user
gives: naming the wrong model is how LAION's users meet size-mismatch errors.
"""

import json
from pathlib import Path

import torch

from ..atomic import atomic_write_json
from ..modeling_clap.configuration_laion_clap import LaionClapConfig
from ..modeling_clap.modeling_laion_clap import LaionClapModel
from .common import ConversionReport, load_converted
from .laion import LAION_TOKENIZERS, laion_to_clapforge, load_laion_state_dict
from .transformers_format import (
    clapforge_to_transformers_config,
    read_folder_state,
    to_transformers_model,
    transformers_config_to_clapforge,
    transformers_state_to_clapforge,
    write_transformers_folder,
)


def load_source(src: str | Path) -> tuple[LaionClapModel, ConversionReport, Path | None]:
    """A clapforge model from a LAION `.pt` file or a transformers CLAP folder, its report, and its tokenizer folder."""
    src = Path(src)
    if src.is_dir():
        config_file = src / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{src} is a folder without config.json: expected a transformers ClapModel folder")
        hf = json.loads(config_file.read_text())
        if hf.get("model_type") == LaionClapConfig.model_type:
            raise ValueError(f"{src} is already a clapforge model folder: nothing to convert (load it as it is; "
                             "`--to transformers` writes it for transformers' ClapModel)")
        if hf.get("model_type") != "clap":
            raise ValueError(f"{src}/config.json has model_type {hf.get('model_type')!r}; expected 'clap'")
        config = transformers_config_to_clapforge(hf)
        state, dropped = transformers_state_to_clapforge(read_folder_state(src))
        tokenizer_dir = _tokenizer_dir(src)
        report = ConversionReport(str(src), "transformers", config.to_dict(), dropped)
        return load_converted(config, state), report, tokenizer_dir
    config, state, dropped = laion_to_clapforge(load_laion_state_dict(src))
    return load_converted(config, state), ConversionReport(str(src), "laion", config.to_dict(), dropped), None


def _tokenizer_dir(folder: Path) -> Path | None:
    return folder if any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")) else None


def _missing_tokenizer_message(src: Path, config: LaionClapConfig) -> str:
    text_type = config.text_config.model_type
    suggestion = LAION_TOKENIZERS.get(text_type, "<the text tower's tokenizer>")
    return (
        f"{src} carries no tokenizer, and a model folder without one cannot embed text (no text search, zero-shot "
        f"classification or Space): pass the tokenizer its {text_type} text tower was trained with (--tokenizer "
        f"{suggestion}, a Hub id or a local folder), or --no-tokenizer to write an audio-only folder on purpose"
    )


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    tokenizer: str | Path | None = None,
    to: str = "clapforge",
    no_tokenizer: bool = False,
) -> ConversionReport:
    """Write a Hub-ready folder at `dst` from `src` (LAION `.pt`, transformers CLAP folder, or, with
    `to="transformers"`, a clapforge folder or any of the former) and return what was dropped.

    The tokenizer comes from `tokenizer`, or from a source folder that holds one. Without either the conversion is
    refused before anything is written, unless `no_tokenizer=True` asks for an audio-only folder.
    """
    from transformers import AutoTokenizer

    from ..processing.feature_extraction_laion_clap import LaionClapFeatureExtractor

    src, dst = Path(src), Path(dst)
    if to not in ("clapforge", "transformers"):
        raise ValueError(f"to={to!r}: expected 'clapforge' or 'transformers'")
    if (
        to == "transformers"
        and src.is_dir()
        and json.loads((src / "config.json").read_text()).get("model_type") == "laion_clap"
    ):
        model = LaionClapModel.from_pretrained(src, dtype=torch.float32)
        report, tokenizer_dir = ConversionReport(str(src), "clapforge", model.config.to_dict()), _tokenizer_dir(src)
    else:
        model, report, tokenizer_dir = load_source(src)
    if to == "transformers":
        clapforge_to_transformers_config(model.config)  # refuses what transformers' ClapModel cannot hold, first
    tokenizer_source = tokenizer if tokenizer is not None else tokenizer_dir
    if tokenizer_source is None and not no_tokenizer:
        raise ValueError(_missing_tokenizer_message(src, model.config))
    tok = AutoTokenizer.from_pretrained(str(tokenizer_source)) if tokenizer_source is not None else None
    dst.mkdir(parents=True, exist_ok=True)
    if to == "transformers":
        write_transformers_folder(model, dst, tok)
    else:
        model.save_pretrained(dst)
        feature_extractor = LaionClapFeatureExtractor.for_model_config(model.config)
        if tok is not None:
            from ..processing.processing_laion_clap import LaionClapProcessor

            LaionClapProcessor(feature_extractor, tok).save_pretrained(dst)
        else:
            feature_extractor.save_pretrained(dst)
    report_json = {"source": report.source, "kind": report.kind, "dropped_keys": report.dropped_keys}
    atomic_write_json(dst / "conversion_report.json", report_json, indent=2)
    return report


__all__ = [
    "ConversionReport",
    "clapforge_to_transformers_config",
    "convert_checkpoint",
    "laion_to_clapforge",
    "load_laion_state_dict",
    "load_source",
    "to_transformers_model",
]
