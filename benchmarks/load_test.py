"""Load test of the demo as a Space is used: many clients at once, a realistic mix of requests.

    python -m benchmarks.load_test [--model weights/pneumonia-resnet50] [--clients 16] [--requests 20]
                                   [--output docs/load_test.json]

The demo runs as its own process (`python app.py`, with private Gradio and temp folders), so its
peak memory can be read and it can be stopped with SIGTERM like a container. Each client sends
`--requests` requests: a quarter ask for the Grad-CAM heatmap, every fifth is a batch of four
images, and clients in pairs send the same images (the same upload at once). One image in the mix is
a photo, which must be refused as no chest X-ray. Every answer is checked against the model's own
answer for that image (its probability, or no probability); answered, lost (an error or no
answer) and wrong answers, p50/p95 latency, throughput, the server's peak memory and the files
it left on disk after SIGTERM (in its Gradio and temp folders; Inductor's compile cache is
counted apart) are reported, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parents[1]

from modeling import Predictor, read_image
from modeling.runtime.ood import NOT_AN_XRAY

IMAGES = sorted((ROOT / "examples").glob("*.jpeg")) + sorted((ROOT / "tests" / "data" / "kermany" / "test").glob("*/*"))[:12]
IMAGES.insert(3, Path(gradio.__file__).parent / "media_assets" / "images" / "lion.jpg")  # a photo: no assessment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 and p95 of latencies in seconds, in milliseconds."""
    ordered = sorted(seconds)
    return {"p50_ms": 1000 * statistics.median(ordered), "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))]}


def _peak_memory_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model_id: str, folder: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(folder / "gradio"), "TMPDIR": str(folder / "tmp")}
    for name in ("gradio", "tmp"):
        (folder / name).mkdir()
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model_id, "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith("Demo running at"):
        raise RuntimeError(f"the demo did not start: {line}{process.stderr.read()[-2000:]}")
    return process, f"http://127.0.0.1:{port}/", env


def run(model_id: str, clients: int, requests: int) -> dict:
    predictor = Predictor.from_pretrained(model_id)
    positive = predictor.config.positive_label
    analysis = predictor.analyse([read_image(path) for path in IMAGES], batch_size=1)
    expected = {path.name: None if verdict == NOT_AN_XRAY else float(p) for path, p, verdict in zip(
        IMAGES, analysis.probabilities[:, predictor.config.positive_index], analysis.verdicts)}

    def same(got: float | None, want: float | None, tolerance: float) -> bool:
        return got is None and want is None or None not in (got, want) and abs(got - want) < tolerance
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        process, url, env = start_server(model_id, folder)

        def client_session(index: int) -> list[dict]:
            client = Client(url, verbose=False)
            results = []
            for r in range(requests):
                kind = "batch" if r % 5 == 4 else ("heatmap" if r % 4 == index % 4 else "single")
                first = (index // 2 + r) % len(IMAGES)  # clients 2k and 2k+1 send the same images
                paths = [IMAGES[(first + k) % len(IMAGES)] for k in range(4 if kind == "batch" else 1)]
                started = time.perf_counter()
                try:
                    if kind == "batch":
                        table, _ = client.predict([handle_file(str(p)) for p in paths], api_name="/predict_batch")
                        got = {row[1]: row[2] for row in table["data"]}
                        ok = all(same(got[p.name], expected[p.name], 1e-4) for p in paths)
                    else:
                        answer = client.predict(handle_file(str(paths[0])), heatmap=kind == "heatmap",
                                                api_name="/predict")
                        confidences = {c["label"]: c["confidence"] for c in answer[0].get("confidences") or []}
                        want = expected[paths[0].name]
                        ok = same(confidences.get(positive), want, 1e-5)
                        ok = ok and (answer[2] is not None) == (kind == "heatmap" and want is not None)
                    outcome = "answered" if ok else "wrong"
                except Exception:  # noqa: BLE001 - an error or no answer counts as lost
                    outcome = "lost"
                results.append({"kind": kind, "outcome": outcome, "seconds": time.perf_counter() - started})
            return results

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = [result for session in pool.map(client_session, range(clients)) for result in session]
        wall = time.perf_counter() - started
        crashed = process.poll() is not None
        peak_mb = float("nan") if crashed else _peak_memory_mb(process.pid)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
        left = [str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()]
    # Inductor's compile cache (the int8 graph, made at start) is kept on purpose: it speeds up the next start
    compiler_cache = [path for path in left if path.startswith("tmp/torchinductor_")]
    left = [path for path in left if path not in compiler_cache]
    latencies = [r["seconds"] for r in results]
    count = {outcome: sum(r["outcome"] == outcome for r in results) for outcome in ("answered", "lost", "wrong")}
    return {"clients": clients, "requests_per_client": requests, "sent": len(results),
            "mix": {kind: sum(r["kind"] == kind for r in results) for kind in ("single", "heatmap", "batch")},
            **count, "crashed": crashed, "exit_code_after_sigterm": process.returncode,
            "wall_s": round(wall, 2), "throughput_rps": round(len(latencies) / wall, 2),
            **{name: round(ms, 1) for name, ms in percentiles(latencies).items()},
            "server_peak_memory_mb": round(peak_mb, 1), "files_left_after_sigterm": left,
            "compiler_cache_files": len(compiler_cache)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "weights" / "pneumonia-resnet50"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--output", type=Path, help="also write the results as JSON (the README is rendered from it)")
    args = parser.parse_args()
    result = run(args.model, args.clients, args.requests)
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if result["lost"] == result["wrong"] == 0 and not result["crashed"] else 1)


if __name__ == "__main__":
    main()
