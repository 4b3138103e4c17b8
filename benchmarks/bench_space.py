"""Latency of the Gradio Space under load: 20 concurrent gradio_client users x 5 classification requests each.

The app (`spaces_demo/app.py`) is launched on 127.0.0.1 with a saved test-tiny model, once per queue setting
(`default_concurrency_limit`), and every answer is checked against the model called directly (as in
`tests/test_space.py`, whose helpers this uses). The test-tiny model makes model time small, so the numbers are
mostly Gradio's queue, upload and HTTP overhead plus torchcodec decoding. Writes the "## Space" section of
benchmarks/RESULTS.md (replacing an earlier one; other sections are left alone).

    .venv/bin/python benchmarks/bench_space.py [--clients 20] [--requests 5] [--concurrency 1 2] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import gradio  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402

from conftest import tone  # noqa: E402
from test_space import LABELS, build_model_folder, expected_probabilities, launch, load_app_module, run_load  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Space"


def measure(clients: int, requests: int, concurrency_limits: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, processor = build_model_folder(tmp / "model")
        clip = tmp / "clip.wav"  # 3 s stereo 44.1 kHz: decoded, resampled and downmixed on every request
        soundfile.write(clip, torch.stack([torch.from_numpy(tone(3.0, 440, sr=44100))] * 2, dim=1).numpy(), 44100)
        expected = expected_probabilities(model, processor, clip, LABELS)
        app = load_app_module()
        for limit in concurrency_limits:
            app.CONCURRENCY = limit
            demo = app.build_demo(str(tmp / "model"))
            url = launch(app, demo)
            try:
                stats = run_load(url, clip, LABELS, expected, clients=clients, requests=requests)
            finally:
                demo.close()
            rows.append({"concurrency": limit, **stats})
            print(rows[-1], flush=True)
    return rows


def section(rows: list[dict], clients: int, requests: int, command: str) -> str:
    load = os.getloadavg()
    table = "\n".join(
        f"| {r['concurrency']} | {r['requests']} | {r['wall_s']:.1f} | {r['requests'] / r['wall_s']:.1f} | "
        f"{r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['max_s']:.2f} |"
        for r in rows
    )
    return (
        f"{SECTION}\n\n"
        f"`{command}`, {datetime.date.today().isoformat()}, gradio {gradio.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} cores, CPU only, Python {platform.python_version()}; "
        f"load average at the end {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} (other jobs share these cores). "
        f"{clients} concurrent gradio_client users each send {requests} zero-shot classifications one after the "
        "other (a 3 s stereo 44.1 kHz WAV upload + 4 labels) to `spaces_demo/app.py` serving a test-tiny model "
        "on 127.0.0.1; every answer was checked against the model called directly. Latency is per request, seen by "
        "the client (upload + queue wait + decode + model + reply). `concurrency` is the queue's "
        "`default_concurrency_limit` (the app's default is 2, env `CONCURRENCY`).\n\n"
        "| concurrency | requests | wall s | requests/s | p50 s | p95 s | max s |\n"
        "|---|---|---|---|---|---|---|\n"
        f"{table}\n\n"
        "Reading: with a tiny model the time is Gradio's (upload, queue, SSE) and the decoder's, not the model's; "
        "p95 is roughly the time for the queue ahead of a request to drain. A real checkpoint adds its forward pass "
        "to every request ahead in the queue, so expect these latencies to grow with model size.\n"
    )


def write_section(text: str) -> None:
    """Replace the "## Space" section of RESULTS.md (up to the next "## " heading), or append it."""
    current = RESULTS.read_text() if RESULTS.exists() else ""
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1).rstrip() + "\n"
    else:
        updated = current.rstrip() + "\n\n" + text
    RESULTS.write_text(updated)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    rows = measure(args.clients, args.requests, args.concurrency)
    command = ".venv/bin/python benchmarks/bench_space.py" + " ".join([""] + sys.argv[1:])
    text = section(rows, args.clients, args.requests, command.strip())
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote the {SECTION!r} section of {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
