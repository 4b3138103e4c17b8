"""LAION-CLAP `.pt` checkpoints as released -> clapforge: safe loading, architecture read from the tensors, key mapping.

The released files hold `{"epoch", "name", "state_dict": {"module.…": …}, "optimizer": …}`, pickled under numpy 1.x.
"""

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..modeling_clap.configuration_laion_clap import PANN_VARIANTS, LaionClapConfig
from .common import is_dropped

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
# The tokenizer each text tower LAION-CLAP trained with (LAION's code tokenises with these Hub ids).
LAION_TOKENIZERS = {"roberta": "roberta-base", "bert": "bert-base-uncased"}


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
        if is_dropped(key, LAION_DROPPED):
            dropped.append(key)
            continue
        new = key.replace("audio_branch.", "audio_model.", 1).replace("text_branch.", "text_model.", 1)
        new = re.sub(r"^(audio|text)_projection\.0\.", r"\1_projection.linear1.", new)
        new = re.sub(r"^(audio|text)_projection\.2\.", r"\1_projection.linear2.", new)
        converted[new] = tensor
    return config, converted, dropped
