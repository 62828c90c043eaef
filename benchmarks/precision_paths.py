"""Each precision path of a model folder on this machine: does it reproduce the folder's reference outputs, and
what does one image cost as the demo runs it?

    python -m benchmarks.precision_paths [--model weights/pneumonia-resnet50] [--data ../shared/data/chest_xray]
                                         [--output docs/precision_paths.json]

For float32, bfloat16 and int8: the largest miss against the folder's reference_outputs.safetensors
(`modeling.runtime.reference`; none where the path agrees), and the batch-1 latency of one example image with the folder's
test-time views, out-of-distribution detector and chest X-ray gate, the median of --repeats calls after two
warm-up calls, beside float32's in the same run. Where the folder deploys no int8, int8 is calibrated as
`modeling.training.finalize --precision int8` calibrates it (--int8-images training images, with the views). Also: the CPU,
its instruction sets, and which path the folder's own load-time check chose here. Nothing is asserted: the
numbers depend on the machine, which is the point.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pneumonia-person1_virus_6.jpeg"
PATHS = ("float32", "bfloat16", "int8")
# what oneDNN's kernels depend on: bf16 and int8 (VNNI) instructions, AVX512 and AMX
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """The instruction sets among `ISA_FLAGS` this CPU reports (Linux; empty elsewhere)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [flag for flag in ISA_FLAGS if flag in flags.split(":", 1)[1].split()]


def latency_ms(predictor, repeats: int) -> float:
    import torch

    from benchmarks.run import timed_calls
    from modeling.runtime.preprocessing import read_image

    pixels = predictor.tensor(read_image(EXAMPLE))

    def predict():
        logits, features = predictor.logits_and_features(pixels)
        return predictor.probabilities_from_logits(logits), predictor.verdicts(features)

    with torch.inference_mode():
        return 1000 * statistics.median(timed_calls(predict, repeats))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "weights" / "pneumonia-resnet50"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "chest_xray"))
    parser.add_argument("--int8-images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, help="also keep the results in this JSON file, one entry per CPU "
                        "(this CPU's replaces its earlier one; docs/speed.md is rendered from it)")
    args = parser.parse_args(argv)

    from modeling.runtime.files import SPLIT_NAME, resolve_model_folder, write_json_atomic
    from modeling.runtime.host import cpu_model
    from modeling.runtime.inference import Predictor
    from modeling.runtime.reference import REFERENCE_NAME, disagreement, load_reference
    from modeling.training.finalize import int8_calibration

    folder = resolve_model_folder(args.model)
    deployed = Predictor.from_pretrained(folder, device="cpu")
    reference = load_reference(folder / REFERENCE_NAME)
    calibration = getattr(deployed.forward, "calibration", None)
    command = "python -m benchmarks.precision_paths" + (f" --output {args.output}" if args.output else "")
    results = {"cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "model": args.model, "command": command,
               "deployed": deployed.config.precision, "runs": deployed.precision,
               "reference_check": deployed.reference_check, "views": 1 + len(deployed.views), "paths": {}}
    print(f"{results['cpu_model']} ({', '.join(results['cpu_flags'])}): {deployed.precision} runs: "
          f"{deployed.reference_check}", flush=True)
    for path in PATHS:
        if path == "int8" and calibration is None:
            calibration, count = int8_calibration(deployed.model, deployed.views, args.data, folder / SPLIT_NAME,
                                                  args.int8_images)
            results["int8_calibrated_here_on"] = count
        predictor = Predictor(deployed.model, ood=deployed.ood, xray_gate=deployed.xray_gate, device="cpu",
                              int8_calibration=calibration if path == "int8" else None, precision=path,
                              views=deployed.views)
        missed = disagreement(predictor, reference)
        row = {"runs_as": predictor.precision, "agrees": missed is None, "miss": missed,
               "ms": latency_ms(predictor, args.repeats)}
        row["vs_float32"] = results["paths"].get("float32", row)["ms"] / row["ms"]
        results["paths"][path] = row
        print(f"{path:<9} runs as {row['runs_as']:<9} {row['ms']:7.1f} ms  {row['vs_float32']:.2f}x  "
              f"{'agrees' if missed is None else 'disagrees: ' + missed}", flush=True)
    if args.output:
        def same_cpu(entry: dict) -> bool:
            return (entry["cpu_model"], entry["cpu_flags"]) == (results["cpu_model"], results["cpu_flags"])
        earlier = json.loads(args.output.read_text()) if args.output.exists() else []
        write_json_atomic(args.output, [entry for entry in earlier if not same_cpu(entry)] + [results])


if __name__ == "__main__":
    main()
