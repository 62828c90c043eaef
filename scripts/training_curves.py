"""Validation per epoch of several training runs, as one picture for the README.

    python -m scripts.training_curves --run "LABEL=RUN_DIR" [--run ...] --output docs/training_curves.png

A .json beside the picture records the command. Reads each run's training_log.json (written by train.py: every epoch's validation record, for the
weights and their moving average) and plots validation log-loss after temperature scaling (the
selection criterion) and ROC-AUC per epoch; the epoch each run selected is ringed.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from modeling.analysis.plots import plot_training_curves
from modeling.training.run_log import read_training_log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR (a folder with training_log.json)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.run:
        label, run_dir = spec.split("=", 1)
        runs[label] = read_training_log(run_dir)
    plot_training_curves(runs, args.output)
    command = shlex.join(["python", "-m", "scripts.training_curves", *(sys.argv[1:] if argv is None else argv)])
    args.output.with_suffix(".json").write_text(json.dumps({"command": command, "runs": list(runs)}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
