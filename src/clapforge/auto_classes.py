"""Registration of the LAION-CLAP classes with transformers' Auto classes.

Both for this process (`AutoModel.from_config`, `AutoProcessor.from_pretrained` on a folder, no remote code) and for
saving (`save_pretrained` writes `auto_map` and copies the code, so a saved folder loads with `trust_remote_code=True`
where clapforge is absent). `import clapforge` calls it, except under the console script (`clapforge_cli`), where
`clapforge.cli.main` calls it once the arguments are parsed. Idempotent.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, AutoProcessor

from .modeling_clap.configuration_laion_clap import HtsatConfig, LaionClapConfig, PannConfig
from .modeling_clap.modeling_laion_clap import LaionClapModel
from .modeling_clap.modeling_laion_clap_classification import LaionClapForAudioClassification
from .processing.feature_extraction_laion_clap import LaionClapFeatureExtractor
from .processing.processing_laion_clap import LaionClapProcessor


def register_auto_classes() -> None:
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
