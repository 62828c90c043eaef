"""What each change did on validation: the README's results table, from model folders and their logs.

    python -m scripts.validation_results --data ../shared/data/chest_xray \\
        --run "LABEL=MODEL_DIR" [--run ...] [--deployed "LABEL=MODEL_DIR" ...] [--logged "LABEL=RUN_DIR" ...] \\
        --output docs/validation_results.json

`--run`: the network of a training run's folder (or of a model folder), as trained (fp32, the image as is, no OOD
gate).
`--deployed`: a folder made by `modeling.training.finalize`, as the app runs it (its precision and test-time
views, through `Predictor.from_pretrained`). Each is predicted on the validation side of its
split.json; the table gives ROC-AUC, the log-loss and expected calibration error after a
temperature fitted on those same logits, and the specificity at the threshold that keeps 95%
sensitivity. The training log's best validation ROC-AUC of the raw weights and of their moving
average are listed too. `--logged`: a run whose weights were not kept (only its training_log.json),
given by what the log recorded for its selected epoch (ROC-AUC and calibrated log-loss, computed
during training in its mixed precision). `--append` keeps the rows already in --output (runs whose folders are
gone stay in the table) and adds the new ones after them; every command that wrote rows is kept.
Only the validation split is read: the test split stays for the final report.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from modeling import PneumoniaClassifier, Predictor
from modeling.runtime.files import source_network_folder
from modeling.runtime.probability import positive_probs
from modeling.training.calibration import calibrated_log_loss, expected_calibration_error
from modeling.training.evaluation import predict_split
from modeling.training.metrics import binary_metrics, threshold_for_sensitivity
from modeling.training.run_log import LOG_NAME, read_training_log


def summarise(labels: np.ndarray, logits: np.ndarray, positive_index: int) -> dict:
    positive = labels == positive_index
    calibrated_loss, temperature = calibrated_log_loss(logits, labels, positive_index)
    probs = positive_probs(logits, temperature, positive_index)
    threshold = threshold_for_sensitivity(positive, probs, 0.95)
    at = binary_metrics(positive, probs, threshold)
    return {"n": int(len(labels)), "roc_auc": at["roc_auc"], "log_loss": calibrated_loss,
            "ece": expected_calibration_error(positive, probs), "temperature": temperature,
            "sensitivity": at["recall"], "specificity": at["specificity"]}


def best_from_log(model_dir: Path) -> dict:
    """Best validation ROC-AUC per kind of weights in the run's training_log.json."""
    best: dict = {}
    for record in read_training_log(model_dir)["history"]:
        kind = record["weights"]
        if kind not in best or record["val_roc_auc"] > best[kind]["val_roc_auc"]:
            best[kind] = {"epoch": record["epoch"], "val_roc_auc": record["val_roc_auc"], "val_loss": record["val_loss"]}
    return best


def predicted_row(label: str, model_dir: Path, deployed: bool, data: str) -> dict:
    """A row from predicting the validation side of the folder's split.json."""
    if deployed:
        predictor = Predictor.from_pretrained(model_dir, device="cpu")
    else:  # a model folder, or a training run's folder (its network in trained/)
        predictor = Predictor(PneumoniaClassifier.from_pretrained(source_network_folder(model_dir)), device="cpu",
                              precision="float32", views=[])
    labels, logits, _ = predict_split(predictor, data, model_dir / "split.json", "validation")
    row = {"label": label, "model_dir": str(model_dir), "deployed": deployed, "precision": predictor.precision,
           "views": 1 + len(predictor.views), **summarise(labels, logits, predictor.config.positive_index)}
    if not deployed and (model_dir / LOG_NAME).exists():
        log = read_training_log(model_dir)
        row |= {"command": log.get("command"), "epochs": log["args"]["epochs"], "best_epoch": log["best_epoch"],
                "selected_weights": log["best_weights"], "log_best": best_from_log(model_dir)}
    return row


def logged_row(label: str, run_dir: Path) -> dict:
    """A row from a training log alone: the selected epoch as it was validated during training."""
    log = read_training_log(run_dir)
    chosen = next(r for r in log["history"] if r["epoch"] == log["best_epoch"] and r["weights"] == log["best_weights"])
    return {"label": label, "model_dir": str(run_dir), "deployed": False, "logged_only": True,
            "precision": log["args"]["mixed_precision"] + " (training)", "views": 1,
            "roc_auc": chosen["val_roc_auc"], "log_loss": chosen["val_calibrated_loss"], "ece": None,
            "sensitivity": None, "specificity": None, "command": log.get("command"), "epochs": log["args"]["epochs"],
            "best_epoch": log["best_epoch"], "selected_weights": log["best_weights"],
            "log_best": best_from_log(run_dir)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    # one list, in the order given on the command line: the table's rows keep that order
    for kind, meaning in (("run", "LABEL=MODEL_DIR: the trained network, fp32, one view"),
                          ("deployed", "LABEL=MODEL_DIR: a finalized folder as deployed"),
                          ("logged", "LABEL=RUN_DIR: a run known by its training_log.json alone")):
        parser.add_argument(f"--{kind}", dest="rows", action="append", default=[], help=meaning,
                            metavar="LABEL=DIR", type=lambda spec, kind=kind: (kind, spec))
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--append", action="store_true", help="keep the rows already in --output, add these after them")
    args = parser.parse_args(argv)

    earlier = json.loads(args.output.read_text()) if args.append and args.output.exists() else {}
    commands, rows = earlier.get("commands", []), earlier.get("rows", [])
    for kind, spec in args.rows:
        label, folder = spec.split("=", 1)
        rows.append(logged_row(label, Path(folder)) if kind == "logged"
                    else predicted_row(label, Path(folder), kind == "deployed", args.data))
        print(rows[-1], flush=True)
    commands.append(shlex.join(["python", "-m", "scripts.validation_results", *(sys.argv[1:] if argv is None else argv)]))
    args.output.write_text(json.dumps({"commands": commands, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
