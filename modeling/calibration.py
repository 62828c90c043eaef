"""Calibration and the operating point, both fitted on validation only.

Temperature scaling (Guo et al. 2017) makes the probabilities mean what they say; the decision
threshold is then the highest one reaching the target sensitivity on validation.

    python -m modeling.calibration MODEL_DIR --data DIR_OR_ID [--target-sensitivity 0.95]
                                   [--tta default|none] [--precision bfloat16|float32|int8]

re-fits both for a trained model folder from its saved validation split (split.json) and rewrites
config.json; with --tta / --precision it first sets the test-time views and the inference
precision, so that temperature and threshold are fitted for exactly what inference will run.
"""
from __future__ import annotations

from .runtime import use_tcmalloc

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported (see modeling/runtime.py)

import argparse  # noqa: E402
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from .config import ModelConfig
from .metrics import binary_metrics, operating_curve, threshold_for_sensitivity


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(logits / T)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)

    def nll(log_t: float) -> float:
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean()

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def positive_probs(logits: np.ndarray, temperature: float, positive_index: int) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)[:, positive_index]


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE of the positive-class probability: mean |observed rate - mean probability| over equal-width bins."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(labels[members].mean() - probs[members].mean())
    return float(error)


def set_operating_point(config: ModelConfig, logits: np.ndarray, labels: np.ndarray, target_sensitivity: float,
                        **extra: Any) -> dict[str, Any]:
    """Fit temperature and threshold on validation logits (labels: model class indices); update `config`."""
    config.temperature = fit_temperature(logits, labels)
    positive = (np.asarray(labels) == config.positive_index).astype(int)
    probs = positive_probs(logits, config.temperature, config.positive_index)
    config.threshold = threshold_for_sensitivity(positive, probs, target_sensitivity)
    at_threshold = binary_metrics(positive, probs, config.threshold)
    config.validation = {
        **extra, "target_sensitivity": target_sensitivity, "n": at_threshold["n"],
        "roc_auc": at_threshold["roc_auc"], "sensitivity": at_threshold["recall"],
        "specificity": at_threshold["specificity"], "temperature": config.temperature,
        "ece_before": expected_calibration_error(positive, positive_probs(logits, 1.0, config.positive_index)),
        "ece_after": expected_calibration_error(positive, probs),
        "curve": operating_curve(positive, probs),
    }
    return at_threshold


def main(argv: list[str] | None = None) -> None:
    import torch

    from .views import DEFAULT_TTA_VIEWS
    from .inference import predict_saved_split
    from .model import PneumoniaClassifier

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--target-sensitivity", type=float)
    parser.add_argument("--tta", choices=["keep", "default", "none"], default="keep",
                        help="test-time views: keep config.json's, store the default views "
                             f"({DEFAULT_TTA_VIEWS}), or none")
    parser.add_argument("--precision", choices=["keep", "float32", "bfloat16", "int8"], default="keep",
                        help="int8 needs the calibration `python -m modeling.quantize` writes")
    args = parser.parse_args(argv)

    model = PneumoniaClassifier.from_pretrained(args.model_dir).to(memory_format=torch.channels_last)
    config = model.config
    if args.tta != "keep":
        config.tta_views = list(DEFAULT_TTA_VIEWS) if args.tta == "default" else []
    if args.precision != "keep":
        config.precision = args.precision
        config.check()
    labels, logits, _ = predict_saved_split(model, args.data, args.model_dir / "split.json", "validation")
    target = args.target_sensitivity or config.validation.get("target_sensitivity", 0.95)
    best_epoch = config.validation.get("best_epoch")
    at = set_operating_point(config, logits, labels, target, best_epoch=best_epoch)
    config.save(args.model_dir / "config.json")
    print(f"{1 + len(config.tta_views)} view(s), {config.precision}: temperature {config.temperature:.4f} (validation ECE {config.validation['ece_before']:.4f} -> "
          f"{config.validation['ece_after']:.4f}); threshold {config.threshold:.4f}: validation sensitivity "
          f"{at['recall']:.4f}, specificity {at['specificity']:.4f} on {at['n']} images")


if __name__ == "__main__":
    main()
