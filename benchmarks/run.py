"""Speed benchmarks, each figure next to a baseline measured in the same run, reported as ratios.

    python -m benchmarks.run [--model weights/pneumonia-resnet50] [--data ../shared/data/chest_xray]

- training: images/s end to end (data loading, augmentation, forward, backward, AdamW step):
  plain fp32 eager PyTorch with a per-image PIL dataloader, against train.py's path
  (datasets-backed loader, balanced sampler, bf16 autocast, channels_last);
- inference: batch-1 latency and batch-32 throughput, plain fp32 eager against the optimised path;
- the demo's warm latency through gradio_client (p50, p95), with and without the heatmap;
- evaluate.py on the test split, wall time; `python app.py` from cold start to first answer.
Nothing here is asserted: the numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import PneumoniaClassifier, read_image  # noqa: E402
from modeling.data import BalancedSampler, attach_transform, label_mapping, label_names, load_data  # noqa: E402
from modeling.inference import Predictor  # noqa: E402
from modeling.preprocessing import train_transform  # noqa: E402
from benchmarks.load_test import free_port  # noqa: E402


class PlainImageFolder(Dataset):
    """The textbook dataloader: one file path per item, PIL decode and transforms per image."""

    def __init__(self, root: Path, transform):
        self.items = [(path, label) for label, name in enumerate(("NORMAL", "PNEUMONIA"))
                      for path in sorted((root / name).iterdir())]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        return self.transform(Image.open(path).convert("RGB")), label


def time_training(model: torch.nn.Module, loader, steps: int, optimised: bool) -> float:
    """Images per second over `steps` optimiser steps after one warm-up step, data loading included."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    batches = iter(loader)
    images, started = 0, None
    for step in range(steps + 1):
        if step == 1:
            images, started = 0, time.perf_counter()
        batch = next(batches)
        pixels, labels = (batch["pixel_values"], batch["label"]) if isinstance(batch, dict) else batch
        if optimised:
            pixels = pixels.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=optimised):
            loss = criterion(model(pixels), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        images += len(labels)
    return images / (time.perf_counter() - started)


@torch.inference_mode()
def time_inference(model: torch.nn.Module, batch: torch.Tensor, repeats: int, optimised: bool) -> list[float]:
    """Seconds per forward pass, after two warm-up passes."""
    model.eval()
    if optimised:
        batch = batch.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 2):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=optimised):
            model(batch)
        if i >= 2:
            times.append(time.perf_counter() - started)
    return times


def fresh_model(config, optimised: bool) -> torch.nn.Module:
    model = PneumoniaClassifier(config).backbone
    return model.to(memory_format=torch.channels_last) if optimised else model


def demo_latency(model_id: str, requests: int) -> dict:
    from gradio_client import Client, handle_file

    import app
    demo = app.build_demo(PneumoniaClassifier.from_pretrained(model_id))
    port = free_port()
    app.serve(demo, "127.0.0.1", port)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    image = handle_file(str(ROOT / "examples" / "pneumonia-person1_virus_6.jpeg"))
    results = {}
    try:
        for heatmap in (False, True):
            times = []
            for i in range(requests + 2):
                started = time.perf_counter()
                client.predict(image, heatmap=heatmap, api_name="/predict")
                if i >= 2:
                    times.append(time.perf_counter() - started)
            times.sort()
            results["with_heatmap" if heatmap else "without_heatmap"] = {
                "p50_ms": 1000 * statistics.median(times), "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))]}
    finally:
        demo.close()
    return results


def cold_start_seconds(model_id: str) -> float:
    from gradio_client import Client, handle_file
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--model", model_id, "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        process.stdout.readline()  # "Demo running at ..." once the server listens
        Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(str(ROOT / "examples" / "normal-IM-0001-0001.jpeg")), heatmap=False, api_name="/predict")
        return time.perf_counter() - started
    finally:
        process.kill()
        process.wait()


def evaluate_seconds(model_id: str, data: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([sys.executable, "evaluate.py", "--model", model_id, "--data", data, "--split", "test",
                        "--output-dir", out], cwd=ROOT, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "weights" / "pneumonia-resnet50"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "chest_xray"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip-end-to-end", action="store_true", help="skip evaluate.py and the cold start")
    parser.add_argument("--output", type=Path, help="also write the results as JSON (the README is rendered from it)")
    args = parser.parse_args()
    config = PneumoniaClassifier.from_pretrained(args.model).config
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"{config.architecture} at {config.image_size}px", flush=True)
    results: dict = {"architecture": config.architecture, "image_size": config.image_size,
                     "threads": torch.get_num_threads()}

    # training: plain fp32 + per-image PIL loader against train.py's pipeline
    transform = train_transform(config)
    plain = DataLoader(PlainImageFolder(Path(args.data) / "train", transform), batch_size=args.batch_size,
                       shuffle=True, num_workers=args.workers, drop_last=True)
    train = load_data(args.data)["train"]
    to_model = label_mapping(label_names(train), config.label_names)
    ours = DataLoader(attach_transform(train, transform, to_model), batch_size=args.batch_size,
                      sampler=BalancedSampler([to_model[label] for label in train["label"]]),
                      num_workers=args.workers, drop_last=True)
    baseline = time_training(fresh_model(config, False), plain, args.train_steps // 2 or 1, optimised=False)
    optimised = time_training(fresh_model(config, True), ours, args.train_steps, optimised=True)
    results["training_images_per_s"] = {"baseline_fp32": baseline, "optimised": optimised, "ratio": optimised / baseline}
    print(f"training: {baseline:.2f} -> {optimised:.2f} img/s ({optimised / baseline:.2f}x)", flush=True)

    # inference: batch 1 latency and batch-32 throughput
    image = Predictor(PneumoniaClassifier.from_pretrained(args.model)).tensor(
        read_image(ROOT / "examples" / "pneumonia-person1_virus_6.jpeg"))
    trained = PneumoniaClassifier.from_pretrained(args.model).backbone
    for batch_size, repeats in ((1, args.repeats), (args.batch_size, max(2, args.repeats // 5))):
        batch = image.repeat(batch_size, 1, 1, 1).contiguous()
        slow = statistics.median(time_inference(trained, batch, repeats, optimised=False))
        fast = statistics.median(time_inference(trained.to(memory_format=torch.channels_last), batch, repeats, True))
        trained = trained.to(memory_format=torch.contiguous_format)
        key = f"inference_batch{batch_size}"
        results[key] = {"baseline_fp32_ms": 1000 * slow, "optimised_ms": 1000 * fast, "speedup": slow / fast,
                        "baseline_images_per_s": batch_size / slow, "optimised_images_per_s": batch_size / fast}
        print(f"inference batch {batch_size}: {1000 * slow:.1f} -> {1000 * fast:.1f} ms ({slow / fast:.2f}x)", flush=True)

    # the demo through gradio_client
    results["demo"] = demo_latency(args.model, args.repeats)
    model_ms = results["inference_batch1"]["optimised_ms" if config.precision == "bfloat16" else "baseline_fp32_ms"]
    results["demo"]["p50_without_heatmap_over_model_batch1"] = results["demo"]["without_heatmap"]["p50_ms"] / model_ms
    print(f"demo: {json.dumps(results['demo'])}", flush=True)

    if not args.skip_end_to_end:
        results["evaluate_test_split_s"] = evaluate_seconds(args.model, args.data)
        print(f"evaluate.py on the test split: {results['evaluate_test_split_s']:.1f} s", flush=True)
        results["app_cold_start_to_first_answer_s"] = cold_start_seconds(args.model)
        print(f"app.py cold start to first answer: {results['app_cold_start_to_first_answer_s']:.1f} s", flush=True)
    print(json.dumps(results, indent=2))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
