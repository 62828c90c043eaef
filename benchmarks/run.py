"""Speed benchmarks: each figure next to a baseline measured in the same run, reported as ratios.

    python -m benchmarks.run [--model weights/pneumonia-resnet50] [--data ../shared/data/chest_xray]
                             [--output docs/benchmarks.json]

- training, images/s end to end (data loading, augmentation, forward, backward, AdamW step), one
  row per change, each cumulative: plain fp32 eager with a per-image PIL dataloader (the
  baseline); + bf16 autocast and channels_last; + images decoded once and augmented per batch
  (train.py's data path, with its weight averaging); + tcmalloc (train.py as shipped); and
  + torch.compile, to show whether it would pay (with --train-compile: it takes minutes to compile);
  and two bounds, the network alone (forward,
  backward, AdamW on one random batch) in fp32 and in bf16 with tcmalloc, which no data path can
  beat;
- inference of the network (one view per image), batch-1 latency and batch-32 throughput, the
  same way: fp32 eager baseline; + bf16 and channels_last; + tcmalloc; + torch.compile with
  freezing (`app.py --compile`); int8 static quantization compiled by Inductor (what an int8
  model such as the bundled one runs, `modeling.runtime.quantize`); and, at batch 1, the bundled model
  exactly as its config.json asks (precision and test-time views), which the demo is compared to;
- the demo: `python app.py` from cold start to its first answer, then its warm latency through
  gradio_client (p50, p95) with and without the heatmap, and without it from a client made with
  `ssl_verify=False` (plain http needs no TLS, yet gradio_client builds a TLS context for every
  upload and queue join); next to a do-nothing Gradio endpoint (gradio_client's own round trip,
  both ways) and the model's batch-1 latency; batch mode against single requests;
- evaluate.py on the test split, wall time.

Every measurement runs in its own process, so that allocators and thread pools do not leak from
one row into the next. Nothing is asserted: the numbers depend on the machine.
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

ROOT = Path(__file__).resolve().parents[1]

TRAINING_VARIANTS = {
    "baseline": "fp32 eager, per-image PIL dataloader (1 worker)",
    "bf16": "+ bf16 autocast, channels_last",
    "decode_once": "+ images decoded once, augmentation per batch (train.py's data path)",
    "tcmalloc": "+ tcmalloc (train.py as shipped)",
    "compile": "+ torch.compile of the model (train.py does not; compile time not counted)",
}
OPTIONAL_TRAINING_VARIANTS = {"compile"}  # minutes of compiling: only with --train-compile
# Not changes but bounds: the network's forward, backward and AdamW step alone, on one random batch.
NETWORK_ONLY_VARIANTS = {
    "network_fp32": "the network alone in fp32 (no data loading, augmentation or EMA)",
    "network_bf16": "the network alone in bf16, channels_last, tcmalloc: the ceiling for any data path",
}
INFERENCE_VARIANTS = {
    "baseline": "fp32 eager",
    "bf16": "+ bf16 autocast, channels_last",
    "tcmalloc": "+ tcmalloc",
    "compile": "+ torch.compile with freezing (`app.py --compile`, bf16 models)",
    "int8": "int8 static quantization, compiled (modeling.runtime.quantize, calibrated by modeling.training.finalize), tcmalloc",
    "app": "the bundled model as config.json asks (precision, test-time views, chest X-ray gate), tcmalloc",
    "gate": "of which the chest X-ray gate (modeling.runtime.gate), tcmalloc",
}
BATCH1_ONLY = ("app", "gate")
EXAMPLE = ROOT / "examples" / "pneumonia-person1_virus_6.jpeg"


# ---------------------------------------------------------------- measurements (each in its own process)

def measure_training(variant: str, model_id: str, data: str, batch_size: int, steps: int) -> dict:
    import torch
    from PIL import Image
    from timm.utils import ModelEmaV3
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    from modeling import PneumoniaClassifier
    from modeling.training.augment import BatchAugment
    from modeling.training.data import (
        BalancedSampler,
        DecodedImages,
        decode_once,
        first,
        label_mapping,
        label_names,
        load_data,
    )

    config = PneumoniaClassifier.from_pretrained(model_id).config
    optimised = variant not in ("baseline", "network_fp32")
    model = PneumoniaClassifier(config).backbone
    if optimised:
        model = model.to(memory_format=torch.channels_last)

    if variant.startswith("network"):  # one random batch over and over: no loading, no augmentation, no EMA
        pixels = torch.randn(batch_size, 3, config.image_size, config.image_size)
        if optimised:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, config.num_classes, (batch_size,))
        batches = iter(lambda: (pixels, labels), None)
        ema = None
    elif variant in ("baseline", "bf16"):
        class PlainImageFolder(Dataset):  # the textbook loader: a path per item, PIL and transforms per image
            def __init__(self, root: Path):
                self.items = [(p, i) for i, name in enumerate(config.label_names) for p in sorted((root / name).iterdir())]
                self.transform = v2.Compose([
                    v2.PILToTensor(), v2.RandomResizedCrop(config.image_size, scale=(0.7, 1.0), antialias=True),
                    v2.RandomAffine(degrees=10, translate=(0.05, 0.05)), v2.ColorJitter(0.25, 0.25),
                    v2.ToDtype(torch.float32, scale=True), v2.Normalize(config.mean, config.std)])

            def __len__(self) -> int:
                return len(self.items)

            def __getitem__(self, index: int):
                path, label = self.items[index]
                return self.transform(Image.open(path).convert("RGB")), label

        loader = DataLoader(PlainImageFolder(Path(data) / "train"), batch_size=batch_size, shuffle=True,
                            num_workers=1, drop_last=True)
        batches = ((pixels, labels) for pixels, labels in loader)
        ema = None
    else:
        train = load_data(data)["train"]
        to_model = label_mapping(label_names(train), config.label_names)
        started = time.perf_counter()
        decoded = decode_once(train, config, to_model, num_proc=os.cpu_count())
        decode_s = time.perf_counter() - started
        loader = DataLoader(DecodedImages(decoded, config.image_size), batch_size=batch_size, collate_fn=first,
                            sampler=BalancedSampler(decoded["label"]), drop_last=True)
        augment = BatchAugment(config)
        batches = ((augment(batch["pixel_values"]), batch["label"]) for batch in loader)
        ema = ModelEmaV3(model, decay=0.998, use_warmup=True)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    forward = torch.compile(model) if variant == "compile" else model
    images, started = 0, time.perf_counter()
    for step in range(steps + 1):
        if step == 1:  # the first step (workers starting, allocations) is not timed
            images, started = 0, time.perf_counter()
        pixels, labels = next(batches)
        if variant == "bf16":
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=optimised):
            loss = criterion(forward(pixels), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model, step=step)
        images += len(labels)
    result = {"images_per_s": images / (time.perf_counter() - started), "steps": steps, "batch_size": batch_size}
    if variant in TRAINING_VARIANTS and variant not in ("baseline", "bf16"):
        result["decode_once_s"] = decode_s  # one-off; read back from the datasets cache when already done
    return result


def measure_inference(variant: str, model_id: str, batch_size: int, repeats: int) -> dict:
    import torch

    from modeling import Predictor, read_image

    deployed = Predictor.from_pretrained(model_id, device="cpu")
    if variant in BATCH1_ONLY:  # config.json as it is (views, precision, gate)
        predictor = deployed
    else:  # the network itself, one view per image
        precision = {"baseline": "float32", "int8": "int8"}.get(variant, "bfloat16")
        calibration = deployed.forward.calibration if precision == "int8" else None
        predictor = Predictor(deployed.model, int8_calibration=calibration, device="cpu", precision=precision,
                              views=[], compile=variant == "compile")
    pixels = predictor.tensor(read_image(EXAMPLE)).repeat(batch_size, 1, 1, 1)
    if variant == "baseline":
        predictor.model.to(memory_format=torch.contiguous_format)
        pixels = pixels.contiguous()

    def predict():
        if variant == "gate":
            return predictor.xray_gate_logits(pixels)
        logits, features = predictor.logits_and_features(pixels)
        return predictor.probabilities_from_logits(logits), predictor.verdicts(features)

    started = time.perf_counter()
    with torch.inference_mode():
        predict()  # the first call compiles, where there is compiling
    first_call_s = time.perf_counter() - started
    with torch.inference_mode():
        times = timed_calls(predict, repeats)
    return {"ms": 1000 * statistics.median(times), "images_per_s": batch_size / statistics.median(times),
            "first_call_s": first_call_s, "precision_run": predictor.precision}  # a bf16 row runs fp32 on AVX2


def run_measurement(kind: str, variant: str, args: argparse.Namespace, tcmalloc: bool) -> dict:
    from modeling.runtime.host import find_tcmalloc
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {"PNEUMONIA_NO_TCMALLOC": "1"}
    if tcmalloc and find_tcmalloc():
        env["LD_PRELOAD"] = find_tcmalloc()
    command = [sys.executable, "-m", "benchmarks.run", "--measure", f"{kind}:{variant}", "--model", args.model,
               "--data", args.data, "--batch-size", str(args.batch_size), "--train-steps", str(args.train_steps),
               "--repeats", str(args.repeats)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind}:{variant} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result | {"tcmalloc": "LD_PRELOAD" in env}


# ---------------------------------------------------------------- the demo, evaluate.py

def timed_calls(call, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls, after two warm-up calls that are not counted."""
    times = []
    for i in range(repeats + 2):
        started = time.perf_counter()
        call()
        if i >= 2:
            times.append(time.perf_counter() - started)
    return times


def gradio_round_trip(repeats: int) -> dict:
    """A do-nothing endpoint with the demo's input: what gradio_client itself costs on this machine."""
    import gradio as gr
    from gradio_client import Client, handle_file

    from benchmarks.load_test import free_port, percentiles
    with gr.Blocks(analytics_enabled=False) as noop:
        file_in, text_out = gr.File(type="filepath"), gr.Markdown()
        gr.Button().click(lambda file: "ok", file_in, text_out, api_name="noop")
    port = free_port()
    noop.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        results = {}
        for name, verify in (("default", True), ("ssl_verify_false", False)):
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=verify)
            results[name] = percentiles(timed_calls(
                lambda: client.predict(handle_file(str(EXAMPLE)), api_name="/noop"), repeats))
        return results
    finally:
        noop.close()


def demo_latency(model_id: str, repeats: int) -> dict:
    """`python app.py` as users start it: cold start to first answer, then warm latencies."""
    from gradio_client import Client, handle_file

    from benchmarks.cold_start import started_demo
    from benchmarks.load_test import percentiles
    with started_demo(model_id) as (client, cold_start):
        image = handle_file(str(EXAMPLE))
        results = {"cold_start_to_first_answer_s": cold_start}
        for heatmap in (False, True):
            results["with_heatmap" if heatmap else "without_heatmap"] = percentiles(timed_calls(
                lambda: client.predict(image, heatmap=heatmap, api_name="/predict"), repeats))
        # gradio_client builds a new httpx client, and with it a TLS context, for every upload and queue join,
        # even over plain http; ssl_verify=False makes that context cheap (no CA bundle to load)
        plain_http = Client(client.src, verbose=False, ssl_verify=False)
        results["without_heatmap_ssl_verify_false"] = percentiles(timed_calls(
            lambda: plain_http.predict(image, heatmap=False, api_name="/predict"), repeats))
        examples = sorted((ROOT / "examples").glob("*.jpeg"))
        files = [handle_file(str(examples[i % len(examples)])) for i in range(32)]
        started = time.perf_counter()
        client.predict(files, api_name="/predict_batch")
        results["batch_mode_32_images_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for file in files:
            client.predict(file, heatmap=False, api_name="/predict")
        results["single_requests_32_images_s"] = time.perf_counter() - started
        return results


def evaluate_seconds(model_id: str, data: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([sys.executable, "evaluate.py", "--model", model_id, "--data", data, "--split", "test",
                        "--output-dir", out], cwd=ROOT, check=True, capture_output=True)
        return time.perf_counter() - started


# ---------------------------------------------------------------- the whole run

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "weights" / "pneumonia-resnet50"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "chest_xray"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=6, help="timed steps per training row (baseline: half)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--train-compile", action="store_true",
                        help="also time training with torch.compile (two to three minutes of compiling on 2 cores)")
    parser.add_argument("--output", type=Path, help="also write the results as JSON (the README is rendered from it)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # KIND:VARIANT, one measurement in this process
    args = parser.parse_args()

    if args.measure:
        kind, variant = args.measure.split(":")
        if kind == "training":
            steps = (args.train_steps // 2 or 1) if variant in ("baseline", "network_fp32") else args.train_steps
            result = measure_training(variant, args.model, args.data, args.batch_size, steps)
        else:
            batch_size = int(kind.removeprefix("inference"))
            repeats = args.repeats if batch_size == 1 else max(3, args.repeats // 4)  # seconds per call in fp32
            result = measure_inference(variant, args.model, batch_size, repeats)
        print(json.dumps(result))
        return

    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    from modeling.runtime.host import cpu_model
    from modeling.runtime.inference import fast_bf16
    # the bf16 rows depend on the CPU more than anything: fast only where oneDNN has bf16 kernels
    results: dict = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "cpu_model": cpu_model(),
                     "fast_bf16": fast_bf16(torch.device("cpu")), "training": {}, "inference": {}}

    for variant, label in TRAINING_VARIANTS.items():
        if variant in OPTIONAL_TRAINING_VARIANTS and not args.train_compile:
            continue
        row = run_measurement("training", variant, args, tcmalloc=variant in ("tcmalloc", "compile"))
        row["ratio"] = row["images_per_s"] / (results["training"].get("baseline") or row)["images_per_s"]
        results["training"][variant] = row | {"label": label}
        print(f"training   {label:<72} {row['images_per_s']:6.2f} img/s  {row['ratio']:.2f}x", flush=True)
    results["training_network_only"] = {}
    for variant, label in NETWORK_ONLY_VARIANTS.items():
        row = run_measurement("training", variant, args, tcmalloc=variant == "network_bf16")
        row["ratio"] = row["images_per_s"] / results["training"]["baseline"]["images_per_s"]
        results["training_network_only"][variant] = row | {"label": label}
        print(f"training   {label:<72} {row['images_per_s']:6.2f} img/s  {row['ratio']:.2f}x", flush=True)

    for batch_size in (1, args.batch_size):
        table = results["inference"][f"batch{batch_size}"] = {}
        for variant, label in INFERENCE_VARIANTS.items():
            if variant in BATCH1_ONLY and batch_size != 1:
                continue
            row = run_measurement(f"inference{batch_size}", variant, args, tcmalloc=variant != "baseline" and variant != "bf16")
            row["speedup"] = table.get("baseline", row)["ms"] / row["ms"]  # the gate's row: its share, not a speed-up
            table[variant] = row | {"label": label}
            print(f"batch {batch_size:<3} {label:<40} {row['ms']:8.1f} ms  {row['images_per_s']:6.1f} img/s  "
                  f"{row['speedup']:.2f}x", flush=True)

    demo = results["demo"] = demo_latency(args.model, args.repeats)
    demo["gradio_client_round_trip"] = gradio_round_trip(args.repeats)
    model_ms = results["inference"]["batch1"]["app"]["ms"]
    demo["model_batch1_ms"] = model_ms
    round_trip = demo["gradio_client_round_trip"]
    demo["p50_without_heatmap_over_model_batch1"] = demo["without_heatmap"]["p50_ms"] / model_ms
    demo["p50_without_heatmap_minus_round_trip_over_model_batch1"] = (
        demo["without_heatmap"]["p50_ms"] - round_trip["default"]["p50_ms"]) / model_ms
    demo["ssl_verify_false_p50_without_heatmap_over_model_batch1"] = (
        demo["without_heatmap_ssl_verify_false"]["p50_ms"] / model_ms)
    print(f"demo: {json.dumps(demo)}", flush=True)

    results["evaluate_test_split_s"] = evaluate_seconds(args.model, args.data)
    print(f"evaluate.py on the test split: {results['evaluate_test_split_s']:.1f} s", flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
