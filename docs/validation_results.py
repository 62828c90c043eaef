"""What each change did on validation: the README's results table, from model folders and their logs.

    python docs/validation_results.py --data ../shared/data/chest_xray \\
        --run "LABEL=MODEL_DIR" [--run ...] [--tta-for MODEL_DIR] [--bf16-for MODEL_DIR] [--int8-for MODEL_DIR] \\
        --output docs/validation_results.json

For each model folder (with the split.json of its training run) the validation side of that split
is predicted once per view; the table gives ROC-AUC, the log-loss and expected calibration error
after a temperature fitted on those same logits, and the specificity at the threshold that keeps
95% sensitivity. `--tta-for` adds a row averaging the logits of the image as is and the default
test-time views (`modeling.views.DEFAULT_TTA_VIEWS`: 1.1x zoom, +-5 degrees); `--bf16-for`
adds the same model under bf16 autocast, `--int8-for` in int8 (its `int8-calibration.safetensors`,
see `modeling.quantize`). The training log's best
validation ROC-AUC of the raw weights and of their moving average are listed too. Only the
validation split is read: the test split stays for the final report.
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
import torch  # noqa: E402

from modeling import PneumoniaClassifier  # noqa: E402
from modeling.views import DEFAULT_TTA_VIEWS  # noqa: E402
from modeling.calibration import expected_calibration_error, fit_temperature, positive_probs  # noqa: E402
from modeling.inference import predict_saved_split  # noqa: E402
from modeling.metrics import binary_metrics, threshold_for_sensitivity  # noqa: E402



def validation_logits(model: PneumoniaClassifier, data: str, split_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, logits) on the validation side of `split_file`, with the model's own views and precision."""
    labels, logits, _ = predict_saved_split(model, data, split_file, "validation")
    return labels, logits


def summarise(labels: np.ndarray, logits: np.ndarray, positive_index: int) -> dict:
    positive = labels == positive_index
    temperature = fit_temperature(logits, labels)
    probs = positive_probs(logits, temperature, positive_index)
    threshold = threshold_for_sensitivity(positive, probs, 0.95)
    at = binary_metrics(positive, probs, threshold)
    log_probs = np.log(np.clip(np.where(positive, probs, 1 - probs), 1e-12, 1))
    return {"n": int(len(labels)), "roc_auc": at["roc_auc"], "log_loss": float(-log_probs.mean()),
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
    parser.add_argument("--run", action="append", default=[], help="LABEL=MODEL_DIR (a training run's output)")
    parser.add_argument("--tta-for", type=Path, help="also evaluate this model folder with test-time augmentation")
    parser.add_argument("--bf16-for", type=Path, help="also evaluate this model folder under bf16 autocast")
    parser.add_argument("--int8-for", type=Path, help="also evaluate this model folder in int8 (needs its calibration)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    rows = []
    for spec in args.run:
        label, model_dir = spec.split("=", 1)
        model_dir = Path(model_dir)
        model = PneumoniaClassifier.from_pretrained(model_dir).to(memory_format=torch.channels_last)
        model.config.precision, model.config.tta_views = "float32", []
        labels, logits = validation_logits(model, args.data, model_dir / "split.json")
        log = json.loads((model_dir / "training_log.json").read_text())
        rows.append({"label": label, "model_dir": str(model_dir), "command": log.get("command"),
                     "epochs": log["args"]["epochs"], "best_epoch": log["best_epoch"],
                     "selected_weights": log.get("best_weights", "weights"), "log_best": best_from_log(model_dir),
                     **summarise(labels, logits, model.config.positive_index)})
        print(rows[-1], flush=True)
        if args.tta_for and model_dir.resolve() == args.tta_for.resolve():
            model.config.tta_views = DEFAULT_TTA_VIEWS
            labels, logits = validation_logits(model, args.data, model_dir / "split.json")
            model.config.tta_views = []
            views = ", ".join(f"zoom {v['zoom']:g}" if v["degrees"] == 0 else f"rotation {v['degrees']:+g} degrees"
                              for v in DEFAULT_TTA_VIEWS)
            rows.append({"label": f"{label} + test-time augmentation (as is, {views}; logits averaged)",
                         "model_dir": str(model_dir),
                         **summarise(labels, logits, model.config.positive_index)})
            print(rows[-1], flush=True)
        for asked_for, precision, name in ((args.bf16_for, "bfloat16", "bf16"), (args.int8_for, "int8", "int8")):
            if asked_for and model_dir.resolve() == asked_for.resolve():
                model.config.precision = precision
                labels, logits = validation_logits(model, args.data, model_dir / "split.json")
                rows.append({"label": f"{label}, {name} inference", "model_dir": str(model_dir),
                             **summarise(labels, logits, model.config.positive_index)})
                print(rows[-1], flush=True)
    command = " ".join(["python", "docs/validation_results.py", *map(shlex.quote, sys.argv[1:])])
    args.output.write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
