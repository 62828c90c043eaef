"""Evaluate a model folder or Hub model on a data split: metrics with 95% bootstrap intervals, plots, CSV.

    python evaluate.py --model weights/pneumonia-resnet50 --data ../shared/data/chest_xray --split test --output-dir eval/test

Writes metrics.json, roc.png, pr.png, confusion_matrix.png and predictions.csv to --output-dir.
The operating threshold is the one stored in the model's config.json (chosen on validation).
`--split validation` evaluates the validation side of the model's own split.json (the images its
threshold, temperature and OOD gate were fitted on), so that choices can be checked on validation
before the test split is evaluated once.
"""
from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
from pathlib import Path

from modeling.runtime.host import use_tcmalloc

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported (see modeling/runtime/host.py)

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from modeling.analysis.plots import plot_confusion, plot_pr, plot_reliability, plot_roc
from modeling.analysis.report import format_ood, format_robustness, format_table
from modeling.runtime.files import (
    SPLIT_NAME,
    ModelLoadError,
    folder_written_whole,
    resolve_model_folder,
    write_json_atomic,
)
from modeling.runtime.inference import Predictor, describe_device
from modeling.runtime.ood import NOT_AN_XRAY, UNLIKE_TRAINING, VERDICTS
from modeling.runtime.probability import log_loss
from modeling.training.calibration import expected_calibration_error
from modeling.training.data import (
    DataLoadError,
    attach_transform,
    drop_unreadable,
    image_name,
    label_mapping,
    label_names,
    load_data,
    saved_split,
)
from modeling.training.metrics import binary_metrics, bootstrap_ci
from modeling.training.evaluation import read_folder
from modeling.training.robustness import PERTURBATIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="weights/pneumonia-resnet50", help="model folder or Hugging Face Hub id")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    p.add_argument("--data", required=True, help="local imagefolder or Hugging Face Hub dataset id")
    p.add_argument("--split", default="test",
                   help="a split of --data; 'validation': the validation side of the model's split.json")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--ood-images", type=Path, action="append", default=[],
                   help="folder of images that are not chest X-rays (python -m scripts.non_xray DIR); repeatable")
    p.add_argument("--other-xrays", type=Path, action="append", default=[],
                   help="folder of chest X-rays from other sources, reported separately; repeatable")
    p.add_argument("--robustness", action="store_true", help="also evaluate under mild image changes")
    return p.parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict:
    # the accelerator places processes (accelerate launch evaluate.py ...); the Predictor runs config.json's
    # precision and views, so the numbers are the ones the demo gives
    accelerator = Accelerator(cpu=not torch.accelerator.is_available())
    try:
        predictor, split_file = load_predictor(args, accelerator.device)
    except (ModelLoadError, DataLoadError) as error:
        sys.exit(str(error))
    config = predictor.config

    try:
        splits = load_data(args.data)
    except DataLoadError as error:
        sys.exit(str(error))
    try:
        split = model_split(splits, args, split_file)
    except (ModelLoadError, DataLoadError) as error:
        sys.exit(str(error))
    split, report = drop_unreadable(split, args.split,
                                    data_dir=args.data if os.path.isdir(args.data) else None)
    print(report.summary())
    to_model = label_mapping(label_names(split), config.label_names)
    loader = accelerator.prepare(DataLoader(attach_transform(split, predictor.transform, to_model),
                                            batch_size=args.batch_size, num_workers=args.workers))
    classes, logits, loss, features = predictor.predict_loader(loader, accelerator, desc=f"evaluating {args.split}",
                                                               with_features=True)
    labels = (classes == config.positive_index).astype(int)
    probs = predictor.probabilities_from_logits(logits)[:, config.positive_index]

    metrics = binary_metrics(labels, probs, config.threshold)
    metrics.update(loss=loss, model=str(args.model),
                   data=str(args.data), split=args.split,
                   unreadable_skipped=len(report.unreadable), bootstrap=args.bootstrap,
                   command=shlex.join(["python", *sys.argv]))
    metrics["ece"] = expected_calibration_error(labels, probs)
    metrics["log_loss"] = log_loss(labels, probs)  # at the deployed temperature: "calibrated" on validation
    metrics["temperature"] = config.temperature
    metrics["ci95"] = bootstrap_ci(labels, probs, config.threshold, n_boot=args.bootstrap)
    at_half = binary_metrics(labels, probs, 0.5)
    metrics["at_0.5"] = {**at_half, "ci95": bootstrap_ci(labels, probs, 0.5, n_boot=args.bootstrap)}

    metrics["precision_deployed"] = predictor.precision
    metrics["precision_check"] = predictor.reference_check
    metrics["device"] = describe_device(predictor.device)
    metrics["views"] = 1 + len(predictor.views)
    if predictor.ood is not None:
        metrics["ood"] = ood_report(predictor, features, args.ood_images, args.other_xrays, args.split)
    if args.robustness:
        metrics["robustness"] = robustness_report(predictor, split, to_model, accelerator, args)
    if not accelerator.is_main_process:
        return metrics

    # the folder appears whole or not at all: a run stopped while plotting leaves the previous one (or none)
    with folder_written_whole(args.output_dir) as out:
        write_json_atomic(out / "metrics.json", metrics)
        names = [image_name(record, i) for i, record in enumerate(split["image"])]
        with open(out / "predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "label", f"prob_{config.positive_label.lower()}", "predicted"])
            for name, label, prob in zip(names, labels, probs):
                predicted = config.positive_label if prob >= config.threshold else _negative_label(config)
                writer.writerow([name, config.label_names[config.positive_index] if label else _negative_label(config),
                                 f"{prob:.6f}", predicted])
        plot_roc(labels, probs, metrics, out / "roc.png")
        plot_reliability(labels, probs, metrics["ece"], out / "reliability.png")
        plot_pr(labels, probs, metrics, out / "pr.png")
        plot_confusion(metrics["confusion_matrix"], [_negative_label(config), config.positive_label],
                       config.threshold, out / "confusion_matrix.png")
    print(format_table(metrics))
    if "ood" in metrics:
        print(format_ood(metrics["ood"]))
    if "robustness" in metrics:
        print(format_robustness(metrics))
    print("wrote metrics.json, predictions.csv, roc.png, pr.png, confusion_matrix.png, reliability.png to "
          f"{args.output_dir}")
    return metrics


def load_predictor(args: argparse.Namespace, device: torch.device) -> tuple[Predictor, Path]:
    """(the model as deployed; the split.json it was trained on)."""
    predictor = Predictor.from_pretrained(args.model, revision=args.revision, device=device)
    return predictor, resolve_model_folder(args.model, revision=args.revision) / SPLIT_NAME


def model_split(splits, args: argparse.Namespace, split_file: Path):
    """The split to evaluate: one of the data's, or the validation side of the model's split.json."""
    if args.split == "validation":
        if not split_file.exists():
            raise ModelLoadError(f"The model {args.model} has no {SPLIT_NAME}, so its validation images are unknown; "
                                 "pass another --split.")
        return saved_split(splits, split_file, "validation")
    if args.split not in splits:
        raise DataLoadError(f"The data has no split {args.split!r}; it has {', '.join(splits)}.")
    return splits[args.split]


def ood_report(predictor: Predictor, test_features: np.ndarray, ood_folders: list[Path],
               other_xray_folders: list[Path], split: str = "test") -> dict:
    """How often the evaluated split's X-rays are flagged (keys "test_xrays*" whatever `split` is), and what the
    gate says of non-X-rays and of other chest X-rays."""
    verdicts = predictor.verdicts(test_features)
    flagged = verdicts != VERDICTS[0]
    report = {"split": split, "settings": {k: v for k, v in predictor.config.ood.items() if k != "fitted_for"},
              "test_xrays": len(flagged), "test_xrays_flagged": int(flagged.sum()),
              "test_xrays_flagged_rate": float(flagged.mean()),
              "test_xrays_verdicts": {v: int((verdicts == v).sum()) for v in VERDICTS}}
    for key, folders in (("non_xray", ood_folders), ("other_xrays", other_xray_folders)):
        for folder in folders:
            names, images, refused = read_folder(folder)
            folder_verdicts = predictor.analyse(images).verdicts if images else np.zeros(0, dtype=object)
            total = len(names) + len(refused)
            counts = {v: int((folder_verdicts == v).sum()) for v in VERDICTS}
            # a non-X-ray is caught when refused or called "not a chest X-ray"; another X-ray is flagged either way
            caught = len(refused) + counts[NOT_AN_XRAY] + (counts[UNLIKE_TRAINING] if key == "other_xrays" else 0)
            report.setdefault(key, []).append({
                "folder": str(folder), "images": total, "refused_by_reader": refused, "verdicts": counts,
                "flagged": caught, "flagged_rate": caught / max(1, total),
                "verdict_of": {name: str(v) for name, v in zip(names, folder_verdicts)}})
    return report


def robustness_report(predictor: Predictor, split, to_model, accelerator, args) -> dict:
    """Test metrics at the operating threshold under each perturbation in `modeling.training.robustness`."""
    report = {}
    config = predictor.config
    for name, perturb in PERTURBATIONS.items():
        loader = accelerator.prepare(DataLoader(
            attach_transform(split, lambda image, perturb=perturb: predictor.transform(perturb(image)), to_model),
            batch_size=args.batch_size, num_workers=args.workers))
        classes, logits, _ = predictor.predict_loader(loader, accelerator, desc=name)
        result = binary_metrics((classes == config.positive_index).astype(int),
                                predictor.probabilities_from_logits(logits)[:, config.positive_index],
                                config.threshold)
        probs = predictor.probabilities_from_logits(logits)[:, config.positive_index]
        report[name] = {**{k: result[k] for k in ("accuracy", "recall", "specificity", "roc_auc")},
                        "log_loss": log_loss(classes == config.positive_index, probs)}
    return report


def _negative_label(config) -> str:
    return next(name for name in config.label_names if name != config.positive_label)


if __name__ == "__main__":
    evaluate(parse_args())
