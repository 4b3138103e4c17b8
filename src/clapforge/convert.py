"""Bring checkpoints in and out of clapforge.

In: a LAION-CLAP `.pt` as released (`{"state_dict": {"module.…": …}, …}`), or a transformers `ClapModel` folder
(the `laion/clap-htsat-fused` layout). Out: a Hub-ready clapforge folder, or (`to="transformers"`) a folder that
transformers' own `ClapModel` loads.

The architecture is always read from the tensors (LAION) or the config (transformers), never from a name the user
gives: naming the wrong model is how LAION's users meet size-mismatch errors.
"""

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .modeling_clap.configuration_laion_clap import PANN_VARIANTS, LaionClapConfig
from .modeling_clap.modeling_laion_clap import LaionClapModel

# LAION keys that hold no weights of ours: the in-model STFT/mel front end (our feature extractor owns it), the
# AudioSet heads, the MLP-loss transforms the released models never used, and buffers we derive from the config.
LAION_DROPPED = [
    r"^audio_branch\.spectrogram_extractor\.",
    r"^audio_branch\.logmel_extractor\.",
    r"^audio_branch\.tscam_conv\.",
    r"^audio_branch\.head\.",
    r"^audio_branch\.fc_audioset\.",
    r"^(audio|text)_transform\.",
    r"\.position_ids$",
    r"\.token_type_ids$",
    r"\.attn_mask$",
    r"\.relative_position_index$",
]
# Buffers both sides derive from the config; a checkpoint may lack them.
DERIVED_BUFFERS = r"(relative_position_index|attn_mask|position_ids|token_type_ids)$"
TRANSFORMERS_DROPPED = [r"\.position_ids$", r"\.token_type_ids$", r"\.relative_position_index$"]

# The RoBERTa hyper-parameters both formats carry (layer_norm_eps is handled apart: the formats disagree on it).
TEXT_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)

# transformers' HTS-AT names -> ours (which are LAION's).
HF_AUDIO_RENAMES = [
    ("audio_model.audio_encoder.batch_norm.", "audio_model.bn0."),
    ("audio_model.audio_encoder.", "audio_model."),
    (".layernorm_before.", ".norm1."),
    (".layernorm_after.", ".norm2."),
    (".attention.self.relative_position_bias_table", ".attn.relative_position_bias_table"),
    (".attention.output.dense.", ".attn.proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
]


@dataclass
class ConversionReport:
    source: str
    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    dropped_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"converted {self.kind} checkpoint {self.source}", f"dropped {len(self.dropped_keys)} keys:"]
        lines += [f"  {key}" for key in self.dropped_keys]
        return "\n".join(lines)


def _is_dropped(key: str, patterns: list[str]) -> bool:
    return any(re.search(p, key) for p in patterns)


# ---------------------------------------------------------------------------------------------------------------
# LAION .pt


def _numpy_allow_list() -> list:
    """The non-tensor globals LAION's pickles name (numpy scalars and dtypes from the training loop's bookkeeping).

    torch's weights-only unpickler matches a global by the name written in the pickle. The released files were pickled
    under numpy 1.x, which wrote `numpy.core.multiarray.scalar`; numpy 2 moved the module to `numpy._core` (and pickles
    under that name), so each function is allowed under both names, bound to the object this numpy has.
    """
    import codecs

    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list = [codecs.encode, np.dtype, np.ndarray]
    for module_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(getattr(multiarray, name), f"{module_name}.{name}") for name in ("scalar", "_reconstruct")]
    allowed += [type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32", "bool")]
    return allowed


def _foreign_globals(path: Path) -> list[str]:
    """The globals a checkpoint's pickle names besides torch's own and the numpy allow-list, read without running it
    (torch's refusal message words this differently across versions and kinds of global)."""
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    else:
        data = path.read_bytes()
    allowed = {entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"
               for entry in _numpy_allow_list()} | {"numpy.dtype", "collections.OrderedDict"}
    try:
        named = [arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"]
    except (ValueError, EOFError):  # a damaged pickle: report no names rather than a second error
        return []
    return sorted({name for name in named if name not in allowed and not name.startswith("torch.")})


def load_laion_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The `state_dict` of a LAION-CLAP `.pt`, with DDP's `module.` prefix removed.

    Loaded with `weights_only=True` and an allow-list of numpy scalar types: any other pickled object is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with path.open("rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive (PK..); files from torch < 1.6 are a bare pickle (protocol byte 0x80).
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise ValueError(f"{path} is not a PyTorch checkpoint (it starts with {magic!r}, not a zip or pickle header)")
    try:
        with torch.serialization.safe_globals(_numpy_allow_list()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        foreign = ", ".join(_foreign_globals(path)) or "objects"
        raise ValueError(
            f"{path} was refused by the safe loader: its pickle names {foreign}, outside the allow-list of tensors, "
            "numpy scalars and dtypes, so it is not a LAION-CLAP checkpoint as released; nothing in it was run"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{path} is not a PyTorch checkpoint ({error})") from error
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state_dict of tensors: it is not a LAION-CLAP checkpoint")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not any(k.startswith("audio_branch.") for k in state) or not any(k.startswith("text_branch.") for k in state):
        raise ValueError(f"{path} has no audio_branch/text_branch weights: it is not a LAION-CLAP checkpoint")
    return state


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def infer_laion_audio_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Audio encoder hyper-parameters read from LAION tensor names and shapes."""
    if "audio_branch.patch_embed.proj.weight" in state:
        stages = _count(state, r"audio_branch\.layers\.(\d+)\.")
        depths = [_count(state, rf"audio_branch\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages)]
        tables = [state[f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(stages)]
        window = (int(round(tables[0].shape[0] ** 0.5)) + 1) // 2
        return {
            "model_type": "laion_clap_htsat",
            "embed_dim": state["audio_branch.patch_embed.proj.weight"].shape[0],
            "patch_size": state["audio_branch.patch_embed.proj.weight"].shape[-1],
            "patch_stride": state["audio_branch.patch_embed.proj.weight"].shape[-1],
            "depths": depths,
            "num_heads": [t.shape[1] for t in tables],
            "window_size": window,
        }
    if "audio_branch.conv_block1.conv1.weight" in state:
        blocks = _count(state, r"audio_branch\.conv_block(\d+)\.")
        channels = [state[f"audio_branch.conv_block{i + 1}.conv1.weight"].shape[0] for i in range(blocks)]
        kernel = state["audio_branch.conv_block1.conv1.weight"].shape[-1]
        variant = next((v for v, (ch, k) in PANN_VARIANTS.items() if len(ch) == blocks and k == kernel), None)
        if variant is None:
            raise ValueError(
                f"PANN with {blocks} conv blocks of kernel {kernel} matches none of {sorted(PANN_VARIANTS)}"
            )
        return {"model_type": "laion_clap_pann", "variant": variant, "block_channels": channels, "kernel_size": kernel}
    raise ValueError("unknown audio encoder: neither HTS-AT (patch_embed) nor PANN (conv_block1) weights found")


def infer_laion_text_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A RoBERTa or BERT config read from LAION's `text_branch` tensors."""
    if "text_branch.embeddings.word_embeddings.weight" not in state:
        raise ValueError(
            "text tower is not a transformers BERT/RoBERTa (LAION's CLIP-transformer and BART text "
            "towers are not supported)"
        )
    vocab, hidden = state["text_branch.embeddings.word_embeddings.weight"].shape
    max_positions = state["text_branch.embeddings.position_embeddings.weight"].shape[0]
    type_vocab = state["text_branch.embeddings.token_type_embeddings.weight"].shape[0]
    is_roberta = type_vocab == 1
    return {
        "model_type": "roberta" if is_roberta else "bert",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": _count(state, r"text_branch\.encoder\.layer\.(\d+)\."),
        # Head count is not in the tensors; every BERT-family checkpoint LAION used has 64-wide heads.
        "num_attention_heads": max(hidden // 64, 1),
        "intermediate_size": state["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0],
        "max_position_embeddings": max_positions,
        "type_vocab_size": type_vocab,
        # roberta-base and bert-base both use 1e-5 / 1e-12 respectively; transformers' CLAP config wrongly says 1e-12.
        "layer_norm_eps": 1e-5 if is_roberta else 1e-12,
        "pad_token_id": 1 if is_roberta else 0,
        "bos_token_id": 0 if is_roberta else None,
        "eos_token_id": 2 if is_roberta else None,
    }


def laion_to_clapforge(state: dict[str, torch.Tensor]) -> tuple[LaionClapConfig, dict, list[str]]:
    """(config, clapforge state dict, dropped LAION keys) for a LAION state dict without the `module.` prefix."""
    audio = infer_laion_audio_config(state)
    fused = "audio_branch.patch_embed.mel_conv2d.weight" in state or any(".mel_conv2d." in k for k in state)
    config = LaionClapConfig(
        audio_config=audio,
        text_config=infer_laion_text_config(state),
        enable_fusion=fused,
        projection_dim=state["audio_projection.2.weight"].shape[0],
    )
    converted, dropped = {}, []
    for key, tensor in state.items():
        if _is_dropped(key, LAION_DROPPED):
            dropped.append(key)
            continue
        new = key.replace("audio_branch.", "audio_model.", 1).replace("text_branch.", "text_model.", 1)
        new = re.sub(r"^(audio|text)_projection\.0\.", r"\1_projection.linear1.", new)
        new = re.sub(r"^(audio|text)_projection\.2\.", r"\1_projection.linear2.", new)
        converted[new] = tensor
    return config, converted, dropped


# ---------------------------------------------------------------------------------------------------------------
# transformers ClapModel folders


def _read_folder_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if files:
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(f))
        return state
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not bins:
        raise ValueError(f"{folder} holds no *.safetensors or pytorch_model*.bin weights")
    state = {}
    for f in bins:
        state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def transformers_config_to_clapforge(hf: dict[str, Any]) -> LaionClapConfig:
    """A `ClapConfig` dict (config.json of a transformers CLAP folder) as a `LaionClapConfig`."""
    audio, text = hf.get("audio_config", {}), hf.get("text_config", {})

    def get(d: dict, key: str, default: Any) -> Any:
        return d.get(key, default) if d.get(key) is not None else default

    from transformers import ClapAudioConfig, ClapTextConfig

    text_defaults, audio_defaults = ClapTextConfig(), ClapAudioConfig()
    text_config = {k: get(text, k, getattr(text_defaults, k)) for k in TEXT_CONFIG_KEYS}
    # Keep transformers' eps (1e-12 by default) so the converted model computes what the source computed.
    text_config.update(model_type="roberta", layer_norm_eps=get(text, "layer_norm_eps", text_defaults.layer_norm_eps))
    patch_stride = get(audio, "patch_stride", audio_defaults.patch_stride)
    audio_config = {
        "model_type": "laion_clap_htsat",
        "num_mel_bins": get(audio, "num_mel_bins", audio_defaults.num_mel_bins),
        "spec_size": get(audio, "spec_size", audio_defaults.spec_size),
        "patch_size": get(audio, "patch_size", audio_defaults.patch_size),
        "patch_stride": patch_stride[0] if isinstance(patch_stride, (list, tuple)) else patch_stride,
        "embed_dim": get(audio, "patch_embeds_hidden_size", audio_defaults.patch_embeds_hidden_size),
        "depths": list(get(audio, "depths", audio_defaults.depths)),
        "num_heads": list(get(audio, "num_attention_heads", audio_defaults.num_attention_heads)),
        "window_size": get(audio, "window_size", audio_defaults.window_size),
        "mlp_ratio": get(audio, "mlp_ratio", audio_defaults.mlp_ratio),
        "qkv_bias": get(audio, "qkv_bias", audio_defaults.qkv_bias),
        "hidden_act": get(audio, "hidden_act", audio_defaults.hidden_act),
        "layer_norm_eps": get(audio, "layer_norm_eps", audio_defaults.layer_norm_eps),
        "aff_reduction": get(audio, "aff_block_r", audio_defaults.aff_block_r),
        "drop_path_rate": 0.1,  # LAION's training value; transformers stores 0.0. Inference ignores it.
    }
    return LaionClapConfig(
        audio_config=audio_config,
        text_config=text_config,
        enable_fusion=bool(get(audio, "enable_fusion", False)),
        projection_dim=get(hf, "projection_dim", 512),
        projection_hidden_act=get(hf, "projection_hidden_act", "relu"),
        logit_scale_init_value=get(hf, "logit_scale_init_value", 1 / 0.07),
    )


def transformers_state_to_clapforge(state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    converted, dropped = {}, []
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        key = key.removeprefix("clap.")
        if _is_dropped(key, TRANSFORMERS_DROPPED):
            dropped.append(key)
            continue
        if key.startswith("audio_model."):
            match = re.match(r"(.*)\.attention\.self\.(query|key|value)\.(weight|bias)$", key)
            if match:
                qkv.setdefault(f"{match.group(1)}.attn.qkv.{match.group(3)}", {})[match.group(2)] = tensor
                continue
            for old, new in HF_AUDIO_RENAMES:
                key = key.replace(old, new)
        converted[key] = tensor
    for key, parts in qkv.items():
        for old, new in HF_AUDIO_RENAMES:
            key = key.replace(old, new)
        converted[key] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return converted, dropped


def clapforge_to_transformers_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `transformers_state_to_clapforge` for an HTS-AT + RoBERTa model."""
    converted = {}
    for key, tensor in state.items():
        if not key.startswith("audio_model."):
            converted[key] = tensor
            continue
        key = key.replace("audio_model.bn0.", "audio_model.batch_norm.").replace(
            "audio_model.", "audio_model.audio_encoder.", 1
        )
        for ours, theirs in [
            (".norm1.", ".layernorm_before."),
            (".norm2.", ".layernorm_after."),
            (".attn.relative_position_bias_table", ".attention.self.relative_position_bias_table"),
            (".attn.proj.", ".attention.output.dense."),
            (".mlp.fc1.", ".intermediate.dense."),
            (".mlp.fc2.", ".output.dense."),
        ]:
            key = key.replace(ours, theirs)
        if ".attn.qkv." in key:
            for name, part in zip(("query", "key", "value"), tensor.chunk(3, dim=0), strict=True):
                converted[key.replace(".attn.qkv.", f".attention.self.{name}.")] = part.clone()
            continue
        converted[key] = tensor
    return converted


def clapforge_to_transformers_config(config: LaionClapConfig) -> dict[str, Any]:
    audio, text = config.audio_config, config.text_config
    if audio.model_type != "laion_clap_htsat" or text.model_type != "roberta" or config.text_pooling != "pooler":
        raise ValueError(
            "transformers' ClapModel only has HTS-AT + RoBERTa with pooler pooling; this model has "
            f"{audio.model_type} + {text.model_type} with {config.text_pooling!r} pooling"
        )
    return {
        "model_type": "clap",
        "projection_dim": config.projection_dim,
        "projection_hidden_act": config.projection_hidden_act,
        "logit_scale_init_value": config.logit_scale_init_value,
        "text_config": {k: getattr(text, k) for k in (*TEXT_CONFIG_KEYS, "layer_norm_eps")},
        "audio_config": {
            "num_mel_bins": audio.num_mel_bins,
            "spec_size": audio.spec_size,
            "patch_size": audio.patch_size,
            "patch_stride": [audio.patch_stride, audio.patch_stride],
            "patch_embeds_hidden_size": audio.embed_dim,
            "hidden_size": audio.hidden_size,
            "depths": list(audio.depths),
            "num_attention_heads": list(audio.num_heads),
            "window_size": audio.window_size,
            "mlp_ratio": audio.mlp_ratio,
            "qkv_bias": audio.qkv_bias,
            "hidden_act": audio.hidden_act,
            "layer_norm_eps": audio.layer_norm_eps,
            "enable_fusion": config.enable_fusion,
            "fusion_type": audio.fusion_type if config.enable_fusion else None,
            "aff_block_r": audio.aff_reduction,
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def _load_model(config: LaionClapConfig, state: dict[str, torch.Tensor]) -> LaionClapModel:
    model = LaionClapModel(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Derived buffers are rebuilt from the config, so they may be missing; nothing else may be.
    missing = [k for k in missing if not re.search(DERIVED_BUFFERS, k)]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not fit the inferred architecture: missing {missing}, unexpected {unexpected}"
        )
    return model


def load_source(src: str | Path) -> tuple[LaionClapModel, ConversionReport, Path | None]:
    """A clapforge model from a LAION `.pt` file or a transformers CLAP folder, its report, and its tokenizer folder."""
    src = Path(src)
    if src.is_dir():
        config_file = src / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{src} is a folder without config.json: expected a transformers ClapModel folder")
        hf = json.loads(config_file.read_text())
        if hf.get("model_type") != "clap":
            raise ValueError(f"{src}/config.json has model_type {hf.get('model_type')!r}; expected 'clap'")
        config = transformers_config_to_clapforge(hf)
        state, dropped = transformers_state_to_clapforge(_read_folder_state(src))
        tokenizer_dir = _tokenizer_dir(src)
        report = ConversionReport(str(src), "transformers", config.to_dict(), dropped)
        return _load_model(config, state), report, tokenizer_dir
    config, state, dropped = laion_to_clapforge(load_laion_state_dict(src))
    return _load_model(config, state), ConversionReport(str(src), "laion", config.to_dict(), dropped), None


def _tokenizer_dir(folder: Path) -> Path | None:
    return folder if any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")) else None


# The tokenizer each text tower LAION-CLAP trained with (LAION's code tokenises with these Hub ids).
LAION_TOKENIZERS = {"roberta": "roberta-base", "bert": "bert-base-uncased"}


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

    from .processing.feature_extraction_laion_clap import LaionClapFeatureExtractor

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
        _write_transformers_folder(model, dst, tok)
    else:
        model.save_pretrained(dst)
        feature_extractor = LaionClapFeatureExtractor.for_model_config(model.config)
        if tok is not None:
            from .processing.processing_laion_clap import LaionClapProcessor

            LaionClapProcessor(feature_extractor, tok).save_pretrained(dst)
        else:
            feature_extractor.save_pretrained(dst)
    (dst / "conversion_report.json").write_text(
        json.dumps({"source": report.source, "kind": report.kind, "dropped_keys": report.dropped_keys}, indent=2)
    )
    return report


def to_transformers_model(model: LaionClapModel):
    """transformers' own `ClapModel` holding this HTS-AT + RoBERTa model's weights, in eval mode."""
    from transformers import ClapConfig, ClapModel

    hf_config = clapforge_to_transformers_config(model.config)
    hf_config.pop("model_type")
    hf_model = ClapModel(ClapConfig(**hf_config)).eval()
    state = clapforge_to_transformers_state(model.state_dict())
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not re.search(DERIVED_BUFFERS, k)]
    if missing or unexpected:
        raise ValueError(f"export to transformers failed: missing {missing}, unexpected {unexpected}")
    return hf_model


def _write_transformers_folder(model: LaionClapModel, dst: Path, tokenizer: Any) -> None:
    from transformers import ClapFeatureExtractor, ClapProcessor

    to_transformers_model(model).save_pretrained(dst)
    feature_extractor = ClapFeatureExtractor(
        frequency_min=50, frequency_max=14000, truncation="fusion" if model.config.enable_fusion else "rand_trunc"
    )
    if tokenizer is not None:
        ClapProcessor(feature_extractor, tokenizer).save_pretrained(dst)
    else:
        feature_extractor.save_pretrained(dst)
