"""Calibration and the operating point: the arithmetic that `modeling.training.finalize` fits on validation.

Temperature scaling (Guo et al. 2017) makes the probabilities mean what they say. The decision
threshold then comes from one of the rules in `THRESHOLD_RULES`; `compare_threshold_rules` shows
how far each rule's threshold moves when validation is resampled (a rule that a handful of
images can move will not hold on new data).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from ..runtime.probability import log_loss, positive_probs
from .metrics import binary_metrics, operating_curve, threshold_for_sensitivity


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(logits / T)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)

    def nll(log_t: float) -> float:
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean()

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def calibrated_log_loss(logits: np.ndarray, labels: np.ndarray, positive_index: int) -> tuple[float, float]:
    """(log-loss after a temperature fitted on these very logits, that temperature): how well a network's
    probabilities can be made to mean what they say, the criterion for comparing networks and views on validation."""
    temperature = fit_temperature(logits, labels)
    positive = np.asarray(labels) == positive_index
    return log_loss(positive, positive_probs(logits, temperature, positive_index)), temperature


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


def youden_threshold(positive: np.ndarray, probs: np.ndarray, target_sensitivity: float) -> float:
    """The threshold maximising sensitivity + specificity - 1 (Youden's J); ties go to the lowest."""
    from sklearn.metrics import roc_curve
    fpr, tpr, thresholds = roc_curve(positive, probs)
    best = np.flatnonzero(np.isclose(tpr - fpr, (tpr - fpr).max()))[-1]
    return float(min(thresholds[best], 1.0))


# name -> (rule(positive, calibrated probs, target sensitivity) -> threshold, what it means)
THRESHOLD_RULES: dict[str, tuple[Callable[[np.ndarray, np.ndarray, float], float], str]] = {
    "sensitivity": (threshold_for_sensitivity,
                    "the highest threshold that keeps the target sensitivity on validation"),
    "youden": (youden_threshold, "the threshold maximising sensitivity + specificity - 1 on validation"),
    "prior": (lambda positive, probs, target: 0.5,
              "0.5: the balanced sampler trains for equal class priors, and temperature scaling keeps 0.5 in place"),
}


def compare_threshold_rules(positive: np.ndarray, probs: np.ndarray, target_sensitivity: float,
                            n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each rule's threshold on validation, and its spread over bootstrap resamples of validation."""
    positive = np.asarray(positive).astype(int)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(positive), len(positive)) for _ in range(n_boot)]
    draws = [index for index in draws if 0 < positive[index].sum() < len(index)]
    report = {}
    for name, (rule, meaning) in THRESHOLD_RULES.items():
        threshold = rule(positive, probs, target_sensitivity)
        resampled = np.array([rule(positive[index], probs[index], target_sensitivity) for index in draws])
        at = binary_metrics(positive, probs, threshold)
        report[name] = {"meaning": meaning, "threshold": float(threshold),
                        "bootstrap_p05": float(np.percentile(resampled, 5)),
                        "bootstrap_p95": float(np.percentile(resampled, 95)),
                        "bootstrap_std": float(resampled.std()),
                        "sensitivity": at["recall"], "specificity": at["specificity"]}
    return report


def operating_point(logits: np.ndarray, labels: np.ndarray, positive_index: int, rule: str,
                    target_sensitivity: float) -> dict[str, Any]:
    """Temperature, threshold (by `rule`) and what they give on validation logits (labels: class indices)."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")
    temperature = fit_temperature(logits, labels)
    positive = (np.asarray(labels) == positive_index).astype(int)
    probs = positive_probs(logits, temperature, positive_index)
    threshold = THRESHOLD_RULES[rule][0](positive, probs, target_sensitivity)
    at = binary_metrics(positive, probs, threshold)
    return {
        "temperature": temperature, "threshold": threshold, "threshold_rule": rule,
        "target_sensitivity": target_sensitivity, "n": at["n"], "roc_auc": at["roc_auc"],
        "sensitivity": at["recall"], "specificity": at["specificity"],
        "log_loss_before": log_loss(positive, positive_probs(logits, 1.0, positive_index)),
        "log_loss_after": log_loss(positive, probs),
        "ece_before": expected_calibration_error(positive, positive_probs(logits, 1.0, positive_index)),
        "ece_after": expected_calibration_error(positive, probs),
        "threshold_rules": compare_threshold_rules(positive, probs, target_sensitivity),
        "curve": operating_curve(positive, probs),
    }
