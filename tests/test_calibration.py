import numpy as np
import pytest

from modeling.runtime.probability import positive_probs
from modeling.training.calibration import (
    THRESHOLD_RULES,
    compare_threshold_rules,
    expected_calibration_error,
    fit_temperature,
    operating_point,
)


def _overconfident(n=4000, true_temperature=2.5, seed=0):
    """Labels drawn from softmax(z); the model reports z * 2.5, i.e. it is overconfident by T = 2.5."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0, 2, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(int)
    logits = np.stack([np.zeros(n), margin * true_temperature], axis=1)
    return logits, labels


def test_temperature_scaling_recovers_the_overconfidence():
    logits, labels = _overconfident()
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)


def test_temperature_scaling_lowers_calibration_error():
    logits, labels = _overconfident()
    before = expected_calibration_error(labels, positive_probs(logits, 1.0, 1))
    after = expected_calibration_error(labels, positive_probs(logits, fit_temperature(logits, labels), 1))
    assert before > 0.05 and after < 0.03 and after < before / 3


def test_ece_is_zero_for_exact_frequencies_and_large_for_wrong_ones():
    labels = np.array([1] * 7 + [0] * 3 + [1] * 2 + [0] * 8)
    probs = np.array([0.7] * 10 + [0.2] * 10)
    assert expected_calibration_error(labels, probs) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(labels, 1 - probs) == pytest.approx(0.5, abs=1e-12)


def test_operating_point_fits_temperature_and_threshold_by_the_chosen_rule():
    logits, labels = _overconfident(n=1000)
    point = operating_point(logits, labels, positive_index=1, rule="sensitivity", target_sensitivity=0.9)
    assert point["sensitivity"] >= 0.9 and point["temperature"] == pytest.approx(2.5, rel=0.15)
    assert point["ece_after"] < point["ece_before"] and point["log_loss_after"] < point["log_loss_before"]
    assert len(point["curve"]["threshold"]) == 101 and set(point["threshold_rules"]) == set(THRESHOLD_RULES)
    assert operating_point(logits, labels, 1, "prior", 0.9)["threshold"] == 0.5
    with pytest.raises(ValueError, match="unknown threshold rule"):
        operating_point(logits, labels, 1, "magic", 0.9)


def test_a_few_mislabelled_images_move_the_sensitivity_rule_not_the_prior_rule():
    """Validation labels come from two graders: a few 'pneumonia' images that look normal drag a
    sensitivity-target threshold down, and bootstrap resampling shows how far it wanders."""
    rng = np.random.default_rng(0)
    positive = np.r_[np.ones(540), np.zeros(200)].astype(int)
    probs = np.r_[rng.beta(8, 1.5, 540), rng.beta(1.5, 8, 200)]
    probs[:30] = rng.uniform(0.01, 0.1, 30)  # 30 'pneumonia' labels on images the model calls clearly normal
    rules = compare_threshold_rules(positive, probs, target_sensitivity=0.95, n_boot=200)
    sensitivity, prior = rules["sensitivity"], rules["prior"]
    assert sensitivity["threshold"] < 0.1  # pulled down among the mislabelled images
    assert prior["bootstrap_std"] == 0 and prior["threshold"] == 0.5
    assert sensitivity["bootstrap_std"] > 0 and sensitivity["specificity"] < prior["specificity"]
    assert all(r["bootstrap_p05"] <= r["threshold"] <= r["bootstrap_p95"] + 1e-9 for r in rules.values())
