"""From logits to calibrated probabilities: the one place a temperature is applied.

NumPy only, so that the inference path imports no fitting code (scipy.optimize, scikit-learn).
"""
from __future__ import annotations

import numpy as np


def calibrated_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) over the last axis, in float64."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def positive_probs(logits: np.ndarray, temperature: float, positive_index: int) -> np.ndarray:
    return calibrated_probs(logits, temperature)[:, positive_index]


def log_loss(positive: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the positive-class probabilities (`positive`: which images are positive)."""
    positive = np.asarray(positive, dtype=bool)
    return float(-np.mean(np.log(np.where(positive, probs, 1 - probs).clip(1e-12))))
