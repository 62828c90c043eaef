"""Load test of the demo's /predict endpoint: N concurrent gradio_client clients, M requests each.

    python -m benchmarks.load_test [--model weights/pneumonia-resnet50] [--clients 16] [--requests 20]

Every answer is checked against the model's own probability for that image (no answer may be
lost or wrong); throughput and p50/p95 latency are reported, never asserted.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app  # noqa: E402
from modeling import PneumoniaClassifier, read_image  # noqa: E402
from modeling.inference import Predictor  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 and p95 of latencies in seconds, in milliseconds."""
    ordered = sorted(seconds)
    return {"p50_ms": 1000 * statistics.median(ordered), "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))]}


def run(model_id: str, clients: int, requests: int, heatmap: bool) -> dict:
    model = PneumoniaClassifier.from_pretrained(model_id)
    demo = app.build_demo(model)
    predictor = Predictor(model)
    images = sorted((ROOT / "examples").glob("*.jpeg"))
    expected = {path.name: float(predictor.probabilities([read_image(path)])[0, model.config.positive_index])
                for path in images}
    port = free_port()
    app.serve(demo, "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/"

    def client_session(index: int) -> list[tuple[float, bool]]:
        client = Client(url, verbose=False)
        results = []
        for r in range(requests):
            path = images[(index + r) % len(images)]
            started = time.perf_counter()
            try:
                answer = client.predict(handle_file(str(path)), heatmap=heatmap, api_name="/predict")
                confidences = {c["label"]: c["confidence"] for c in answer[0]["confidences"]}
                ok = abs(confidences[model.config.positive_label] - expected[path.name]) < 1e-5
            except Exception:  # noqa: BLE001 - a failed request counts as lost
                ok = False
            results.append((time.perf_counter() - started, ok))
        return results

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            sessions = list(pool.map(client_session, range(clients)))
        wall = time.perf_counter() - started
    finally:
        demo.close()
    latencies = [latency for session in sessions for latency, _ in session]
    correct = sum(ok for session in sessions for _, ok in session)
    return {"clients": clients, "requests_per_client": requests, "heatmap": heatmap, "sent": clients * requests,
            "answered_correctly": correct, "lost_or_wrong": clients * requests - correct,
            "wall_s": round(wall, 2), "throughput_rps": round(len(latencies) / wall, 2),
            **{name: round(ms, 1) for name, ms in percentiles(latencies).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "weights" / "pneumonia-resnet50"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--heatmap", action="store_true", help="ask for Grad-CAM too (slower)")
    parser.add_argument("--output", type=Path, help="also write the results as JSON (the README is rendered from it)")
    args = parser.parse_args()
    result = run(args.model, args.clients, args.requests, args.heatmap)
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if result["lost_or_wrong"] == 0 else 1)


if __name__ == "__main__":
    main()
