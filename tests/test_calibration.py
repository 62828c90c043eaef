import numpy as np
import pytest

from modeling.calibration import expected_calibration_error, fit_temperature, positive_probs, set_operating_point
from modeling.config import ModelConfig


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


def test_set_operating_point_fills_the_config():
    logits, labels = _overconfident(n=1000)
    config = ModelConfig(architecture="test_resnet")
    at = set_operating_point(config, logits, labels, target_sensitivity=0.9, best_epoch=3)
    assert at["recall"] >= 0.9 and config.temperature == pytest.approx(2.5, rel=0.15)
    assert config.validation["best_epoch"] == 3 and config.validation["ece_after"] < config.validation["ece_before"]
    assert len(config.validation["curve"]["threshold"]) == 101
    ModelConfig.from_dict(config.to_dict())  # still a valid config


def test_calibration_cli_stores_test_time_views_and_precision_and_inference_uses_them(tiny_model_dir, small_data,
                                                                                     tmp_path):
    import shutil

    import torch

    from modeling import PneumoniaClassifier, load_rgb, normalize
    from modeling.geometry import view_matrix, warp
    from modeling.views import DEFAULT_TTA_VIEWS
    from modeling.inference import Predictor
    from modeling.preprocessing import resize_transform

    from conftest import run_script

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    run_script("-m", "modeling.calibration", str(model_dir), "--data", str(small_data), "--tta", "default",
               "--precision", "bfloat16")
    model = PneumoniaClassifier.from_pretrained(model_dir)
    assert model.config.tta_views == DEFAULT_TTA_VIEWS and model.config.precision == "bfloat16"
    image = load_rgb(next((small_data / "test" / "PNEUMONIA").iterdir()))
    probs = Predictor(model).probabilities([image])[0]
    pixels = resize_transform(model.config)(image).unsqueeze(0)
    views = [view_matrix()] + [view_matrix(v["zoom"], v["degrees"]) for v in DEFAULT_TTA_VIEWS]
    with torch.no_grad(), model.autocast():
        logits = torch.stack([model(normalize(warp(pixels.float() / 255, m.expand(1, 2, 3)), model.config)).float()
                              for m in views]).mean(0)
    expected = torch.softmax(logits / model.config.temperature, dim=-1)[0].numpy()
    np.testing.assert_allclose(probs, expected, atol=2e-2)  # bf16: batched and one-by-one runs round differently
    assert abs(probs[0] + probs[1] - 1) < 1e-5
