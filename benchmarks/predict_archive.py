"""predict.py's images per second on an archive, against Predictor.analyse in one loop, in the same run.

    python -m benchmarks.predict_archive --archive ../shared/data/chest_xray/train [--model weights/pneumonia-resnet50]
                                         [--workers 0 1] [--output docs/predict_benchmark.json]

The baseline reads each file and calls `Predictor.analyse` on it, one after the other, in one process;
predict.py is run as a user runs it (its own process, decoding in worker processes, parts on disk, the merge),
from a fresh --output. Both over every file of the archive; the ratio is what the command's pipeline gains.
Nothing is asserted: the numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modeling.runtime.files import write_json_atomic

REPO = Path(__file__).resolve().parents[1]


def loop_baseline(model: str, files: list[Path]) -> float:
    """Seconds for read + analyse, one file at a time, in a fresh process (model loading not counted)."""
    code = (
        "import sys, time\n"
        "from modeling import Predictor, read_image, ImageLoadError\n"
        f"predictor = Predictor.from_pretrained({model!r})\n"
        "files = sys.stdin.read().splitlines()\n"
        "started = time.perf_counter()\n"
        "for path in files:\n"
        "    try:\n"
        "        predictor.analyse([read_image(path)])\n"
        "    except ImageLoadError:\n"
        "        pass\n"
        "print(time.perf_counter() - started)\n")
    result = subprocess.run([sys.executable, "-c", code], input="\n".join(map(str, files)), cwd=REPO,
                            capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def predict_command(model: str, archive: Path, output: Path, workers: int) -> float:
    """Wall seconds of predict.py, start to worklist, model loading included."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "predict.py", str(archive), "--output", str(output), "--model", model,
                    "--workers", str(workers)], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--model", default="weights/pneumonia-resnet50")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="predict.py --workers values to time")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "predict_benchmark.json")
    args = parser.parse_args()
    files = sorted(p for p in args.archive.rglob("*") if p.is_file() and not p.name.startswith("."))
    baseline = loop_baseline(args.model, files)
    runs = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as scratch:
            seconds = predict_command(args.model, args.archive, Path(scratch) / "worklist.csv", workers)
        runs.append({"workers": workers, "seconds": seconds, "images_per_s": len(files) / seconds,
                     "ratio": baseline / seconds})
    result = {"command": shlex.join(["python", "-m", "benchmarks.predict_archive", *sys.argv[1:]]),
              "files": len(files), "analyse_loop_seconds": baseline, "analyse_loop_images_per_s": len(files) / baseline,
              "predict": runs}
    write_json_atomic(args.output, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
