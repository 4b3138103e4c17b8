"""Feature extraction throughput: clapforge's LaionClapFeatureExtractor vs transformers' ClapFeatureExtractor.

Both run in this process on the CPU with torch threads = 2 (or --threads), on the same batches of random 48 kHz
float32 clips (10 s and 30 s), in both modes. clapforge runs with its defaults (int16 round trip on, deterministic
crops), so it does slightly more work than transformers. Prints a markdown table of clips/s (median of --repeats runs).

    .venv/bin/python benchmarks/bench_feature_extraction.py [--batch 16] [--repeats 3] [--threads 2]

The load average is printed with the table: torch's multi-threaded kernels slow down sharply when other processes
compete for the cores (each parallel region waits for its slowest thread), transformers' numpy loop much less so.
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch
from transformers import ClapFeatureExtractor

from clapforge.processing.feature_extraction_laion_clap import LaionClapFeatureExtractor

SR = 48000


def clips_per_second(extractor, clips: list[np.ndarray], repeats: int, **kwargs) -> float:
    extractor(clips[:2], sampling_rate=SR, **kwargs)  # warm-up: first-call allocations and FFT plans
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        extractor(clips, sampling_rate=SR, **kwargs)
        times.append(time.perf_counter() - start)
    return len(clips) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)

    rows = []
    for truncation in ("rand_trunc", "fusion"):
        ours = LaionClapFeatureExtractor(truncation=truncation)
        theirs = ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation=truncation)
        for seconds in (10, 30):
            clips = [(0.1 * rng.standard_normal(seconds * SR)).astype(np.float32) for _ in range(args.batch)]
            ours_rate = clips_per_second(ours, clips, args.repeats)
            theirs_rate = clips_per_second(theirs, clips, args.repeats, return_tensors="pt")
            rows.append((truncation, seconds, ours_rate, theirs_rate))

    print(
        f"batch {args.batch} clips, median of {args.repeats} runs, torch threads {args.threads}, "
        f"{os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after\n"
    )
    print("| mode | clip length | clapforge clips/s | transformers clips/s | speed-up |")
    print("|---|---|---|---|---|")
    for truncation, seconds, ours_rate, theirs_rate in rows:
        print(f"| {truncation} | {seconds} s | {ours_rate:.1f} | {theirs_rate:.1f} | {ours_rate / theirs_rate:.1f}x |")


if __name__ == "__main__":
    main()
