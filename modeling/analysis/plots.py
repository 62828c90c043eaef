"""Pictures of evaluation results: ROC, precision-recall and confusion matrix."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay  # noqa: E402


def plot_roc(labels: np.ndarray, probs: np.ndarray, metrics: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(labels, probs, ax=ax, name="model", plot_chance_level=True)
    ax.scatter([1 - metrics["specificity"]], [metrics["recall"]], color="crimson", zorder=5,
               label=f"threshold {metrics['threshold']:.3f}")
    ax.set_title(f"ROC (AUC {metrics['roc_auc']:.3f}, n={metrics['n']})")
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_pr(labels: np.ndarray, probs: np.ndarray, metrics: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    PrecisionRecallDisplay.from_predictions(labels, probs, ax=ax, name="model", plot_chance_level=True)
    ax.scatter([metrics["recall"]], [metrics["precision"]], color="crimson", zorder=5,
               label=f"threshold {metrics['threshold']:.3f}")
    ax.set_title(f"Precision-recall (AP {metrics['pr_auc']:.3f})")
    ax.legend(loc="lower left")
    _save(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], label_names: Sequence[str], threshold: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(label_names)).plot(ax=ax, cmap="Blues", colorbar=False)
    ax.set_title(f"Confusion matrix at threshold {threshold:.3f}")
    _save(fig, path)


def plot_reliability(labels: np.ndarray, probs: np.ndarray, ece: float, path: Path, bins: int = 10) -> None:
    """Observed pneumonia rate against predicted probability; the diagonal is perfect calibration."""
    from sklearn.calibration import CalibrationDisplay
    fig, ax = plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(labels, probs, n_bins=bins, ax=ax, name="model")
    ax.set_title(f"Reliability (ECE {ece:.3f})")
    _save(fig, path)


def plot_training_curves(runs: dict[str, dict], path: Path) -> None:
    """Validation calibrated log-loss and ROC-AUC per epoch of training runs (label -> completed
    training log), the weights and their moving average, the selected epoch of each run ringed."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for colour, (label, log) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], runs.items()):
        for kind, style in (("weights", "-"), ("ema", ":")):
            records = [r for r in log["history"] if r["weights"] == kind]
            if not records:
                continue
            epochs = [r["epoch"] for r in records]
            name = f"{label} ({'moving average' if kind == 'ema' else 'weights'})"
            axes[0].plot(epochs, [r["val_calibrated_loss"] for r in records], style, color=colour, label=name, lw=1.2)
            axes[1].plot(epochs, [r["val_roc_auc"] for r in records], style, color=colour, label=name, lw=1.2)
            chosen = [r for r in records if r["epoch"] == log.get("best_epoch") and kind == log["best_weights"]]
            for r in chosen:
                axes[0].scatter([r["epoch"]], [r["val_calibrated_loss"]], s=80, facecolors="none", edgecolors=colour)
                axes[1].scatter([r["epoch"]], [r["val_roc_auc"]], s=80, facecolors="none", edgecolors=colour)
    axes[0].set(xlabel="epoch", ylabel="log-loss after temperature", title="Validation calibrated log-loss (lower is better)",
                ylim=(0.05, 0.45))
    axes[1].set(xlabel="epoch", ylabel="ROC-AUC", title="Validation ROC-AUC", ylim=(0.95, 1.0))
    axes[1].legend(fontsize=7, loc="lower right")  # below 0.98 late in training is empty
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
