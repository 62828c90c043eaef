"""int8 inference: calibrated on real images by the CLI, saved, reloaded, and close to the float model."""
import shutil

import numpy as np
import pytest
import torch

from modeling import ModelLoadError, PneumoniaClassifier, load_rgb
from modeling.config import ConfigError, ModelConfig
from modeling.inference import Predictor
from modeling.quantize import CALIBRATION_NAME, Int8CalibrationError

from conftest import run_script


@pytest.fixture(scope="module")
def int8_model_dir(tiny_model_dir, small_data, tmp_path_factory):
    """The tiny model, calibrated for int8 and switched to it by the two CLIs, as the README says."""
    model_dir = tmp_path_factory.mktemp("int8") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    run_script("-m", "modeling.quantize", str(model_dir), "--data", str(small_data), "--images", "32",
               "--batch-size", "8")
    run_script("-m", "modeling.calibration", str(model_dir), "--data", str(small_data), "--precision", "int8")
    return model_dir


def test_int8_model_is_saved_with_its_calibration_and_gives_the_float_answers(int8_model_dir, small_data):
    model = PneumoniaClassifier.from_pretrained(int8_model_dir)
    assert model.config.precision == "int8" and model.config.quantization["calibration_images"] == 32
    assert (int8_model_dir / CALIBRATION_NAME).is_file() and model.int8_calibration

    images = [load_rgb(path) for label in ("PNEUMONIA", "NORMAL")
              for path in sorted((small_data / "test" / label).iterdir())[:3]]
    int8_probs = Predictor(model).probabilities(images)  # one image at a time: one compiled graph
    model.config.precision = "float32"  # the same weights, views and temperature in plain float
    float_probs = Predictor(model).probabilities(images)
    assert int8_probs.shape == (6, 2) and np.allclose(int8_probs.sum(1), 1)
    assert np.abs(int8_probs - float_probs).max() < 0.05


def test_int8_runs_inside_a_bf16_autocast_and_saves_its_calibration_again(int8_model_dir, tmp_path):
    model = PneumoniaClassifier.from_pretrained(int8_model_dir)
    pixels = torch.randn(2, 3, model.config.image_size, model.config.image_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # how evaluate.py and Predictor call it
        logits, features = model.inference_forward()(pixels)
    assert logits.dtype == torch.float32 and logits.shape == (2, 2) and len(features) == 2
    model.save_model_files(tmp_path / "copy")
    copy = PneumoniaClassifier.from_pretrained(tmp_path / "copy")
    assert copy.config.precision == "int8"
    saved = copy.int8_calibration
    assert saved.keys() == model.int8_calibration.keys()
    assert all(torch.equal(saved[name], tensor) for name, tensor in model.int8_calibration.items())


def test_int8_without_calibration_is_refused():
    config = ModelConfig(architecture="test_resnet").to_dict()
    config["inference"]["precision"] = "int8"
    with pytest.raises(ConfigError, match="modeling.quantize"):
        ModelConfig.from_dict(config)


def test_broken_or_mismatched_int8_calibration_is_a_clear_error(int8_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(int8_model_dir, broken)
    (broken / CALIBRATION_NAME).write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="int8 calibration"):
        PneumoniaClassifier.from_pretrained(broken)

    model = PneumoniaClassifier.from_pretrained(int8_model_dir)
    model.int8_calibration = dict(list(model.int8_calibration.items())[:-2])  # two observers short
    with pytest.raises(Int8CalibrationError, match="re-run"):
        model.inference_forward()(torch.zeros(1, 3, model.config.image_size, model.config.image_size))


def test_one_process_predicts_a_saved_split_in_every_precision(int8_model_dir, small_data):
    """accelerate fixes mixed precision once per process; config.json's precision must still be honoured."""
    from modeling.inference import predict_saved_split

    model = PneumoniaClassifier.from_pretrained(int8_model_dir)
    logits = {}
    for precision in ("float32", "bfloat16", "int8"):
        model.config.precision = precision
        _, logits[precision], _ = predict_saved_split(model, str(small_data), int8_model_dir / "split.json",
                                                      "validation")
    scale = np.abs(logits["float32"]).max() + 1
    assert not np.array_equal(logits["bfloat16"], logits["float32"])  # bf16 really ran
    assert not np.array_equal(logits["int8"], logits["bfloat16"])  # and so did int8
    assert np.abs(logits["bfloat16"] - logits["float32"]).max() < 0.1 * scale
    assert np.abs(logits["int8"] - logits["float32"]).max() < 0.1 * scale
