"""Binary metrics for the positive class (pneumonia), thresholds and bootstrap intervals."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

RATES = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc")


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, Any]:
    """Rates at `threshold` (predict positive when prob >= threshold) plus ROC-AUC and PR-AUC."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = (probs >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel().tolist()
    both_classes = 0 < labels.sum() < len(labels)
    return {
        "n": int(len(labels)),
        "threshold": float(threshold),
        "accuracy": (tp + tn) / len(labels),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": float(roc_auc_score(labels, probs)) if both_classes else float("nan"),
        "pr_auc": float(average_precision_score(labels, probs)) if both_classes else float("nan"),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def bootstrap_ci(labels: np.ndarray, probs: np.ndarray, threshold: float, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals (resampling images) for every rate in `RATES`. Kept over scipy.stats.bootstrap,
    which draws its own resamples for each statistic: here one draw of images serves every rate, so the intervals
    of all rates (and the published ones) come from the same resamples."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in RATES}
    for _ in range(n_boot):
        index = rng.integers(0, len(labels), len(labels))
        if labels[index].min() == labels[index].max():
            continue
        result = binary_metrics(labels[index], probs[index], threshold)
        for name in RATES:
            samples[name].append(result[name])
    tail = (1 - level) / 2 * 100
    return {name: [float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail))]
            for name, v in samples.items()}


def threshold_for_sensitivity(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity reaches `target`: the most specific operating
    point that still catches the wanted share of pneumonia cases."""
    fpr, tpr, thresholds = roc_curve(labels, probs)
    reaching = np.flatnonzero(tpr >= target)
    threshold = float(thresholds[reaching[0]])
    return min(threshold, 1.0)


def operating_curve(labels: np.ndarray, probs: np.ndarray, points: int = 101) -> dict[str, list[float]]:
    """Sensitivity and specificity at evenly spaced thresholds, stored with the model for the demo."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    thresholds = np.linspace(0.0, 1.0, points)
    positives, negatives = max(labels.sum(), 1), max((1 - labels).sum(), 1)
    sensitivity = [float(((probs >= t) & (labels == 1)).sum() / positives) for t in thresholds]
    specificity = [float(((probs < t) & (labels == 0)).sum() / negatives) for t in thresholds]
    return {"threshold": [round(float(t), 4) for t in thresholds], "sensitivity": sensitivity,
            "specificity": specificity}
