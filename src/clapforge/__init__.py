"""clapforge: LAION-CLAP as a Hugging Face Hub-native package.

Importing clapforge registers the LAION-CLAP classes with transformers' Auto classes, both in this process
(`AutoModel.from_config`, `AutoProcessor.from_pretrained` on a folder) and for saving (`save_pretrained` writes
`auto_map` and copies the code, so a saved folder loads with `trust_remote_code=True` where clapforge is absent).
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, AutoProcessor

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
from .tools.api import classify, embed_audio, embed_text, load_model, search

__version__ = "0.1.0"


def _register() -> None:
    for config_class in (LaionClapConfig, HtsatConfig, PannConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(LaionClapConfig, LaionClapModel, exist_ok=True)
    AutoFeatureExtractor.register(LaionClapConfig, LaionClapFeatureExtractor, exist_ok=True)
    AutoProcessor.register(LaionClapConfig, LaionClapProcessor, exist_ok=True)
    LaionClapConfig.register_for_auto_class()
    LaionClapModel.register_for_auto_class("AutoModel")
    LaionClapFeatureExtractor.register_for_auto_class()
    LaionClapProcessor.register_for_auto_class()
    AutoModelForAudioClassification.register(LaionClapConfig, LaionClapForAudioClassification, exist_ok=True)
    LaionClapForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")


_register()

__all__ = [
    "PRESETS",
    "HtsatConfig",
    "LaionClapAudioModelWithProjection",
    "LaionClapConfig",
    "LaionClapForAudioClassification",
    "LaionClapFeatureExtractor",
    "LaionClapModel",
    "LaionClapProcessor",
    "LaionClapTextModelWithProjection",
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
