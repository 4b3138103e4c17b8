"""Training throughput: samples/s of the real `clapforge.training.train.train` loop, 1 and 2 CPU processes.

What is measured: `train(recipe)` itself (stream -> feature extraction + SpecAugment -> forward -> global contrastive
loss -> backward -> clip -> AdamW -> scheduler), on a `clapforge synth` corpus this script generates in a temporary
folder, batch 8 per process, no validation, no periodic checkpoints, no tracker. Each step's end is timestamped where
the loop calls `accelerator.log`; the run is stopped right after the last timed step (no final checkpoint/export).
Steady state = the steps after the first `skip` ones: samples/s = (steps - skip) * batch * processes / elapsed.

- 1 process: `python benchmarks/bench_train.py --child ...` (torch's default threads, one per core, and 1 thread).
- 2 processes: `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --main_process_port P
  benchmarks/bench_train.py --child ...` (gloo; OMP_NUM_THREADS=1 per process, so both use the 2 cores; a private
  HF_HOME so no user accelerate config leaks in).

Run `.venv/bin/python benchmarks/bench_train.py` (about 5 minutes on 2 loaded cores; `--all` adds htsat-tiny with
torch's default threads, about 9 minutes in all): prints a table and rewrites the
"## Training" section of benchmarks/RESULTS.md, leaving the others alone. `--quick` runs test-tiny only, writes nothing.
"""

import argparse
import contextlib
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

RESULTS = Path(__file__).with_name("RESULTS.md")
COMMAND = ".venv/bin/python benchmarks/bench_train.py"
BATCH = 8
CLIPS = 100  # 80 train clips, 1-30 s (synth's length mix), in small shards so 2 processes split by shard
# preset -> (steps, skip): htsat-tiny (RoBERTa-base + HTSAT-tiny, 153M parameters) takes seconds per step.
PLAN = {"test-tiny": (14, 4), "htsat-tiny": (5, 2)}
# (processes, OMP threads per process; None = torch's default, one per core). htsat-tiny's default-threads row takes
# over 3 minutes on loaded cores: only with --all.
CONFIGS = [(1, None), (1, 1), (2, 1)]


class Stop(Exception):
    pass


def child(args: argparse.Namespace) -> None:
    """One training run (one process of it); rank 0 writes step timestamps to args.out."""
    import torch
    from accelerate import Accelerator, PartialState

    from clapforge.training.recipe import load_recipe
    from clapforge.training.train import train

    times: list[float] = []
    real_log = Accelerator.log

    def timed_log(self, *a, **k):  # called once per step, after the optimizer and scheduler steps
        times.append(time.perf_counter())
        real_log(self, *a, **k)
        if len(times) >= args.steps:
            raise Stop

    Accelerator.log = timed_log
    recipe = load_recipe(
        None,
        [
            f"preset={args.preset}",
            f"name=bench-{args.preset}",
            f"data.train={args.corpus}",
            f"tokenizer={args.tokenizer}",
            f"output_dir={args.output}",
            f"train.batch_size={BATCH}",
            "train.max_steps=100000",  # stopped by Stop; the schedule stays in warmup, which costs the same
            "train.warmup_steps=1000",
            "checkpoint.every=0",
            "eval.every=0",
            "log_with=null",
        ],
    )
    with contextlib.suppress(Stop):
        train(recipe)
    state = PartialState()
    if state.is_main_process:
        Path(args.out).write_text(
            json.dumps({"times": times, "processes": state.num_processes, "threads": torch.get_num_threads()})
        )
    state.wait_for_everyone()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(preset: str, processes: int, threads: int | None, corpus: Path, tokenizer: Path, tmp: Path) -> dict:
    steps, skip = PLAN[preset]
    out = tmp / f"{preset}-{processes}-{threads}.json"
    child_args = [
        "--child",
        "--preset",
        preset,
        "--steps",
        str(steps),
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(tokenizer),
        "--output",
        str(tmp / f"run-{preset}-{processes}-{threads}"),
        "--out",
        str(out),
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp / "hf_home"),
        "PYTHONWARNINGS": "ignore",
        "TQDM_DISABLE": "1",
    }
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if processes == 1:
        command = [sys.executable, __file__, *child_args]
    else:
        env["ACCELERATE_USE_CPU"] = "1"
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
            __file__,
            *child_args,
        ]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"{preset} x{processes} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(out.read_text())
    times = result["times"]
    assert result["processes"] == processes and len(times) == steps, result
    elapsed = times[-1] - times[skip - 1]
    return {
        "preset": preset,
        "processes": processes,
        "threads": result["threads"],
        "timed_steps": steps - skip,
        "skip": skip,
        "s_per_step": elapsed / (steps - skip),
        "samples_per_s": (steps - skip) * BATCH * processes / elapsed,
        "wall_s": wall,
        "load": (load_before, os.getloadavg()[0]),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| preset | processes x threads | batch (global) | timed steps (after skip) | s/step | samples/s | "
        "vs 1 process x 1 thread | 1-min load before / after | run wall s |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    single = {r["preset"]: r["samples_per_s"] for r in rows if r["processes"] == 1 and r["threads"] == 1}
    for r in rows:
        speedup = r["samples_per_s"] / single[r["preset"]] if r["preset"] in single else float("nan")
        lines.append(
            f"| {r['preset']} | {r['processes']} x {r['threads']} | {BATCH * r['processes']} | "
            f"{r['timed_steps']} (skip {r['skip']}) | {r['s_per_step']:.2f} | {r['samples_per_s']:.2f} | "
            f"{speedup:.2f}x | {r['load'][0]:.1f} / {r['load'][1]:.1f} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="test-tiny only; do not write RESULTS.md")
    parser.add_argument("--all", action="store_true", help="also htsat-tiny with torch's default threads (slow)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("preset", "corpus", "tokenizer", "output", "out"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import torch

    from clapforge.data.synth import synthesize_corpus

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from conftest import make_tokenizer

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus"
        synthesize_corpus(corpus, CLIPS, seed=0, shard_bytes=2**20, progress=False)
        shards = len(list((corpus / "train").glob("*.tar")))
        make_tokenizer(vocab_size=1000).save_pretrained(tmp / "tok")
        rows = []
        for preset in ["test-tiny"] if args.quick else list(PLAN):
            for processes, threads in CONFIGS:
                if preset == "htsat-tiny" and threads is None and not args.all:
                    continue
                rows.append(run(preset, processes, threads, corpus, tmp / "tok", tmp))
                r = rows[-1]
                print(
                    f"{preset} {processes}x{r['threads']}: {r['samples_per_s']:.2f} samples/s "
                    f"({r['s_per_step']:.2f} s/step, load {r['load'][0]:.1f}, wall {r['wall_s']:.0f} s)",
                    flush=True,
                )
    text = table(rows)
    print(text)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.quick:
        return
    from bench_model import write_results

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = COMMAND + (" --all" if args.all else "")
    body = (
        f"`{command}`, {datetime.date.today().isoformat()}, torch {torch.__version__}, {os.cpu_count()} cores "
        f"(AMD EPYC VM), CPU only, fp32; load average at the end {load}. Other jobs share these cores, so absolute "
        "figures move with the load: compare rows only with their load column in view.\n\n"
        f"The real `train()` loop (`clapforge.training.train`) on a `clapforge synth` corpus of {CLIPS} clips "
        f"({shards} train shards; clips of 1-30 s, so decode and feature extraction are part of each step), batch "
        f"{BATCH} per process, AdamW, gradient clipping, SpecAugment on, no validation/checkpoint/tracker. "
        "Steady state: time between the end of the first `skip` steps and the end of the last one. 2 processes: "
        "`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2` (gloo, global contrastive loss over "
        "both processes' batches, 1 thread each); 1 process: with torch's default threads (2) and with "
        "OMP_NUM_THREADS=1.\n\n"
        f"{text}\n\n"
        "htsat-tiny is RoBERTa-base + HTSAT-tiny (153M parameters); test-tiny is the 0.25M-parameter test preset, "
        "where the step time is mostly data (decode + log-mel) and Python overhead."
    )
    write_results({"## Training": body})


if __name__ == "__main__":
    main()
