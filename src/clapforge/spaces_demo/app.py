"""A Gradio demo of a CLAP model: zero-shot classification, text-to-audio search, audio-to-text ranking.

Runs where clapforge is not installed: the model and its processor come from `MODEL` (a Hub id or a local folder such
as `runs/demo/hub`) through `AutoModel`/`AutoProcessor` with `trust_remote_code=True`, so the model code ships with
the weights. Uploads of any format FFmpeg reads are decoded by torchcodec straight to the model's sampling rate and
averaged to mono.

Environment: MODEL (default runs/demo/hub), MAX_SECONDS (longest clip accepted, default 120), MAX_FILE_SIZE (largest
upload, default 20mb), CONCURRENCY (requests computed at once, default 2), QUEUE_SIZE (requests waiting, default 64),
TABLE (optional: a LanceDB table written by `clapforge embed MODEL INPUT OUT.lance` or `--index DIR`, local or on
object storage, made with this MODEL; the search tab then ranks its rows instead of the gallery, through the table's
ANN index when it has one; needs `lancedb` installed, imported only then), BACKEND (`torch`, the default, or
`onnx`: MODEL is then a folder written by `clapforge export MODEL OUT --format onnx`, or a model folder holding its
`onnx/` graphs, and ONNX Runtime runs the two towers; needs `onnxruntime`), PRECISION (`fp32`, the default; with
BACKEND=torch also `bf16`, bfloat16 autocast, faster on hardware with bf16 kernels; with BACKEND=onnx also `int8`
for an export made with `--quantize int8`).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

MAX_SECONDS = float(os.environ.get("MAX_SECONDS", "120"))
MAX_FILE_SIZE = os.environ.get("MAX_FILE_SIZE", "20mb")
CONCURRENCY = int(os.environ.get("CONCURRENCY", "2"))
QUEUE_SIZE = int(os.environ.get("QUEUE_SIZE", "64"))
# The one copy outside clapforge.prompts: a Space runs without clapforge (tests/test_space.py checks both).
DEFAULT_PROMPT = "This is a sound of {label}."
EXAMPLES_DIR = Path(__file__).parent / "examples"
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".aiff", ".aif"}
TOP_K = 5  # audio players shown for a search; the table ranks every clip
TABLE_ROWS = 100  # rows of a TABLE shown for a search
# Copies of clapforge.tools.table_search's NPROBES and REFINE_FACTOR (the Space runs without clapforge; a test checks).
TABLE_NPROBES = 10
TABLE_REFINE_FACTOR = 3
# Any of these in a model folder means it carries a tokenizer (transformers writes tokenizer_config.json with any).
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json", "vocab.txt", "spiece.model")
# The graphs of an ONNX export (clapforge.inference.onnx_backend.GRAPH_FILES; copied: the Space runs without clapforge).
ONNX_GRAPHS = {
    ("audio", "fp32"): "onnx/audio_model.onnx",
    ("text", "fp32"): "onnx/text_model.onnx",
    ("audio", "int8"): "onnx/audio_model_quantized.onnx",
    ("text", "int8"): "onnx/text_model_quantized.onnx",
}


def example_clips() -> list[str]:
    """The built-in gallery: short clips of the synthetic corpus (`clapforge synth`), one per sound type."""
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def parse_lines(text: str | None, what: str) -> list[str]:
    """Items one per line, or comma-separated when there is a single line; blanks and repeats dropped."""
    text = (text or "").strip()
    parts = text.splitlines() if "\n" in text else text.split(",")
    items = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not items:
        raise gr.Error(f"Type at least one {what}.")
    return items


def load_processor(model_path: str) -> Any:
    """The model's processor; a ValueError naming the folder and the fix when it has no tokenizer.

    Every tab embeds text, so a model without a tokenizer (`clapforge convert ... --no-tokenizer`) is refused at start.
    Without tokenizer files AutoProcessor returns the bare feature extractor (the app would fail at its first request
    with an AttributeError), or, where clapforge has registered its processor class, fails to build the tokenizer.
    """
    try:
        processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    except (OSError, ValueError) as error:
        if os.path.isdir(model_path) and not any(os.path.isfile(os.path.join(model_path, f)) for f in TOKENIZER_FILES):
            raise ValueError(missing_tokenizer_message(model_path)) from error
        raise
    if getattr(processor, "tokenizer", None) is None:
        raise ValueError(missing_tokenizer_message(model_path))
    return processor


def missing_tokenizer_message(model_path: str) -> str:
    return (
        f"MODEL={model_path} has no tokenizer, so it cannot embed text (labels, queries, captions). Convert it again "
        "with `clapforge convert CHECKPOINT OUT --tokenizer roberta-base` (the tokenizer of LAION-CLAP's RoBERTa text "
        "towers; for another text tower, its own tokenizer), or save the text tower's tokenizer into the folder: "
        f"`AutoTokenizer.from_pretrained(NAME).save_pretrained({model_path!r})`."
    )


class TableIndex:
    """The `files` table of a clapforge LanceDB table output (TABLE), searched by cosine similarity.

    `library_root` is the folder holding every row's file (None if they share none): the app may serve those files
    to the players (Gradio serves only allowed paths), and a player is shown only for a file the Space can read.
    """

    def __init__(self, uri: str) -> None:
        try:
            import lancedb
        except ImportError as error:
            raise ValueError(f"TABLE={uri} needs the lancedb package: add `lancedb` to requirements.txt "
                             "(or unset TABLE to search the gallery)") from error
        try:
            self.table = lancedb.connect(uri).open_table("files")
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(f"TABLE={uri} is not a clapforge table (no 'files' table in it): make it with "
                             "`clapforge embed MODEL INPUT OUT.lance`") from error
        self.indexed = any("embedding" in (i.columns or []) for i in self.table.list_indices())
        paths = [p for p in self.table.search().select(["path"]).limit(None).to_arrow().column("path").to_pylist()
                 if p and not p.startswith(("s3://", "gs://", "az://", "hf://"))]
        try:
            self.library_root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) or None
        except ValueError:  # no paths, or paths on different drives
            self.library_root = None

    def search(self, query: torch.Tensor, limit: int) -> list[dict[str, Any]]:
        """[{"key", "path", "score"}] of the `limit` rows nearest to the (E,) query, best first."""
        builder = self.table.search(query.float().numpy(), vector_column_name="embedding")
        builder = builder.distance_type("cosine").limit(limit).select(["key", "path", "_distance"])
        if self.indexed:
            builder = builder.nprobes(TABLE_NPROBES).refine_factor(TABLE_REFINE_FACTOR)
        return [{"key": r["key"], "path": r["path"], "score": 1.0 - float(r["_distance"])}
                for r in builder.to_arrow().to_pylist()]


class OnnxTowers:
    """The two towers of an ONNX export in ONNX Runtime sessions, answering as the PyTorch model does (torch tensors
    in and out), for BACKEND=onnx."""

    def __init__(self, model_path: str, precision: str) -> None:
        import json

        try:
            import onnxruntime as ort
        except ImportError as error:
            raise ValueError("BACKEND=onnx needs onnxruntime: add `onnxruntime` to requirements.txt") from error
        folder = Path(model_path)
        manifest = folder / "onnx" / "manifest.json"
        if not manifest.is_file():
            raise ValueError(f"BACKEND=onnx: {model_path} has no onnx/manifest.json; write one with "
                             f"`clapforge export {model_path} OUT --format onnx` and set MODEL=OUT")
        self.manifest = json.loads(manifest.read_text())
        if precision not in self.manifest["precisions"]:
            raise ValueError(f"PRECISION={precision}: {model_path} was exported at {self.manifest['precisions']}")
        self.logit_scale_a = torch.tensor(float(self.manifest["logit_scale_a"]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.sessions = {
            # int8 runs the int8 audio graph and the fp32 text one (clapforge.inference.onnx_backend.graph_precision)
            tower: ort.InferenceSession(str(folder / ONNX_GRAPHS[(tower, precision if tower == "audio" else "fp32")]),
                                        options, providers=["CPUExecutionProvider"])
            for tower in ("audio", "text")
        }

    def get_audio_embeds(self, input_features: torch.Tensor, is_longer: torch.Tensor | None) -> torch.Tensor:
        session = self.sessions["audio"]
        feed = {"input_features": input_features.numpy().astype(np.float32)}
        if any(i.name == "is_longer" for i in session.get_inputs()):
            longer = torch.zeros(len(input_features), 1, dtype=torch.bool) if is_longer is None else is_longer
            feed["is_longer"] = longer.reshape(-1, 1).numpy()
        return torch.from_numpy(session.run(["audio_embeds"], feed)[0])  # (N, E)

    def get_text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        feed = {"input_ids": input_ids.numpy().astype(np.int64), "attention_mask": mask.numpy().astype(np.int64)}
        return torch.from_numpy(self.sessions["text"].run(["text_embeds"], feed)[0])  # (T, E)


def load_towers(model_path: str, backend: str, precision: str) -> Any:
    """The model (BACKEND=torch) or the ONNX towers (BACKEND=onnx); a ValueError for any other setting."""
    if backend == "torch":
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"PRECISION={precision} needs BACKEND=onnx (the PyTorch model runs in fp32 or bf16)")
        return AutoModel.from_pretrained(model_path, trust_remote_code=True).eval()
    if backend == "onnx":
        if precision not in ("fp32", "int8"):
            raise ValueError(f"PRECISION must be fp32 or int8 with BACKEND=onnx, got {precision!r}")
        return OnnxTowers(model_path, precision)
    raise ValueError(f"BACKEND must be torch or onnx, got {backend!r}")


class ClapDemo:
    """The loaded model and processor (and TABLE, if given), and the three functions the tabs call."""

    def __init__(self, model_path: str, table: str | None = None, backend: str = "torch",
                 precision: str = "fp32") -> None:
        self.processor = load_processor(model_path)
        self.model = load_towers(model_path, backend, precision)
        # bf16 runs the PyTorch towers under autocast (clapforge's `EmbeddingEngine.running` does the same).
        self.bf16 = backend == "torch" and precision == "bf16"
        self.sampling_rate = int(self.processor.feature_extractor.sampling_rate)
        # A fast tokenizer is not safe to call from two threads at once ("Already borrowed"); the model is.
        self._tokenizer_lock = threading.Lock()
        self._gallery_cache: dict[tuple[str, int, float], torch.Tensor] = {}
        self.table = TableIndex(table) if table else None

    # ---- inputs ---------------------------------------------------------------------------------------------------

    def load_audio(self, path: str | None) -> torch.Tensor:
        """(T,) float32 mono at the model's rate; a clear gr.Error for a missing, unreadable or too long clip."""
        from torchcodec.decoders import AudioDecoder

        if not path:
            raise gr.Error("Upload or record a clip first.")
        name = Path(path).name
        try:
            decoder = AudioDecoder(path, sample_rate=self.sampling_rate)
            header_seconds = decoder.metadata.duration_seconds_from_header
            if header_seconds is not None and header_seconds > MAX_SECONDS:
                raise gr.Error(self._too_long(name, header_seconds))
            samples = decoder.get_all_samples().data  # (C, T)
        except gr.Error:
            raise
        except Exception as error:  # torchcodec raises RuntimeError/ValueError with FFmpeg's reason
            raise gr.Error(f"Could not decode {name} as audio ({type(error).__name__}).") from error
        seconds = samples.shape[-1] / self.sampling_rate
        if seconds > MAX_SECONDS:
            raise gr.Error(self._too_long(name, seconds))
        if samples.shape[-1] == 0:
            raise gr.Error(f"{name} holds no audio.")
        return samples.mean(dim=0)  # (T,)

    @staticmethod
    def _too_long(name: str, seconds: float) -> str:
        return f"{name} is {seconds:.0f} s long; this demo accepts clips up to {MAX_SECONDS:.0f} s. Trim it and retry."

    # ---- embeddings -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def audio_embeds(self, clips: list[torch.Tensor]) -> torch.Tensor:
        features = self.processor.feature_extractor(clips, sampling_rate=self.sampling_rate, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.model.get_audio_embeds(features["input_features"], features.get("is_longer")).float()  # (N, E)

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        with self._tokenizer_lock:
            tokens = self.processor(text=texts, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.model.get_text_embeds(tokens["input_ids"], tokens.get("attention_mask")).float()  # (T, E)

    def gallery_embeds(self, paths: list[str]) -> torch.Tensor:
        """(N, E), cached per file (path, size, mtime): the built-in gallery is embedded once per process."""
        keys = [(p, os.path.getsize(p), os.path.getmtime(p)) for p in paths]
        missing = [k for k in keys if k not in self._gallery_cache]
        for key in missing:
            self._gallery_cache[key] = self.audio_embeds([self.load_audio(key[0])])[0]
        return torch.stack([self._gallery_cache[k] for k in keys])

    # ---- the tabs -------------------------------------------------------------------------------------------------

    def classify(self, audio: str | None, labels_text: str, prompt: str) -> tuple[dict[str, float], str]:
        """Label -> probability (softmax over the labels' prompts) and the prompts used, one per line."""
        labels = parse_lines(labels_text, "label")
        prompt = (prompt or "").strip() or DEFAULT_PROMPT
        if "{label}" not in prompt:
            raise gr.Error("The prompt must contain {label}, e.g. " + DEFAULT_PROMPT)
        prompts = [prompt.replace("{label}", label) for label in labels]
        audio_embeds = self.audio_embeds([self.load_audio(audio)])  # (1, E)
        logits = self.model.logit_scale_a.exp() * audio_embeds @ self.text_embeds(prompts).T  # (1, K)
        probabilities = logits.softmax(dim=-1)[0].tolist()
        return dict(zip(labels, probabilities, strict=True)), "\n".join(prompts)

    def search(self, query: str, files: list[str] | None, use_examples: bool) -> tuple[Any, ...]:
        """A ranking table of every gallery clip (rank, clip, cosine similarity) and players for the top ones."""
        query = (query or "").strip()
        if not query:
            raise gr.Error("Type a query, e.g. 'a dog barking'.")
        if self.table is not None:
            return self.search_table(query)
        paths = [str(f) for f in files or []] + (example_clips() if use_examples else [])
        if not paths:
            raise gr.Error("Upload some clips or tick 'Include the built-in example clips'.")
        scores = (self.gallery_embeds(paths) @ self.text_embeds([query]).T)[:, 0]  # (N,)
        order = scores.argsort(descending=True).tolist()
        table = [[rank + 1, Path(paths[i]).name, round(float(scores[i]), 4)] for rank, i in enumerate(order)]
        players = [
            gr.Audio(value=paths[i], label=f"{rank + 1}. {Path(paths[i]).name} ({float(scores[i]):.3f})", visible=True)
            for rank, i in enumerate(order[:TOP_K])
        ]
        players += [gr.Audio(value=None, visible=False)] * (TOP_K - len(players))
        return (table, *players)

    def search_table(self, query: str) -> tuple[Any, ...]:
        """The TABLE_ROWS rows of TABLE nearest to the query (rank, key, cosine similarity), players for the top ones
        whose file the Space can read."""
        found = self.table.search(self.text_embeds([query])[0], TABLE_ROWS)
        table = [[rank + 1, row["key"], round(row["score"], 4)] for rank, row in enumerate(found)]
        players = [
            gr.Audio(value=row["path"], label=f"{rank + 1}. {row['key']} ({row['score']:.3f})", visible=True)
            for rank, row in enumerate(found[:TOP_K]) if row["path"] and os.path.isfile(row["path"])
        ]
        players += [gr.Audio(value=None, visible=False)] * (TOP_K - len(players))
        return (table, *players)

    def rank_captions(self, audio: str | None, captions_text: str) -> tuple[list[list[Any]], dict[str, float]]:
        """Captions ranked by cosine similarity with the clip, and the softmax over them."""
        captions = parse_lines(captions_text, "caption")
        audio_embeds = self.audio_embeds([self.load_audio(audio)])  # (1, E)
        similarity = (audio_embeds @ self.text_embeds(captions).T)[0]  # (K,)
        probabilities = (self.model.logit_scale_a.exp() * similarity).softmax(dim=-1).tolist()
        order = similarity.argsort(descending=True).tolist()
        table = [[rank + 1, captions[i], round(float(similarity[i]), 4)] for rank, i in enumerate(order)]
        return table, dict(zip(captions, probabilities, strict=True))


def build_demo(model_path: str, table: str | None = None, backend: str = "torch", precision: str = "fp32") -> gr.Blocks:
    """The Blocks app with its queue configured; launch it with `demo.launch(**launch_kwargs(demo))`."""
    app = ClapDemo(model_path, table, backend, precision)
    examples = example_clips()
    with gr.Blocks(title="CLAP demo") as demo:
        gr.Markdown(
            f"# CLAP: audio and text in one space\nModel: `{model_path}`. Clips up to {MAX_SECONDS:.0f} s and "
            f"{MAX_FILE_SIZE}, any common format, rate or channel count."
        )
        with gr.Tab("Zero-shot classification"):
            with gr.Row():
                with gr.Column():
                    clip = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip")
                    labels = gr.Textbox(
                        label="Labels",
                        lines=4,
                        value="a dog barking\na siren\nrain\na bell",
                        info="One per line, or comma-separated.",
                    )
                    prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT, info="{label} is replaced by each label.")
                    classify = gr.Button("Classify", variant="primary")
                with gr.Column():
                    probabilities = gr.Label(label="Probabilities", num_top_classes=10)
                    prompts_used = gr.Textbox(label="Prompts used", lines=4, interactive=False)
            if examples:
                gr.Examples([[p] for p in examples], inputs=[clip], label="Example clips")
            classify.click(app.classify, [clip, labels, prompt], [probabilities, prompts_used], api_name="classify")

        with gr.Tab("Text-to-audio search"):
            with gr.Row():
                with gr.Column():
                    query = gr.Textbox(label="Query", value="a dog barking")
                    if app.table is not None:
                        gr.Markdown(f"Searching the table `{table}` ({app.table.table.count_rows()} clips).")
                    files = gr.File(label="Clips to search", file_count="multiple", type="filepath",
                                    visible=app.table is None)
                    use_examples = gr.Checkbox(label="Include the built-in example clips", value=True,
                                               visible=app.table is None)
                    search = gr.Button("Search", variant="primary")
                with gr.Column():
                    ranking = gr.Dataframe(headers=["rank", "clip", "similarity"], label="Ranking", interactive=False)
                    players = [gr.Audio(label=f"{i + 1}.", visible=False, interactive=False) for i in range(TOP_K)]
            search.click(app.search, [query, files, use_examples], [ranking, *players], api_name="search")

        with gr.Tab("Audio-to-text"):
            with gr.Row():
                with gr.Column():
                    rank_clip = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip")
                    captions = gr.Textbox(
                        label="Captions",
                        lines=5,
                        info="One per line.",
                        value="a dog barks twice\na police siren wails\nrain falls on a roof\na bell rings",
                    )
                    rank = gr.Button("Rank captions", variant="primary")
                with gr.Column():
                    caption_table = gr.Dataframe(
                        headers=["rank", "caption", "similarity"], label="Ranking", interactive=False
                    )
                    caption_probabilities = gr.Label(label="Probabilities", num_top_classes=10)
            if examples:
                gr.Examples([[p] for p in examples], inputs=[rank_clip], label="Example clips")
            rank.click(
                app.rank_captions, [rank_clip, captions], [caption_table, caption_probabilities], api_name="rank"
            )
    # Concurrent users wait in the queue (up to QUEUE_SIZE of them) instead of failing; CONCURRENCY run at once.
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.library_root = app.table.library_root if app.table is not None else None  # read by launch_kwargs
    return demo


def launch_kwargs(demo: gr.Blocks | None = None) -> dict[str, Any]:
    """What `launch` needs besides host and port: the upload limit and access to the example clips (and to the
    files of TABLE, for the players)."""
    root = getattr(demo, "library_root", None)
    return {"max_file_size": MAX_FILE_SIZE, "allowed_paths": [str(EXAMPLES_DIR)] + ([root] if root else [])}


if __name__ == "__main__":
    try:
        demo = build_demo(os.environ.get("MODEL", "runs/demo/hub"), os.environ.get("TABLE") or None,
                          os.environ.get("BACKEND", "torch"), os.environ.get("PRECISION", "fp32"))
    except ValueError as error:  # a folder or table the demo cannot serve: the message says why and what to do
        sys.exit(f"app.py: {error}")
    demo.launch(**launch_kwargs(demo))
