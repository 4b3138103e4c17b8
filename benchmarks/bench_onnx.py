"""Every backend and precision that runs the audio tower on this CPU, side by side in one run, against transformers'
`ClapModel` fp32 and against the machine's measured GEMM peaks; then end-to-end `clapforge embed`; then parity and
int8 accuracy on real audio and on `make demo`'s trained model.

1. Audio tower, htsat-tiny (unfused, random weights), batch 8 of log-mel features of rendered synthetic-corpus clips,
   calls interleaved round by round (`bench_model.interleaved_times`): transformers fp32 (the peer), clapforge
   PyTorch fp32 eager, fp32 `--compile`, bf16 autocast (eager), ONNX Runtime fp32, int8 dynamic and int8 static.
   clips/s, speed-up over the peer (median of per-round ratios), min cosine to PyTorch fp32, model file size, and
   peak RSS of a fresh process that loads the backend and embeds three batches (`--memory-child`).
2. Hardware bound: fp32 GEMM GFLOP/s (torch and ORT MatMul) and int8 GEMM GOP/s (ORT MatMulInteger), 1024^3, on
   the same threads; the tower's GFLOP per clip (torch's FLOP counter) turns them into clips/s bounds.
3. End to end: `embed_files` over --files 10 s WAVs with every backend, against the transformers decode + extract +
   `get_audio_features` loop (`bench_embed.transformers_loop`), median of --rounds alternating rounds.
4. Parity on real decoded audio of 1-30 s (htsat-tiny, fused and unfused; cosine >= 0.99999 is the goal), and on
   the demo model (`runs/demo/hub`, if `make demo` has run): audio and text parity, and zero-shot top-1 on its
   held-out test split in fp32 and int8 (goal: within 1 point, the same top-1 label on >= 97% of clips).

    .venv/bin/python benchmarks/bench_onnx.py [--files 64] [--rounds 5] [--write]

--write replaces the "## ONNX backends" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

import clapforge
from bench_embed import make_folder, transformers_loop
from bench_model import _status_mb, interleaved_times, paired_ratio, replace_section
from clapforge.convert import clapforge_to_transformers_config, to_transformers_model
from clapforge.data.shards import decode_audio
from clapforge.data.synth import plan_corpus, render_spec
from clapforge.export.onnx_folder import export_model
from clapforge.export.onnx_graphs import cosines
from clapforge.inference.embedding import compile_audio_tower, embed_audio_batches, embed_texts
from clapforge.inference.loading import load_engine, load_model
from clapforge.inference.onnx_backend import ONNX_DIR, OnnxClapModel, open_session
from clapforge.inference.precision import choose_precision as choose
from clapforge.tools.embed import embed_files
from clapforge.tools.embeddings_file import read_index

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## ONNX backends"
BATCH = 8
DEMO = Path("runs/demo/hub")
DEMO_CORPUS = Path("runs/demo/corpus")
GOAL_TOWER, GOAL_E2E = 3.0, 3.5


def corpus_features(extractor, n: int = BATCH) -> dict[str, torch.Tensor]:
    clips = [render_spec(spec, extractor.sampling_rate) for spec in plan_corpus(n, seed=7)[:n]]
    features = extractor(clips, sampling_rate=extractor.sampling_rate, return_tensors="pt")
    return {"input_features": features["input_features"], "is_longer": features["is_longer"].reshape(-1, 1)}


def build(tmp: Path) -> dict[str, Path]:
    """htsat-tiny saved, and exported with int8 by both methods (audio tower only: no tokenizer)."""
    torch.manual_seed(0)
    model = clapforge.create_model("htsat-tiny").eval()
    model.save_pretrained(tmp / "model")
    clapforge.create_feature_extractor("htsat-tiny", model.config).save_pretrained(tmp / "model")
    for method in ("dynamic", "static"):
        export_model(tmp / "model", tmp / method, quantize="int8", method=method, log=lambda _: None)
    # What a user deploying on CPUs holds: the model folder with its own int8 export (`clapforge export M M --quantize
    # int8`), where `precision="auto"` may take either backend.
    shutil.copytree(tmp / "model", tmp / "both")
    export_model(tmp / "both", tmp / "both", quantize="int8", log=lambda _: None)
    return {"model": tmp / "model", "dynamic": tmp / "dynamic", "static": tmp / "static", "both": tmp / "both"}


DEFAULT = "clapforge default (precision auto)"
CONTENDERS = [
    "transformers ClapModel fp32 (peer)",
    DEFAULT,
    "clapforge PyTorch fp32",
    "clapforge PyTorch fp32 --compile",
    "clapforge PyTorch bf16 autocast",
    "ONNX Runtime fp32",
    "ONNX Runtime int8 dynamic",
    "ONNX Runtime int8 static",
]


def contender(name: str, folders: dict[str, Path]) -> tuple:
    """(callable on a features dict, bytes of the weights file it runs) of one CONTENDERS entry."""
    if name == DEFAULT:
        engine = load_engine(folders["both"], "cpu", precision="auto")
        size = sum(t.numel() * 4 for n, t in load_model(folders["model"], "cpu")[0].state_dict().items()
                   if n.startswith("audio_"))
        return (lambda f: engine.embed_features(f["input_features"], f["is_longer"])), size
    if name.startswith("ONNX"):
        folder, precision = (folders["static"], "int8") if "static" in name else (
            folders["dynamic"], "int8" if "int8" in name else "fp32")
        onnx_model = OnnxClapModel(folder, precision)
        graph = onnx_model.manifest["graphs"][f"audio_{precision}"]
        return (lambda f: onnx_model.get_audio_embeds(**f)), graph["bytes"]
    model, _ = load_model(folders["model"], "cpu")
    size = sum(t.numel() * 4 for n, t in model.state_dict().items() if n.startswith("audio_"))
    if name.startswith("transformers"):
        twin = to_transformers_model(model).eval()
        return (lambda f: torch.nn.functional.normalize(twin.get_audio_features(
            input_features=f["input_features"], is_longer=f["is_longer"]).pooler_output, dim=-1)), size
    if "compile" in name:
        compiled = compile_audio_tower(model)
        return (lambda f: compiled(f["input_features"], f["is_longer"])), size
    if "bf16" in name:
        return (lambda f: _bf16(model, f)), size
    return (lambda f: model.get_audio_embeds(**f)), size


def _bf16(model, features):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model.get_audio_embeds(**features).float()


def tower_rows(folders: dict[str, Path], rounds: int) -> list[dict]:
    runs = {name: contender(name, folders) for name in CONTENDERS}
    _, processor = load_model(folders["model"], "cpu")
    features = corpus_features(processor)
    with torch.inference_mode():
        outputs = {name: call(features).float().numpy() for name, (call, _) in runs.items()}
        times = interleaved_times({name: (lambda c=call: c(features)) for name, (call, _) in runs.items()},
                                  warmup=2, rounds=rounds)
    reference = outputs["clapforge PyTorch fp32"]
    return [{"name": name, "clips_s": BATCH / statistics.median(times[name]),
             "ratio": paired_ratio(times[CONTENDERS[0]], times[name]),
             "cosine": float(cosines(reference, outputs[name]).min()), "mb": size / 1e6,
             "peak_mb": measure_memory(name, folders)} for name, (_, size) in runs.items()]


def memory_child(name: str, folders: dict[str, Path]) -> str:
    """Peak RSS (MiB) of this fresh process loading one contender's audio tower alone (the export has no text graph,
    so neither may the others) and embedding three batches, and how much of it came after the imports."""
    imports = _status_mb("VmRSS")
    extractor = clapforge.create_feature_extractor("htsat-tiny")
    if name.startswith("ONNX"):
        call, _ = contender(name, folders)
    elif name.startswith("transformers"):
        config = clapforge_to_transformers_config(clapforge.load_preset_config("htsat-tiny"))
        tower = transformers.ClapAudioModelWithProjection(transformers.ClapConfig(**config).audio_config).eval()

        def call(f):
            return tower(input_features=f["input_features"], is_longer=f["is_longer"]).audio_embeds
    else:
        model = clapforge.LaionClapAudioModelWithProjection.from_pretrained(folders["model"]).eval()
        compiled = compile_audio_tower(model) if "compile" in name else None

        def call(f):
            if compiled is not None:
                return compiled(f["input_features"], f["is_longer"])
            if "bf16" in name:
                return _bf16(model, f)
            return model.get_audio_embeds(**f)
    features = corpus_features(extractor)
    with torch.inference_mode():
        for _ in range(3):
            call(features)
    return f"{_status_mb('VmHWM'):.0f} ({_status_mb('VmHWM') - imports:+.0f})"


def measure_memory(name: str, folders: dict[str, Path]) -> str:
    if name == DEFAULT:
        return "as the backend it chose"  # it loads the whole model (both towers), so it is not comparable
    command = [sys.executable, __file__, "--memory-child", name, json.dumps({k: str(v) for k, v in folders.items()})]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child for {name} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def gemm_bounds(threads: int, n: int = 1024) -> dict[str, float]:
    """GFLOP/s of fp32 GEMM (torch, ORT) and GOP/s of int8 GEMM (ORT MatMulInteger) on n x n x n."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def ort_rate(op: str, a_type, b_type, a, b) -> float:
        graph = helper.make_graph(
            [helper.make_node(op, ["a", "b"], ["y"])], "gemm",
            [helper.make_tensor_value_info("a", a_type, [n, n]), helper.make_tensor_value_info("b", b_type, [n, n])],
            [helper.make_tensor_value_info("y", TensorProto.INT32 if op == "MatMulInteger" else TensorProto.FLOAT,
                                           [n, n])])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                       .SerializeToString(), options, providers=["CPUExecutionProvider"])
        return 2 * n**3 / _median_time(lambda: session.run(None, {"a": a, "b": b})) / 1e9

    assert onnx  # imported for helper's protobufs
    rng = np.random.default_rng(0)
    a32, b32 = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a32), torch.from_numpy(b32)
    return {
        "torch fp32": 2 * n**3 / _median_time(lambda: ta @ tb) / 1e9,
        "ORT fp32": ort_rate("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, a32, b32),
        "ORT int8 (u8 x s8)": ort_rate("MatMulInteger", TensorProto.UINT8, TensorProto.INT8,
                                       rng.integers(0, 255, (n, n), dtype=np.uint8),
                                       rng.integers(-127, 127, (n, n), dtype=np.int8)),
    }


def _median_time(call, repeats: int = 15) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tower_gflop(folder: Path) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model, processor = load_model(folder, "cpu")
    features = corpus_features(processor, 1)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.get_audio_embeds(**features)
    return counter.get_total_flops() / 1e9


def end_to_end(folders: dict[str, Path], files: int, rounds: int, tmp: Path) -> tuple[list[dict], float]:
    paths = make_folder(tmp / "audio", files)
    model, _ = load_model(folders["model"], "cpu")
    twin = to_transformers_model(model).eval()
    extractor = transformers.ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="rand_trunc",
                                                  padding="repeatpad")
    pipelines = {
        "default": (folders["both"], "auto", "auto"),
        "PyTorch fp32": (folders["model"], "torch", "fp32"),
        "ONNX Runtime fp32": (folders["dynamic"], "onnx", "fp32"),
        "ONNX Runtime int8 dynamic": (folders["dynamic"], "onnx", "int8"),
        "ONNX Runtime int8 static": (folders["static"], "onnx", "int8"),
    }
    times: dict[str, list[float]] = {name: [] for name in pipelines} | {"transformers": []}
    embeds = {}
    for folder, backend, precision in pipelines.values():  # warm-up (loading, first sessions)
        embed_files(folder, tmp / "audio", tmp / "warm.parquet", overwrite=True, progress=False, backend=backend,
                    precision=precision)
    reference = transformers_loop(paths[:4], extractor, twin, 16)
    for _ in range(rounds):
        for name, (folder, backend, precision) in pipelines.items():
            start = time.perf_counter()
            embed_files(folder, tmp / "audio", tmp / "e2e.parquet", overwrite=True, progress=False, backend=backend,
                        precision=precision, num_workers=2)
            times[name].append(time.perf_counter() - start)
            embeds[name] = read_index(tmp / "e2e.parquet").embeddings.numpy()
        start = time.perf_counter()
        reference = transformers_loop(paths, extractor, twin, 16).numpy()
        times["transformers"].append(time.perf_counter() - start)
    peer = files / statistics.median(times["transformers"])
    rows = [{"name": name, "files_s": files / statistics.median(t), "ratio": paired_ratio(times["transformers"], t),
             "cosine": float(cosines(reference, embeds[name]).min())} for name, t in times.items()
            if name != "transformers"]
    return rows, peer


def real_audio_parity(tmp: Path) -> list[str]:
    """min cosine ONNX fp32 vs PyTorch fp32 on decoded WAVs of 1-30 s, fused and unfused htsat-tiny."""
    lines = []
    durations = (1, 4, 9.5, 10, 14, 22, 30)
    audio = []
    for seconds in durations:
        audio += [decode_audio(p, 48000) for p in make_folder(tmp / f"parity-{seconds}", 1, seconds=seconds)]
    for preset in ("htsat-tiny", "htsat-tiny-fused"):
        torch.manual_seed(0)
        model = clapforge.create_model(preset).eval()
        folder = tmp / f"parity-{preset}"
        model.save_pretrained(folder)
        clapforge.create_feature_extractor(preset, model.config).save_pretrained(folder)
        export_model(folder, folder, log=lambda _: None)
        torch_model, processor = load_model(folder, "cpu", backend="torch")
        a = embed_audio_batches(torch_model, processor, audio, 8, 48000).numpy()
        b = embed_audio_batches(OnnxClapModel(folder), processor, audio, 8, 48000).numpy()
        lines.append(f"- {preset} audio, {len(audio)} decoded WAVs of {', '.join(map(str, durations))} s in one "
                     f"batch stream: min cosine {cosines(a, b).min():.7f}, max abs diff {np.abs(a - b).max():.1e}")
    return lines


def demo_accuracy(tmp: Path) -> list[str]:
    """Parity and zero-shot top-1 of the demo model on its held-out test split: PyTorch fp32, ONNX fp32 and int8."""
    from clapforge.demo import held_out_examples
    from clapforge.prompts import DEFAULT_PROMPT, format_prompt

    if not (DEMO / "config.json").is_file():
        return [f"- demo model: {DEMO} not found (run `make demo` first)"]
    examples, classes = held_out_examples(DEMO_CORPUS)
    rate = int(examples[0]["sampling_rate"])
    labelled = [e for e in examples if e.get("labels") and e["labels"][0] in classes]
    targets = np.array([classes.index(e["labels"][0]) for e in labelled])
    prompts = [format_prompt(DEFAULT_PROMPT, c) for c in classes]
    captions = [e["captions"][0] for e in labelled]
    lines = []
    results = {}
    for method in ("dynamic", "static"):
        export_model(DEMO, tmp / f"demo-{method}", quantize="int8", method=method, log=lambda _: None)
    runs = {"PyTorch fp32": load_model(DEMO, "cpu")}
    runs["ONNX fp32"] = (OnnxClapModel(tmp / "demo-dynamic"), runs["PyTorch fp32"][1])
    for method in ("dynamic", "static"):
        runs[f"ONNX int8 {method}"] = (OnnxClapModel(tmp / f"demo-{method}", "int8"), runs["PyTorch fp32"][1])
    for name, (model, processor) in runs.items():
        audio = embed_audio_batches(model, processor, (e["audio"] for e in labelled), 32, rate).numpy()
        text = embed_texts(model, processor, prompts).numpy()
        caption_embeds = embed_texts(model, processor, captions).numpy()
        results[name] = (audio, text, caption_embeds, (audio @ text.T).argmax(1))
    base = results["PyTorch fp32"]
    for name, (audio, _, caption_embeds, predicted) in results.items():
        top1 = (predicted == targets).mean()
        same = (predicted == base[3]).mean()
        lines.append(
            f"| {name} | {top1:.1%} | {top1 - (base[3] == targets).mean():+.1%} | {same:.1%} | "
            f"{cosines(base[0], audio).min():.6f} | {cosines(base[2], caption_embeds).min():.6f} |")
    # Precision int8 keeps the fp32 text graph (`graph_precision`); the int8 text graph on its own, for the record:
    tokens = runs["PyTorch fp32"][1](text=captions)
    feed = {"input_ids": tokens["input_ids"].numpy(), "attention_mask": tokens["attention_mask"].numpy()}
    int8_graph = open_session(tmp / "demo-dynamic" / ONNX_DIR / "text_model_quantized.onnx")
    int8_text = int8_graph.run(["text_embeds"], feed)[0]
    text_note = (f"The int8 text graph alone (`text_model_quantized.onnx`, dynamic), unused by precision int8: "
                 f"min caption cosine to fp32 {cosines(base[2], int8_text).min():.4f}, mean "
                 f"{cosines(base[2], int8_text).mean():.4f}.")
    header = ["| demo model (`runs/demo/hub`), held-out test split | zero-shot top-1 | vs PyTorch fp32 | same top-1 "
              "label as PyTorch fp32 | min audio cosine to fp32 | min caption cosine to fp32 |",
              "|---|---|---|---|---|---|"]
    return header + lines + [f"({len(labelled)} clips, {len(classes)} classes, prompt `{DEFAULT_PROMPT}`; int8 rows "
                             "embed text with the fp32 graph)", "", text_note]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--memory-child", nargs=2, metavar=("NAME", "FOLDERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        name, folders = args.memory_child
        print(memory_child(name, {k: Path(v) for k, v in json.loads(folders).items()}))
        return
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = build(tmp)
        bounds = gemm_bounds(args.threads)
        gflop = tower_gflop(folders["model"])
        towers = tower_rows(folders, args.rounds)
        e2e, peer_files = end_to_end(folders, args.files, args.rounds // 2 + 1, tmp)
        parity = real_audio_parity(tmp)
        accuracy = demo_accuracy(tmp)
    load_end = os.getloadavg()
    text = report(args, load_start, load_end, bounds, gflop, towers, e2e, peer_files, parity, accuracy)
    print(text)
    if args.write:
        RESULTS.write_text(replace_section(RESULTS.read_text(encoding="utf-8"), SECTION, text), encoding="utf-8")


def report(args, load_start, load_end, bounds, gflop, towers, e2e, peer_files, parity, accuracy) -> str:
    import onnxruntime

    command = (f".venv/bin/python benchmarks/bench_onnx.py --files {args.files} --rounds {args.rounds} "
               f"--threads {args.threads}")
    peer = towers[0]["clips_s"]
    lines = [
        f"`{command}`, {datetime.date.today().isoformat()}, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, transformers {transformers.__version__}, {args.threads} threads, "
        f"{os.cpu_count()} CPUs ({torch.backends.cpu.get_cpu_capability()}, native bf16: "
        f"{bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}). 1-minute load average {load_start[0]:.2f} at the "
        f"start, {load_end[0]:.2f} at the end.",
        "",
        f"Audio tower, htsat-tiny (random weights, {gflop:.1f} GFLOP per clip), batch {BATCH} of features of "
        f"synthetic-corpus clips, {args.rounds} interleaved rounds after 2 warm-ups; peak RSS of a fresh process "
        "loading the backend's audio tower alone and embedding 3 batches.",
        "",
        "| backend | clips/s | vs transformers fp32 | min cosine to PyTorch fp32 | model file (MB) | peak RSS, MiB "
        "(after imports) | "
        f"goal >= {GOAL_TOWER:g}x at cosine >= 0.99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in towers:
        met = r["ratio"] >= GOAL_TOWER and r["cosine"] >= 0.99
        lines.append(f"| {r['name']} | {r['clips_s']:.2f} | {r['ratio']:.2f}x | {r['cosine']:.5f} | {r['mb']:.1f} | "
                     f"{r['peak_mb']} | {'met' if met else 'not met'} |")
    lines += ["", "Hardware bound on the same threads (1024 x 1024 x 1024 GEMM, median of 15):", ""]
    for name, rate in bounds.items():
        lines.append(f"- {name}: {rate:.0f} G(FL)OP/s, i.e. at most {rate / gflop:.1f} clips/s for the tower "
                     f"({rate / gflop / peer:.1f}x the peer)")
    lines += ["", f"End to end: `clapforge embed` of {args.files} ten-second 44.1 kHz stereo WAVs (2 DataLoader "
              f"workers, batch 16) against the transformers decode + extract + embed loop ({peer_files:.2f} files/s):",
              "", f"| pipeline | files/s | vs transformers loop | min cosine to transformers | goal >= {GOAL_E2E:g}x |",
              "|---|---|---|---|---|"]
    auto = choose("auto", "cpu", int8_export=True)
    lines[2:2] = [f"The default (`precision auto`, no flag) chose {auto.precision} on the {auto.backend} backend here: "
                  f"{auto.reason}.", ""]
    for r in e2e:
        flags = (f"`clapforge embed` (no flag: auto -> {auto.precision})" if r["name"] == "default"
                 else f"`--backend {'onnx' if 'ONNX' in r['name'] else 'torch'}` {r['name']}")
        lines.append(f"| {flags} | {r['files_s']:.2f} | "
                     f"{r['ratio']:.2f}x | {r['cosine']:.5f} | {'met' if r['ratio'] >= GOAL_E2E else 'not met'} |")
    lines += ["", "Parity of ONNX fp32 with PyTorch fp32 on real decoded audio:", "", *parity, "", *accuracy]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
