"""The demo's cold start: `python app.py` from process start to its first answer, and what importing costs.

    python -m benchmarks.cold_start --label NAME [--model weights/pneumonia-resnet50] [--repeats 5] [--warmup 1]
                                    [--checkout DIR] [--output docs/cold_start.json]

Each repeat starts `python app.py` as a user does and times it until a `gradio_client` request for one
example image has come back, after --warmup starts that are not counted (the first start of a server
compiles an int8 model's graphs and keeps them for the next); apart from that, each repeat times `python -c "import modeling.runtime.inference"`.
Medians over the repeats. Results are appended to --output under --label (one entry per label), so that
a change to start-up can be shown beside the figures from before it, measured on the same machine: --checkout
times another checkout's app.py and bundle (`git worktree add /tmp/before COMMIT`), so both run in one session.
Nothing is asserted: the numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from benchmarks.load_test import free_port
from modeling.runtime.files import write_json_atomic
from modeling.runtime.host import cpu_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pneumonia-person1_virus_6.jpeg"


@contextlib.contextmanager
def started_demo(model: str, checkout: Path = ROOT) -> Iterator[tuple[Any, float]]:
    """`python app.py` started as users start it; yields (a gradio_client on it, seconds from process start until
    its first answer came back), and kills it afterwards."""
    from gradio_client import Client, handle_file

    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--model", model, "--port", str(port)], cwd=checkout,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        process.stdout.readline()  # "Demo running at ..." once the server listens
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict(handle_file(str(EXAMPLE)), heatmap=False, api_name="/predict")
        yield client, time.perf_counter() - started
    finally:
        process.kill()
        process.wait()


def cold_start_seconds(model: str, checkout: Path = ROOT) -> float:
    with started_demo(model, checkout) as (_, seconds):
        return seconds


def import_seconds(module: str, checkout: Path = ROOT) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=checkout, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="what this measurement is of, e.g. the change it follows")
    parser.add_argument("--model", default="weights/pneumonia-resnet50")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1,
                        help="starts run first and not counted: they fill the compile caches a server keeps between "
                             "starts (an int8 model's packages) and the operating system's file cache")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose app.py (and --model) to time")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "cold_start.json")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    warmup = [cold_start_seconds(args.model, checkout) for _ in range(args.warmup)]
    starts = [cold_start_seconds(args.model, checkout) for _ in range(args.repeats)]
    imports = [import_seconds("modeling.runtime.inference", checkout) for _ in range(args.repeats)]
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=checkout, capture_output=True, text=True)
    entry = {"label": args.label, "model": args.model, "repeats": args.repeats, "cpu_model": cpu_model(),
             "commit": commit.stdout.strip() or None,
             "cold_start_to_first_answer_s": statistics.median(starts), "runs_s": starts, "warmup_runs_s": warmup,
             "import_modeling_inference_s": statistics.median(imports),
             "command": shlex.join(["python", "-m", "benchmarks.cold_start", *sys.argv[1:]])}
    entries = json.loads(args.output.read_text()) if args.output.exists() else []
    entries = [e for e in entries if e["label"] != args.label] + [entry]
    write_json_atomic(args.output, entries)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
