"""A saved folder is a Hub repo: it loads and runs with trust_remote_code where clapforge cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch

import clapforge
from clapforge import LaionClapProcessor
from conftest import HUB_CODE_FILES, tone

TEXTS = ["a dog barks in the rain", "a siren"]

REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["clapforge"] = None  # from here on, `import clapforge` raises ImportError
    import numpy as np, torch
    from transformers import AutoModel, AutoProcessor
    folder, out, TEXTS = sys.argv[1], sys.argv[2], sys.argv[3:]
    try:
        import clapforge
        raise SystemExit("clapforge was importable")
    except ImportError:
        pass
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert not type(model).__module__.startswith("clapforge"), type(model).__module__
    clips = list(np.load(folder + "/clips.npz").values())
    inputs = processor(text=TEXTS, audio=clips, sampling_rate=48000)
    with torch.no_grad():
        output = model(**inputs)
    torch.save({"audio": output.audio_embeds, "text": output.text_embeds, "features": inputs["input_features"],
                "module": type(model).__module__}, out)
    """
)


def run_without_clapforge(folder, tmp_path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    out = tmp_path / "remote.pt"
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(folder), str(out), *TEXTS],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


def test_saved_folder_runs_without_clapforge(tiny_fused_model, tokenizer, tmp_path):
    folder = tmp_path / "repo"
    processor = LaionClapProcessor(clapforge.create_feature_extractor("test-tiny", tiny_fused_model.config), tokenizer)
    tiny_fused_model.save_pretrained(folder)
    processor.save_pretrained(folder)
    files = {p.name for p in folder.iterdir()}
    code = HUB_CODE_FILES
    assert code <= files, code - files
    assert "model.safetensors" in files
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_laion_clap.LaionClapModel"
    clips = [tone(3.0, 440), tone(14.0, 880, seed=1)]  # one short clip, one that takes the fusion path
    np.savez(folder / "clips.npz", *clips)

    remote = run_without_clapforge(folder, tmp_path)
    inputs = processor(text=TEXTS, audio=clips, sampling_rate=48000)
    with torch.no_grad():
        local = tiny_fused_model(**inputs)
    assert remote["module"].startswith("transformers_modules")
    assert inputs["is_longer"].tolist() == [[False], [True]]
    torch.testing.assert_close(remote["features"], inputs["input_features"], atol=0, rtol=0)
    torch.testing.assert_close(remote["audio"], local.audio_embeds, atol=0, rtol=0)
    torch.testing.assert_close(remote["text"], local.text_embeds, atol=0, rtol=0)


def test_auto_classes_resolve_in_process(tiny_model, tokenizer, tmp_path):
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor

    tiny_model.save_pretrained(tmp_path)
    LaionClapProcessor(clapforge.create_feature_extractor("test-tiny"), tokenizer).save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "LaionClapConfig"
    assert type(AutoModel.from_pretrained(tmp_path)).__name__ == "LaionClapModel"
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)).__name__ == "LaionClapFeatureExtractor"
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(processor).__name__ == "LaionClapProcessor"
    assert processor.feature_extractor.truncation == "rand_trunc"
