"""What each change did on validation: the README's results table, from model folders and their logs.

    python docs/validation_results.py --data ../shared/data/chest_xray \\
        --run "LABEL=MODEL_DIR" [--run ...] [--deployed "LABEL=MODEL_DIR" ...] --output docs/validation_results.json

`--run`: the network of a training run's folder, as trained (fp32, the image as is, no OOD gate).
`--deployed`: a folder made by `modeling.finalize`, as the app runs it (its precision and test-time
views, through `Predictor.from_pretrained`). Each is predicted on the validation side of its
split.json; the table gives ROC-AUC, the log-loss and expected calibration error after a
temperature fitted on those same logits, and the specificity at the threshold that keeps 95%
sensitivity. The training log's best validation ROC-AUC of the raw weights and of their moving
average are listed too. Only the validation split is read: the test split stays for the final report.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling.runtime import use_tcmalloc  # noqa: E402

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported (see modeling/runtime.py)

import numpy as np  # noqa: E402

from modeling import PneumoniaClassifier, Predictor  # noqa: E402
from modeling.calibration import expected_calibration_error, fit_temperature, log_loss, positive_probs  # noqa: E402
from modeling.metrics import binary_metrics, threshold_for_sensitivity  # noqa: E402


def summarise(labels: np.ndarray, logits: np.ndarray, positive_index: int) -> dict:
    positive = labels == positive_index
    temperature = fit_temperature(logits, labels)
    probs = positive_probs(logits, temperature, positive_index)
    threshold = threshold_for_sensitivity(positive, probs, 0.95)
    at = binary_metrics(positive, probs, threshold)
    return {"n": int(len(labels)), "roc_auc": at["roc_auc"], "log_loss": log_loss(positive, probs),
            "ece": expected_calibration_error(positive, probs), "temperature": temperature,
            "sensitivity": at["recall"], "specificity": at["specificity"]}


def best_from_log(model_dir: Path) -> dict:
    """Best validation ROC-AUC per kind of weights in the run's training_log.json."""
    history = json.loads((model_dir / "training_log.json").read_text())["history"]
    best: dict = {}
    for record in history:
        kind = record.get("weights", "weights")
        if kind not in best or record["val_roc_auc"] > best[kind]["val_roc_auc"]:
            best[kind] = {"epoch": record["epoch"], "val_roc_auc": record["val_roc_auc"], "val_loss": record["val_loss"]}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", action="append", default=[], help="LABEL=MODEL_DIR: the trained network, fp32, one view")
    parser.add_argument("--deployed", action="append", default=[], help="LABEL=MODEL_DIR: a finalized folder as deployed")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    rows = []
    for spec, deployed in [(spec, False) for spec in args.run] + [(spec, True) for spec in args.deployed]:
        label, model_dir = spec.split("=", 1)
        model_dir = Path(model_dir)
        if deployed:
            predictor = Predictor.from_pretrained(model_dir, device="cpu")
        else:
            predictor = Predictor(PneumoniaClassifier.from_pretrained(model_dir), device="cpu", precision="float32")
            predictor.config.tta_views = []
        labels, logits, _ = predictor.predict_saved_split(args.data, model_dir / "split.json", "validation")
        row = {"label": label, "model_dir": str(model_dir), "deployed": deployed, "precision": predictor.precision,
               "views": 1 + len(predictor.config.tta_views), **summarise(labels, logits, predictor.config.positive_index)}
        log_file = model_dir / "training_log.json"
        if not deployed and log_file.exists():
            log = json.loads(log_file.read_text())
            row |= {"command": log.get("command"), "epochs": log["args"]["epochs"], "best_epoch": log["best_epoch"],
                    "selected_weights": log.get("best_weights", "weights"), "log_best": best_from_log(model_dir)}
        rows.append(row)
        print(row, flush=True)
    command = " ".join(["python", "docs/validation_results.py", *map(shlex.quote, sys.argv[1:])])
    args.output.write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
