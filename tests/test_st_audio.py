"""sentence-transformers on a saved folder: a path to any audio file clapforge decodes is audio, never text; a batch
mixing files and in-memory clips works; files mixed with texts, or a missing audio file, are refused in one line."""

import shutil

import numpy as np
import pytest
import torch

import clapforge
from clapforge import LaionClapProcessor
from clapforge.data.prepare_inputs import AUDIO_EXTENSIONS
from conftest import make_tokenizer, randomize_, write_wav

EXTENSIONS = [".oga", ".opus", ".m4a", ".webm", ".aiff", ".aif", ".flac", ".mp3", ".ogg", ".wav"]


@pytest.fixture(scope="module")
def st_model(tmp_path_factory):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    tmp = tmp_path_factory.mktemp("st")
    torch.manual_seed(0)
    model = randomize_(clapforge.create_model("test-tiny"))
    folder = tmp / "model"
    model.save_pretrained(folder)
    LaionClapProcessor(clapforge.create_feature_extractor("test-tiny", model.config), make_tokenizer()).save_pretrained(
        folder
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_MODULES_CACHE", str(tmp / "modules"))
        st = sentence_transformers.SentenceTransformer(
            str(folder), trust_remote_code=True, local_files_only=True, device="cpu"
        )
    st.folder = folder
    return st, tmp


def test_module_extensions_are_clapforges():
    from clapforge.modeling_clap.sentence_transformers_laion_clap import AUDIO_EXTENSIONS as module_extensions

    assert set(module_extensions) == set(AUDIO_EXTENSIONS)


def test_audio_paths_of_every_extension_are_audio(st_model):
    st, tmp = st_model
    wav = write_wav(tmp / "bell.wav", seed=3, seconds=1.0)
    paths = []
    for ext in EXTENSIONS:  # FFmpeg probes the content, so the same WAV bytes decode under every name
        path = tmp / f"bell{ext}"
        if path != wav:
            shutil.copyfile(wav, path)
        paths.append(str(path))
    audio = st.encode(paths, convert_to_tensor=True)
    reference = torch.as_tensor(clapforge.embed_audio([str(wav)], model=st.folder, precision="fp32")).float()
    for path, embedding in zip(paths, audio, strict=True):
        cosine = torch.nn.functional.cosine_similarity(embedding[None], reference).item()
        assert cosine >= 0.99999, (path, cosine)
    # Before this module, `encode(["bell.oga"])` was the text embedding of the path (cosine 1.0).
    text_of_path = torch.as_tensor(clapforge.embed_text([paths[0]], model=st.folder, precision="fp32")).float()
    assert torch.nn.functional.cosine_similarity(audio[:1].float(), text_of_path).item() < 0.99


def test_files_and_arrays_in_one_batch(st_model):
    st, tmp = st_model
    wav = write_wav(tmp / "mixed.wav", seed=5, seconds=1.0)
    oga = tmp / "mixed.oga"
    shutil.copyfile(wav, oga)
    rate = st[0].processor.feature_extractor.sampling_rate
    clip = {"array": (0.3 * np.sin(np.arange(rate) * 0.05)).astype(np.float32), "sampling_rate": rate}
    mixed = st.encode([str(wav), clip], convert_to_tensor=True)
    separate = torch.cat([st.encode([str(wav)], convert_to_tensor=True), st.encode([clip], convert_to_tensor=True)])
    torch.testing.assert_close(mixed, separate, atol=1e-5, rtol=0)
    # An extension sentence-transformers does not know, beside a clip with its rate.
    mixed = st.encode([clip, str(oga), str(wav)], convert_to_tensor=True)
    torch.testing.assert_close(mixed, separate[[1, 0, 0]], atol=1e-5, rtol=0)
    # Files of extensions sentence-transformers knows and does not know, in one list.
    torch.testing.assert_close(st.encode([str(oga), str(wav)], convert_to_tensor=True), separate[[0, 0]],
                               atol=1e-5, rtol=0)


def test_refusals_are_one_line(st_model):
    st, tmp = st_model
    wav = write_wav(tmp / "alone.wav", seed=7, seconds=0.5)
    oga = tmp / "alone.oga"
    shutil.copyfile(wav, oga)
    with pytest.raises(ValueError, match="mixes audio files and texts") as error:
        st.encode([str(oga), "a dog barks"])
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="no such audio file: .*nothere.oga") as error:
        st.encode([str(tmp / "nothere.oga")])
    assert "\n" not in str(error.value)
    # A text that merely mentions a file name stays text.
    assert st.encode(["the sound in nothere.oga"]).shape[0] == 1
