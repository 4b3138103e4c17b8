"""clapforge's audio tower against transformers' `ClapModel`, side by side in one run on this machine.

What is compared, and how:

1. Audio embedding throughput (clips/s), batch 8 of random log-mel `input_features` under `torch.inference_mode()`:
   clapforge `get_audio_embeds` against transformers `ClapModel.get_audio_features(...).pooler_output`, the
   transformers model holding the clapforge model's (randomly initialised) weights through `clapforge.convert`.
   Both run fp32; clapforge also runs under `torch.autocast("cpu", dtype=torch.bfloat16)`. The calls are
   interleaved (one of each per round, the order alternating) so that load from other processes hits every
   contender alike; each gets warm-up calls, then clips/s from the median of the timed rounds, and the speed
   ratio as the median over rounds of the per-round ratio (robust to load that changes between rounds).
   Agreement: max |difference| between the two fp32 embeddings, and for bf16 the smallest cosine similarity to
   clapforge's own fp32 embedding.
   Presets: `htsat-tiny` (1-channel input) and `htsat-tiny-fused` (4-channel fusion input, `is_longer` all True).
2. Peak memory for one long clip in fusion mode: feature extraction + audio embedding with `htsat-tiny-fused`'s
   audio tower, each measurement in a fresh subprocess. The increase is the peak RSS during the work minus the RSS
   once imports, model and waveform exist (tracemalloc does not see torch's allocations). The peak is Linux's
   VmHWM, reset just before the work: `ru_maxrss` would do in a fresh process, except that Linux carries it
   across exec, so every child would start at the benchmark parent's own peak.
   clapforge at 1, 2.5, 5 and 10 minutes; transformers' `ClapFeatureExtractor` + `ClapAudioModelWithProjection`
   at 1 and 10 minutes (it picks random crops, which does not change its memory).

Run `.venv/bin/python benchmarks/bench_model.py` (about 3 minutes on 2 cores): it prints the tables and rewrites the
"## Audio embedding" and "## Long clips: memory" sections of benchmarks/RESULTS.md, leaving other sections alone.
`--quick` does fewer rounds and writes nothing.
"""

import argparse
import datetime
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import transformers

import clapforge
from clapforge.convert import clapforge_to_transformers_config, to_transformers_model

THREADS = 2
BATCH = 8
FRAMES, MEL_BINS = 1001, 64
SAMPLING_RATE = 48000
CLAPFORGE_MINUTES = (1, 2.5, 5, 10)
TRANSFORMERS_MINUTES = (1, 10)
RESULTS = Path(__file__).with_name("RESULTS.md")
COMMAND = ".venv/bin/python benchmarks/bench_model.py"
# Goals from the project plan: not slower than transformers in fp32; bf16 autocast at least 2x transformers fp32
# and within cosine 0.999 of fp32.
GOAL_FP32_RATIO, GOAL_BF16_RATIO, GOAL_BF16_COSINE = 1.0, 2.0, 0.999


# ---------------------------------------------------------------------------------------------------------------
# 1. Throughput


def transformers_twin(model: clapforge.LaionClapModel) -> transformers.ClapModel:
    """transformers' ClapModel with the same weights (the converter's export path)."""
    return to_transformers_model(model)


def random_features(fused: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, T, F) random log-mel features and (B, 1) `is_longer`, all True with fusion input."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(BATCH, 4 if fused else 1, FRAMES, MEL_BINS, generator=generator)
    return features, torch.full((BATCH, 1), fused)


def interleaved_times(calls: dict[str, Callable[[], object]], warmup: int, rounds: int) -> dict[str, list[float]]:
    """Seconds of each call of each callable, one call of each per round, the order alternating."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(reference: list[float], contender: list[float]) -> float:
    """Median over rounds of reference time / contender time: each round's pair ran under the same load."""
    return statistics.median(r / c for r, c in zip(reference, contender, strict=True))


def embedding_rows(preset: str, warmup: int, rounds: int) -> list[dict]:
    """Throughput and agreement of clapforge fp32 / bf16 autocast and transformers fp32 on one preset."""
    torch.manual_seed(0)
    model = clapforge.create_model(preset).eval()
    twin = transformers_twin(model)
    features, is_longer = random_features(model.config.enable_fusion)

    def clapforge_fp32() -> torch.Tensor:
        return model.get_audio_embeds(features, is_longer)

    def clapforge_bf16() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.get_audio_embeds(features, is_longer).float()

    def transformers_fp32() -> torch.Tensor:
        return twin.get_audio_features(input_features=features, is_longer=is_longer).pooler_output

    with torch.inference_mode():
        ours, bf16, theirs = clapforge_fp32(), clapforge_bf16(), transformers_fp32()
        times = interleaved_times(
            {"fp32": clapforge_fp32, "bf16": clapforge_bf16, "transformers": transformers_fp32}, warmup, rounds
        )
    seconds = {name: statistics.median(t) for name, t in times.items()}
    max_diff = (ours - theirs).abs().max().item()
    min_cosine = torch.nn.functional.cosine_similarity(bf16, ours, dim=-1).min().item()
    reference = BATCH / seconds["transformers"]
    fp32_ratio = paired_ratio(times["transformers"], times["fp32"])
    bf16_ratio = paired_ratio(times["transformers"], times["bf16"])
    return [
        {
            "preset": preset,
            "precision": "fp32",
            "clapforge": BATCH / seconds["fp32"],
            "transformers": reference,
            "ratio": fp32_ratio,
            "agreement": f"max abs diff {max_diff:.1e}",
            "goal": _verdict(fp32_ratio >= GOAL_FP32_RATIO and max_diff < 1e-5, f"ratio >= {GOAL_FP32_RATIO}"),
        },
        {
            "preset": preset,
            "precision": "bf16 autocast",
            "clapforge": BATCH / seconds["bf16"],
            "transformers": reference,
            "ratio": bf16_ratio,
            "agreement": f"min cosine to fp32 {min_cosine:.5f}",
            "goal": _verdict(
                bf16_ratio >= GOAL_BF16_RATIO and min_cosine >= GOAL_BF16_COSINE,
                f"ratio >= {GOAL_BF16_RATIO}, cosine >= {GOAL_BF16_COSINE}",
            ),
        },
    ]


def _verdict(met: bool, goal: str) -> str:
    return f"met ({goal})" if met else f"**missed** ({goal})"


def embedding_table(rows: list[dict]) -> str:
    lines = [
        "| preset | clapforge precision | clapforge clips/s | transformers fp32 clips/s | ratio | agreement | goal |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    lines += [
        f"| {r['preset']} | {r['precision']} | {r['clapforge']:.2f} | {r['transformers']:.2f} | "
        f"{r['ratio']:.2f}x | {r['agreement']} | {r['goal']} |"
        for r in rows
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# 2. Memory (each measurement in its own process: ru_maxrss only ever grows)


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (`VmRSS` now, `VmHWM` its high-water mark) in MiB."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 1024


def _reset_peak_rss() -> None:
    # ru_maxrss cannot be reset and on Linux survives exec (a child starts with its parent's peak); the
    # high-water mark VmHWM can be reset to the current RSS by writing 5 to clear_refs.
    Path("/proc/self/clear_refs").write_text("5")


def memory_child(implementation: str, minutes: float) -> dict:
    """Feature extraction + audio embedding of one `minutes`-long clip in fusion mode; runs in the subprocess."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    if implementation == "clapforge":
        extractor = clapforge.create_feature_extractor("htsat-tiny-fused")
        model = clapforge.LaionClapAudioModelWithProjection(clapforge.load_preset_config("htsat-tiny-fused")).eval()

        def embed(inputs: dict) -> torch.Tensor:
            return model.get_audio_embeds(inputs["input_features"], inputs["is_longer"])
    else:
        extractor = transformers.ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="fusion")
        config = clapforge_to_transformers_config(clapforge.load_preset_config("htsat-tiny-fused"))
        model = transformers.ClapAudioModelWithProjection(transformers.ClapConfig(**config).audio_config).eval()

        def embed(inputs: dict) -> torch.Tensor:
            return model(input_features=inputs["input_features"], is_longer=inputs["is_longer"]).audio_embeds

    waveform = (0.1 * np.random.default_rng(0).standard_normal(int(minutes * 60 * SAMPLING_RATE))).astype(np.float32)
    gc.collect()
    _reset_peak_rss()
    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    with torch.inference_mode():
        inputs = extractor([waveform], sampling_rate=SAMPLING_RATE, return_tensors="pt")
        extracted = time.perf_counter()
        embeds = embed(inputs)  # (1, E)
    end = time.perf_counter()
    assert embeds.shape == (1, 512) and bool(inputs["is_longer"].all())
    peak = _status_mb("VmHWM")
    return {"baseline_mb": baseline, "peak_mb": peak, "extract_s": extracted - start, "embed_s": end - extracted}


def measure_memory(implementation: str, minutes: float) -> dict:
    command = [sys.executable, __file__, "--memory-child", implementation, str(minutes)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return {"implementation": implementation, "minutes": minutes, **json.loads(result.stdout.strip().splitlines()[-1])}


def memory_table(rows: list[dict]) -> str:
    lines = [
        "| implementation | clip | peak RSS increase (MiB) | peak RSS (MiB) | MiB per minute | extract s | embed s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        increase = r["peak_mb"] - r["baseline_mb"]
        lines.append(
            f"| {r['implementation']} | {r['minutes']:g} min | {increase:.0f} | {r['peak_mb']:.0f} | "
            f"{increase / r['minutes']:.1f} | {r['extract_s']:.2f} | {r['embed_s']:.2f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# RESULTS.md


def header(load_at_start: float) -> str:
    return (
        f"`{COMMAND}`, {datetime.date.today().isoformat()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {THREADS} threads, CPU only. 1-minute load average {load_at_start:.1f} at "
        f"the start, {os.getloadavg()[0]:.1f} at the end: other jobs sharing the cores slow every contender "
        "alike within a round, but absolute clips/s move with the load."
    )


def replace_section(text: str, title: str, body: str) -> str:
    """`text` with the markdown section `title` (up to the next `## ` heading) replaced by `body`, or appended."""
    block = f"{title}\n\n{body.strip()}\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == title), None)
    if start is None:
        return text.rstrip() + ("\n\n" if text.strip() else "") + block
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + block + ("\n" + tail if tail else "")


def write_results(sections: dict[str, str]) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"  # re-read now: others edit this file too
    for title, body in sections.items():
        text = replace_section(text, title, body)
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, and do not write RESULTS.md")
    parser.add_argument("--memory-child", nargs=2, metavar=("IMPLEMENTATION", "MINUTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child[0], float(args.memory_child[1]))))
        return
    torch.set_num_threads(THREADS)
    warmup, rounds = (1, 3) if args.quick else (2, 7)
    load_at_start = os.getloadavg()[0]

    rows = [row for preset in ("htsat-tiny", "htsat-tiny-fused") for row in embedding_rows(preset, warmup, rounds)]
    embedding = embedding_table(rows)
    print("## Audio embedding\n\n" + embedding + "\n")

    runs = [("clapforge", m) for m in CLAPFORGE_MINUTES] + [("transformers", m) for m in TRANSFORMERS_MINUTES]
    memory = memory_table([measure_memory(implementation, minutes) for implementation, minutes in runs])
    print("## Long clips: memory\n\n" + memory + "\n")

    if not args.quick:
        notes = header(load_at_start)
        write_results(
            {
                "## Audio embedding": f"{notes}\n\nBatch of {BATCH} random log-mel clips, median of {rounds} "
                "interleaved "
                f"rounds after {warmup} warm-up. Ratio = median over rounds of (transformers "
                "time / clapforge time) within the round.\n\n" + embedding,
                "## Long clips: memory": f"{notes}\n\nOne clip of white noise, fusion mode (`htsat-tiny-fused` audio "
                "tower), feature extraction + embedding, each row a fresh process. Increase = "
                "peak RSS (VmHWM, reset before the work) minus RSS once imports, model and "
                "waveform exist.\n\n" + memory,
            }
        )
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
