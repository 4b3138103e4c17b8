"""Parity with LAION-CLAP's own published code (the `laion_clap==1.1.7` wheel), offline.

LAION's model is built with its own classes (`clap_module/model.py` `CLAP`, which builds `htsat.py`'s
`HTSAT_Swin_Transformer` or `pann_model.py`'s `Cnn14`), fed by its own data pipeline (`training/data.py`:
int16 round trip, `get_audio_features`, `get_mel`) exactly as `hook.py`'s `get_audio_embedding_from_data` chains
them, with random weights. Its state dict, saved like a released `.pt`, goes through clapforge's converter, and
clapforge's feature extractor + model must give the same embeddings from the same waveforms.

How LAION's code is loaded without its training dependencies: `laion_clap/__init__.py` imports `hook.py`, which
imports the whole training stack (webdataset, h5py, wget, torchvision, ...). So the package directory
`clap_module/` is mounted under a private module name and imported from there, except `clap_module/utils.py`
(h5py, tqdm, torchvision at import time): its four functions that `htsat.py`, `pann_model.py` and `model.py`
import are compiled from LAION's own source file. Likewise, the four functions we need from `training/data.py` are
compiled from that file, not re-typed. Nothing downloads: `RobertaModel.from_pretrained("roberta-base")` in
`model.py` is replaced by a small randomly initialised RobertaModel.
"""

import ast
import importlib
import importlib.util
import json
import shutil
import sys
import types
from contextlib import suppress
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio

import clapforge
from clapforge import LaionClapModel
from clapforge.convert import convert_checkpoint
from conftest import NUMPY1_GLOBALS, rewrite_pickle_globals

pytestmark = pytest.mark.slow  # full-size LAION models built with LAION's own code

SR = 48000
MAX_LEN = 480000  # LAION's 10 s at 48 kHz
LAION_ROOT = Path(importlib.util.find_spec("laion_clap").submodule_search_locations[0])
PACKAGE = "_laion_clap_reference"


def _compile_functions(path: Path, names: list[str], namespace: dict) -> dict:
    """Runs the top-level `def`s named `names` of LAION's source file `path` in `namespace`."""
    tree = ast.parse(path.read_text())
    defs = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    assert sorted(d.name for d in defs) == sorted(names), f"{path} no longer defines {names}"
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


class _Resize:
    """`torchvision.transforms.Resize` (LAION's `mel_shrink`) on a (C, T, F) tensor as torchvision 0.12 did it in
    LAION's training environment (torch 1.11): bilinear, align_corners=False, no antialias. torchvision is not a
    dependency here, and since 0.17 its default for tensors is antialias=True, which the checkpoints never saw."""

    def __init__(self, size: list[int]) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return F.interpolate(img[None], size=self.size, mode="bilinear", align_corners=False)[0]


@pytest.fixture(scope="module")
def laion() -> types.SimpleNamespace:
    """LAION's `model.py` module and its data-pipeline functions."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(LAION_ROOT / "clap_module")]
        utils = types.ModuleType(f"{PACKAGE}.utils")
        utils.__dict__.update(np=np, torch=torch, nn=torch.nn)
        _compile_functions(LAION_ROOT / "clap_module" / "utils.py",
                           ["do_mixup", "interpolate", "pad_framewise_output", "freeze_batch_norm_2d"], utils.__dict__)
        sys.modules[PACKAGE] = package
        sys.modules[utils.__name__] = utils
    model = importlib.import_module(f"{PACKAGE}.model")
    data = _compile_functions(
        LAION_ROOT / "training" / "data.py",
        ["int16_to_float32", "float32_to_int16", "get_mel", "get_audio_features"],
        {"np": np, "torch": torch, "F": F, "torchaudio": torchaudio, "suppress": suppress,
         "torchvision": types.SimpleNamespace(transforms=types.SimpleNamespace(Resize=_Resize))},
    )
    return types.SimpleNamespace(model=model, **{k: v for k, v in data.items() if callable(v)})


TEXT_CONFIG = dict(
    # LAION's text_projection is Linear(768, 512) whatever the tower, so the stand-in keeps roberta-base's width
    # and 64-wide heads (the converter reads the head count as width // 64), with one layer and a small vocabulary.
    vocab_size=300, hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=256,
    max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
    eos_token_id=2,
)


class _OfflineRoberta:
    @staticmethod
    def from_pretrained(name: str):
        from transformers import RobertaConfig, RobertaModel

        assert name == "roberta-base"
        return RobertaModel(RobertaConfig(**TEXT_CONFIG))


def _randomize(clap: torch.nn.Module, seed: int) -> None:
    """Random weights and BatchNorm statistics everywhere but in torchlibrosa's fixed STFT/mel front end."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in clap.named_parameters():
            if "_extractor." not in name:
                p.add_(torch.randn(p.shape, generator=generator) * 0.05)
        for name, b in clap.named_buffers():
            if name == "audio_branch.bn0.running_mean":
                # dB-scale statistics, as a trained bn0 has, so front-end differences are weighed as in a real model.
                b.copy_(-60 + 40 * torch.rand(b.shape, generator=generator))
            elif name == "audio_branch.bn0.running_var":
                b.copy_(100 + 300 * torch.rand(b.shape, generator=generator))
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=generator) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=generator) + 0.5)
    clap.eval()


def build_laion(laion, config_name: str, fusion: bool, seed: int):
    cfg = json.loads((LAION_ROOT / "clap_module" / "model_configs" / f"{config_name}.json").read_text())
    torch.manual_seed(seed)
    with mock.patch.object(laion.model, "RobertaModel", _OfflineRoberta):
        clap = laion.model.CLAP(cfg["embed_dim"], cfg["audio_cfg"], {**cfg["text_cfg"], "model_type": "roberta"},
                                enable_fusion=fusion, fusion_type="aff_2d" if fusion else "None")
    _randomize(clap, seed)
    return clap, cfg["audio_cfg"]


def convert(clap, folder: Path) -> LaionClapModel:
    """Saves LAION's model as the released files are laid out (DDP's `module.` prefix, numpy scalars beside the
    state dict) and converts it with clapforge's converter."""
    state = {f"module.{k}": v for k, v in clap.state_dict().items()}
    checkpoint = {"epoch": np.int64(45), "best_loss": np.float64(0.5), "state_dict": state}
    torch.save(checkpoint, folder / "laion.pt")
    rewrite_pickle_globals(folder / "laion.pt", NUMPY1_GLOBALS)  # the released files were pickled under numpy 1.x
    convert_checkpoint(folder / "laion.pt", folder / "converted", no_tokenizer=True)
    model = LaionClapModel.from_pretrained(folder / "converted").eval()
    # Up to 700 MB per PANN model, and pytest keeps the temporary folders of the last runs.
    (folder / "laion.pt").unlink()
    shutil.rmtree(folder / "converted")
    return model


def clip(seconds: float, seed: int, peak: float = 0.6) -> np.ndarray:
    """A chirp, a few partials and noise: content across the mel range, changing over time."""
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    f0 = 200 + 100 * seed
    x = np.sin(2 * np.pi * (f0 * t + 400 * t**2)) + 0.3 * np.sin(2 * np.pi * 3 * f0 * t) * np.cos(2 * np.pi * t)
    x = x + 0.1 * rng.standard_normal(n)
    return (peak * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture()
def deterministic_crops(monkeypatch):
    """LAION's random choices replaced by clapforge's deterministic ones: the centred crop in rand_trunc
    (`np.random.randint(0, overflow + 1)` -> overflow // 2) and the middle start of each third in fusion."""

    def centre(low: int, high: int) -> int:
        assert low == 0
        return (high - 1) // 2

    monkeypatch.setattr(np.random, "randint", centre)
    monkeypatch.setattr(np.random, "choice", lambda a: a[len(a) // 2])


def laion_audio_embeds(laion, clap, audio_cfg, clips: list[np.ndarray], truncating: str):
    """hook.py's `get_audio_embedding_from_data`, step by step with LAION's functions: int16 round trip,
    `get_audio_features` (repeatpad; crop, or fusion's mel crops), `CLAP.get_audio_embedding` (audio branch,
    `audio_projection`, L2 normalisation). Returns the embeddings (B, E) and the per-clip feature dicts."""
    samples = []
    for x in clips:
        x = torch.from_numpy(laion.int16_to_float32(laion.float32_to_int16(x))).float()
        samples.append(laion.get_audio_features({}, x, MAX_LEN, truncating, "repeatpad", audio_cfg))
    with torch.no_grad():
        return clap.get_audio_embedding(samples), samples


def ours_audio_embeds(model, fe, clips: list[np.ndarray]):
    features = fe(clips, sampling_rate=SR)
    with torch.no_grad():
        return model.get_audio_embeds(features["input_features"], features["is_longer"]), features


def laion_log_mel(clap, samples: list[dict], truncating: str) -> torch.Tensor:
    """The log-mel LAION's audio branch sees (B, C, T, F): with fusion, `get_audio_features`' `mel_fusion` (HTK
    filters, torchaudio); without, the Slaney log-mel its model computes from the waveform with torchlibrosa."""
    if truncating == "fusion":
        return torch.stack([s["mel_fusion"] for s in samples])
    branch = clap.audio_branch
    with torch.no_grad():
        return branch.logmel_extractor(branch.spectrogram_extractor(torch.stack([s["waveform"] for s in samples])))


# Tolerances. The residue is float32 rounding in different arithmetic, not a different formula; the largest
# differences seen on CPU, AMX / AVX2 code paths (MKL_ENABLE_INSTRUCTIONS=AVX2 ...), are in brackets.
# - Any mel product (`power @ fbank`, LAION's and ours) is a matrix product that kernels sum in their own order (it
#   depends on the CPU and on the number of rows). Its terms are non-negative and at most 31 are non-zero (the
#   widest filter), so two orders differ by at most 60 * 2**-24 relative to the band's power, 1.6e-5 dB, plus the
#   log10 and * 10 rounding of each side, 2.7e-5 dB (tests/test_feature_extraction.py, REORDER_ATOL_DB): 4.3e-5 dB
#   whatever the CPU, even in quiet bands.
# - Slaney log-mel, unfused [2.1e-4 / 1.9e-4 dB]: dominated by LAION's side. torchlibrosa's STFT is a Conv1d with
#   cos/sin kernels, 1.9e-4 dB from a float64 STFT on these clips, where torch.fft.rfft is within 8e-5 dB; librosa's
#   filters and torchaudio's Slaney bank (built in float64, cast to float32) differ by 3e-7 dB. The largest gaps are
#   in quiet bands, where dB magnifies rounding. 5e-4 = that STFT residue, the mel-product bound, and 2x.
# - HTK log-mel, fusion [7.6e-6 / 7.6e-6 dB, 2 float32 ulps at 40 dB]: torchaudio's filters on both sides; the STFTs
#   (torch.stft per clip vs our framing of a packed buffer) round differently. 6e-5 = the mel-product bound plus that
#   STFT residue. A real error is larger: the bilinear global view must compute its source coordinates as torch's
#   interpolate does, `scale * (t + 0.5) - 0.5` rounded once: rounded twice in float32, a coordinate near frame 1750 is
#   one ulp (1.2e-4 frames) off and the view moves by up to 1e-3 dB.
# - embeddings [6.3e-8 / 1.8e-7]: float32 rounding through the encoder and projection, summed in other orders (the
#   two implementations group the operations differently, and the kernels order their sums per CPU). The embeddings
#   are unit vectors, so the tolerance is relative to their norm: CNN14's 3 x 3 x 1024-term convolutions and HTS-AT's
#   768-wide layers round by about sqrt(n) * 2**-24 ~ 6e-6 of their scale in a random order, and later averaging
#   (pooling, the projection) only shrinks that. A converter error (a weight in the wrong place, a missing layer)
#   moves them by as much as distinct clips' embeddings differ, more than 100 * EMBED_ATOL (asserted in
#   `assert_embeddings_match`), so the bound is not vacuous.
SLANEY_MEL_ATOL_DB = 5e-4
HTK_MEL_ATOL_DB = 6e-5
EMBED_ATOL = 1e-5


def assert_features_match(features, clap, samples: list[dict], truncating: str) -> None:
    atol = HTK_MEL_ATOL_DB if truncating == "fusion" else SLANEY_MEL_ATOL_DB
    torch.testing.assert_close(features["input_features"], laion_log_mel(clap, samples, truncating), atol=atol, rtol=0)
    assert features["is_longer"].flatten().tolist() == [bool(s["longer"]) for s in samples]


def assert_embeddings_match(mine: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(mine, theirs, atol=EMBED_ATOL, rtol=0)
    # The check can fail: a random model still tells the clips apart by far more than the tolerance.
    gaps = [(theirs[i] - theirs[j]).abs().max().item() for i in range(len(theirs)) for j in range(i)]
    assert min(gaps) > 100 * EMBED_ATOL, gaps


@pytest.fixture(scope="module")
def htsat_unfused(laion, tmp_path_factory):
    clap, audio_cfg = build_laion(laion, "HTSAT-tiny", fusion=False, seed=0)
    return clap, audio_cfg, convert(clap, tmp_path_factory.mktemp("htsat"))


def test_htsat_unfused_from_waveform(laion, htsat_unfused, deterministic_crops):
    """1 s and 7 s (repeatpad), exactly 10 s (clipped above full scale by the int16 round trip), 13.3 s (crop)."""
    clap, audio_cfg, ours = htsat_unfused
    clips = [clip(1, 1), clip(7, 2), clip(10, 3, peak=1.3), clip(13.3, 4)]
    theirs, samples = laion_audio_embeds(laion, clap, audio_cfg, clips, "rand_trunc")
    mine, features = ours_audio_embeds(ours, clapforge.create_feature_extractor("htsat-tiny"), clips)
    assert_features_match(features, clap, samples, "rand_trunc")
    assert_embeddings_match(mine, theirs)


def test_text_tower(laion, htsat_unfused, tokenizer):
    """LAION: RobertaModel's pooler_output -> text_projection -> normalise (`CLAP.get_text_embedding`)."""
    clap, _, ours = htsat_unfused
    texts = ["a dog barks in the rain", "birds sing at dawn while a car engine starts", "a bell"]
    # LAION's tokenizer arguments (hook.py / training/data.py): pad to 77, truncate.
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        theirs = clap.get_text_embedding({"input_ids": tokens["input_ids"].clone(),
                                          "attention_mask": tokens["attention_mask"].clone()})
        mine = ours.get_text_embeds(tokens["input_ids"], tokens["attention_mask"])
    # The same transformers RobertaModel code on the same weights: equal up to (at most) one float32 rounding.
    torch.testing.assert_close(mine, theirs, atol=1e-7, rtol=0)
    assert (theirs[0] - theirs[1]).abs().max() > 1e-3


def test_htsat_fused(laion, tmp_path, deterministic_crops):
    clap, audio_cfg = build_laion(laion, "HTSAT-tiny", fusion=True, seed=1)
    ours = convert(clap, tmp_path)
    fe = clapforge.create_feature_extractor("htsat-tiny-fused")
    # No clip longer than 10 s in the batch: LAION's eval path feeds the global channel only. 10 s + 200 samples
    # has exactly 1001 frames: LAION's corner case (whole clip, four identical channels, not "longer").
    # With a 25 s and a 17.5 s clip: the fusion path, LAION's random crop starts fixed to the middle of each third.
    for clips in ([clip(1, 5), clip(7, 6), clip(10, 7), clip(10 + 200 / SR, 8)],
                  [clip(25, 9), clip(3, 10), clip(17.5, 11)]):
        theirs, samples = laion_audio_embeds(laion, clap, audio_cfg, clips, "fusion")
        mine, features = ours_audio_embeds(ours, fe, clips)
        assert_features_match(features, clap, samples, "fusion")
        assert_embeddings_match(mine, theirs)


@pytest.mark.parametrize("fusion", [False, True], ids=["unfused", "fused"])
def test_pann_cnn14(laion, tmp_path, deterministic_crops, fusion):
    """LAION's full-size Cnn14 (its channel counts are hard-coded). The batch holds a clip longer than 10 s: with
    fusion, LAION's Cnn14 otherwise marks a random clip "longer" even in eval (pann_model.py, `forward`, first
    lines), which clapforge deliberately does not do; with one real long clip that path is not taken."""
    clap, audio_cfg = build_laion(laion, "PANN-14", fusion=fusion, seed=2)
    ours = convert(clap, tmp_path)
    fe = clapforge.create_feature_extractor("pann-cnn14", ours.config)  # its mode follows the converted model
    clips = [clip(25, 12), clip(1, 13), clip(10, 14), clip(7, 15)]
    truncating = "fusion" if fusion else "rand_trunc"
    theirs, samples = laion_audio_embeds(laion, clap, audio_cfg, clips, truncating)
    assert samples[0]["longer"], "LAION's Cnn14 would pick a random clip as longer"
    mine, features = ours_audio_embeds(ours, fe, clips)
    assert_features_match(features, clap, samples, truncating)
    assert_embeddings_match(mine, theirs)
