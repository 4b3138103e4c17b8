"""clapforge: LAION-CLAP as a Hugging Face Hub-native package.

Importing clapforge registers the LAION-CLAP classes with transformers' Auto classes (`auto_classes.py`), both in this
process (`AutoModel.from_config`, `AutoProcessor.from_pretrained` on a folder) and for saving (`save_pretrained`
writes `auto_map` and copies the code, so a saved folder loads with `trust_remote_code=True` where clapforge is
absent).

The public names are resolved on first use (PEP 562), so that the console script can import the package without
torch and transformers: under it (`clapforge_cli`, see its docstring) the registration waits for `clapforge.cli.main`,
which does it before a command runs. Everywhere else it happens here, on import, as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module (relative to this package) that defines it
_EXPORTS = {
    "HtsatConfig": ".modeling_clap.configuration_laion_clap",
    "LaionClapConfig": ".modeling_clap.configuration_laion_clap",
    "PannConfig": ".modeling_clap.configuration_laion_clap",
    "LaionClapAudioModelWithProjection": ".modeling_clap.modeling_laion_clap",
    "LaionClapModel": ".modeling_clap.modeling_laion_clap",
    "LaionClapTextModelWithProjection": ".modeling_clap.modeling_laion_clap",
    "contrastive_loss": ".modeling_clap.modeling_laion_clap",
    "LaionClapForAudioClassification": ".modeling_clap.modeling_laion_clap_classification",
    "PRESETS": ".presets",
    "create_feature_extractor": ".presets",
    "create_model": ".presets",
    "load_preset_config": ".presets",
    "LaionClapFeatureExtractor": ".processing.feature_extraction_laion_clap",
    "LaionClapProcessor": ".processing.processing_laion_clap",
    "classify": ".tools.api",
    "embed_audio": ".tools.api",
    "embed_text": ".tools.api",
    "load_model": ".inference.loading",
    "search": ".tools.api",
}

__all__ = [  # = the keys of _EXPORTS (a test checks)
    "HtsatConfig",
    "LaionClapAudioModelWithProjection",
    "LaionClapConfig",
    "LaionClapFeatureExtractor",
    "LaionClapForAudioClassification",
    "LaionClapModel",
    "LaionClapProcessor",
    "LaionClapTextModelWithProjection",
    "PRESETS",
    "PannConfig",
    "classify",
    "contrastive_loss",
    "create_feature_extractor",
    "create_model",
    "embed_audio",
    "embed_text",
    "load_model",
    "load_preset_config",
    "search",
]

if TYPE_CHECKING:
    from .inference.loading import load_model
    from .modeling_clap.configuration_laion_clap import HtsatConfig, LaionClapConfig, PannConfig
    from .modeling_clap.modeling_laion_clap import (
        LaionClapAudioModelWithProjection,
        LaionClapModel,
        LaionClapTextModelWithProjection,
        contrastive_loss,
    )
    from .modeling_clap.modeling_laion_clap_classification import LaionClapForAudioClassification
    from .presets import PRESETS, create_feature_extractor, create_model, load_preset_config
    from .processing.feature_extraction_laion_clap import LaionClapFeatureExtractor
    from .processing.processing_laion_clap import LaionClapProcessor
    from .tools.api import classify, embed_audio, embed_text, search


def __getattr__(name: str) -> Any:
    """A public name, imported on first use and then cached; a sub-module, as `import clapforge.<name>` would."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # Earlier versions imported tools, evaluation and data eagerly, so `clapforge.tools.api` worked after a bare
        # `import clapforge`; keep that working.
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _imported_by_the_console_script() -> bool:
    return bool(getattr(sys.modules.get("clapforge_cli"), "RUNNING", False))


if not _imported_by_the_console_script():
    from .auto_classes import register_auto_classes as _register

    _register()
