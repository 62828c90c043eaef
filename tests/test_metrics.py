import math

import numpy as np

from modeling.training.metrics import binary_metrics, bootstrap_ci, operating_curve, threshold_for_sensitivity


def test_binary_metrics_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.6, 0.3, 0.7, 0.8, 0.4, 0.9, 0.95, 0.55])
    m = binary_metrics(labels, probs, 0.5)
    assert m["confusion_matrix"] == [[3, 1], [1, 5]]
    assert math.isclose(m["accuracy"], 0.8)
    assert math.isclose(m["recall"], 5 / 6) and math.isclose(m["specificity"], 3 / 4)
    assert math.isclose(m["precision"], 5 / 6) and math.isclose(m["f1"], 5 / 6)
    assert math.isclose(m["roc_auc"], 22 / 24)


def test_threshold_for_sensitivity_is_most_specific_reaching_target():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    probs = np.clip(labels * 0.3 + rng.random(400) * 0.7, 0, 1)
    threshold = threshold_for_sensitivity(labels, probs, 0.9)
    assert binary_metrics(labels, probs, threshold)["recall"] >= 0.9
    higher = np.min(probs[probs > threshold])
    assert binary_metrics(labels, probs, higher)["recall"] < 0.9


def test_bootstrap_interval_contains_point_estimate():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(labels * 0.4 + rng.random(300) * 0.6, 0, 1)
    point = binary_metrics(labels, probs, 0.5)
    ci = bootstrap_ci(labels, probs, 0.5, n_boot=300)
    for name, (low, high) in ci.items():
        assert low <= point[name] <= high and high - low < 0.25


def test_operating_curve_endpoints():
    labels = np.array([0, 1, 0, 1])
    curve = operating_curve(labels, np.array([0.2, 0.8, 0.4, 0.6]), points=11)
    assert curve["sensitivity"][0] == 1.0 and curve["specificity"][0] == 0.0
    assert curve["sensitivity"][5] == 1.0 and curve["specificity"][5] == 1.0
