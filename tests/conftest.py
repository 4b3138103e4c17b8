"""Shared fixtures: a tiny tokenizer trained in milliseconds, the test-tiny model, synthetic audio."""

import contextlib
import csv
import io
import logging
import math
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from clapforge.inference import precision as _precision

# The capability test itself, before the session fixture below replaces it for the suite.
REAL_NATIVE_BF16 = _precision.native_bf16

CORPUS = [
    "a dog barks in the rain",
    "a siren wails in the distance",
    "birds sing at dawn",
    "the sound of a bell",
    "a car engine starts",
    "heavy rain on a roof",
    "a man speaks softly",
    "a woman laughs",
    "footsteps on gravel",
    "a door slams shut",
    "wind blows through trees",
    "a baby cries",
    "music plays loudly",
    "water drips slowly",
    "this is a sound of thunder",
    "keys jingle",
    "a cat meows",
    "an airplane flies overhead",
    "a clock ticks",
]

# The HUB DIR files `save_pretrained` must copy into a model folder (model + processor).
HUB_CODE_FILES = {
    "activations_laion_clap.py",
    "configuration_laion_clap.py",
    "modeling_laion_clap.py",
    "modeling_htsat.py",
    "modeling_pann.py",
    "modeling_fusion.py",
    "feature_extraction_laion_clap.py",
    "audio_inputs_laion_clap.py",
    "log_mel_laion_clap.py",
    "processing_laion_clap.py",
}


def make_tokenizer(vocab_size: int = 300, model_max_length: int = 77):
    """A RoBERTa-style byte-level BPE tokenizer (<s>=0, <pad>=1, </s>=2, <unk>=3) trained on a few captions."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 5, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


@pytest.fixture(autouse=True, scope="session")
def auto_precision_as_on_avx2():
    """precision="auto" resolves as on a CPU without bf16 kernels (fp32, or int8 beside an int8 export) in every test,
    so that the suite compares the same numbers on AVX2 and on AMX machines (subprocesses that compare numbers pass
    --precision fp32). The bf16 branch of "auto" is tested with this switched back (tests/test_precision.py); explicit
    precisions are untouched."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_precision, "native_bf16", lambda device: torch.device(device).type != "cpu")
        yield


def save_tiny_model(folder: Path, seed: int) -> Path:
    """A test-tiny model folder with its processor and tokenizer, weights randomised from `seed`."""
    import clapforge

    torch.manual_seed(0)
    clapforge.LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), make_tokenizer()).save_pretrained(
        folder)
    randomize_(clapforge.create_model("test-tiny"), seed=seed, scale=0.2).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


def tone(seconds: float, freq: float = 440.0, sr: int = 48000, seed: int = 0) -> np.ndarray:
    """A sine with a little noise, float32 in [-1, 1]."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * math.pi * freq * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Perturb every weight and BatchNorm statistic so that parity checks cannot pass by symmetry."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=generator) * 0.5)
    return model.eval()


@pytest.fixture()
def tiny_model():
    import clapforge

    torch.manual_seed(0)
    return randomize_(clapforge.create_model("test-tiny"))


@pytest.fixture()
def tiny_fused_model():
    import clapforge

    torch.manual_seed(0)
    return randomize_(clapforge.create_model("test-tiny", enable_fusion=True))


# Benchmark and classification layouts (ESC-50, FSD50K, ...) are written with these: short 16 kHz wav clips.
WAV_SR = 16000


def wav_bytes(seconds: float = 0.3, freq: float = 440.0, seed: int = 0) -> bytes:
    """16-bit mono PCM wav at 16 kHz: a tone plus a little noise, distinct per (freq, seed)."""
    t = np.arange(int(seconds * WAV_SR)) / WAV_SR
    rng = np.random.default_rng(seed)
    x = 0.4 * np.sin(2 * math.pi * freq * t) + 0.05 * rng.standard_normal(t.shape)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(WAV_SR)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def write_wav(path: Path, seed: int, seconds: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes(seconds, 200.0 + 97.0 * seed, seed))
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@contextlib.contextmanager
def dynamo_warnings() -> Iterator[list[str]]:
    """The messages torch._dynamo logs at WARNING or above inside the block (torch's loggers do not reach caplog)."""
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# numpy 2 pickles its scalar constructor under `numpy._core`; numpy 1.x, which pickled every released LAION-CLAP
# checkpoint, wrote `numpy.core`.
NUMPY1_GLOBALS = {
    "numpy._core.multiarray scalar": "numpy.core.multiarray scalar",
    "numpy._core.multiarray _reconstruct": "numpy.core.multiarray _reconstruct",
}


def rewrite_pickle_globals(checkpoint: Path, renames: dict[str, str]) -> list[str]:
    """Rewrites the GLOBAL opcodes ("module name") of a `torch.save` file's data.pkl in place; returns the globals the
    pickle names afterwards. Protocol 2 writes each GLOBAL as `c` + module + newline + name + newline, so a renamed
    global is a byte-exact picture of what another library version would have written."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(checkpoint) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    rewritten = []
    for info, data in entries:
        if info.filename.endswith("/data.pkl"):
            out, start, names = bytearray(), 0, []
            for opcode, arg, pos in pickletools.genops(data):
                if opcode.name != "GLOBAL":
                    continue
                new = renames.get(arg, arg)
                names.append(new)
                end = pos + 1 + len(arg) + 1  # the opcode byte, then "module\nname\n" (arg is "module name")
                out += data[start:pos] + b"c" + new.replace(" ", "\n").encode() + b"\n"
                start = end
            data = bytes(out + data[start:])
        rewritten.append((info, data))
    with zipfile.ZipFile(checkpoint, "w", compression=zipfile.ZIP_STORED) as archive:
        for info, data in rewritten:
            archive.writestr(info, data)
    return names
