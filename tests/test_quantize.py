"""int8 inference: calibrated on real images by modeling.training.finalize, saved, reloaded, and close to the float model.
The int8 path is asked for by name (`precision="int8"`): loading would otherwise run float32 on a CPU whose int8
kernels do not reproduce the reference outputs (tests/test_reference.py)."""
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from modeling import ModelLoadError, Predictor, load_rgb
from modeling.runtime import reference as reference_module
from modeling.runtime.config import ConfigError, ModelConfig
from modeling.runtime.inference import fast_bf16
from modeling.runtime.quantize import CALIBRATION_NAME, Int8CalibrationError, Int8Forward
from modeling.training.evaluation import predict_split
from tests.helpers import finalize_cli

pytestmark = pytest.mark.slow  # int8 finalizing and compiling


@pytest.fixture(scope="module")
def int8_model_dir(tiny_model_dir, small_data, tmp_path_factory):
    """The tiny run finalized for int8 without test-time views (one graph per batch size, fewer compiles)."""
    model_dir = tmp_path_factory.mktemp("int8") / "model"
    finalize_cli(str(tiny_model_dir), "--data", str(small_data), "--output-dir",
               str(model_dir), "--precision", "int8", "--tta", "none", "--int8-images", "32")
    return model_dir


def test_int8_model_is_saved_with_its_calibration_and_gives_the_float_answers(int8_model_dir, small_data):
    predictor = Predictor.from_pretrained(int8_model_dir, precision="int8")
    config = predictor.config
    assert config.precision == "int8" and config.quantization["calibration_images"] == 32
    assert (int8_model_dir / CALIBRATION_NAME).is_file() and isinstance(predictor.forward, Int8Forward)

    images = [load_rgb(path) for label in ("PNEUMONIA", "NORMAL")
              for path in sorted((small_data / "test" / label).iterdir())[:3]]
    int8_probs = predictor.probabilities(images)  # one image at a time: one compiled graph
    float_probs = Predictor(predictor.model, precision="float32").probabilities(images)  # same weights, plain float
    assert int8_probs.shape == (6, 2) and np.allclose(int8_probs.sum(1), 1)
    assert np.abs(int8_probs - float_probs).max() < 0.05



def test_compiled_int8_packages_are_kept_and_loaded_by_the_next_predictor(int8_model_dir, small_data, tmp_path):
    """With a package folder, the first predictor compiles each batch size into a package there; another one (as
    in the next process) loads it and answers exactly as the graph compiled in memory does."""
    images = [load_rgb(path) for path in sorted((small_data / "test" / "PNEUMONIA").iterdir())[:3]]
    compiled = Predictor.from_pretrained(int8_model_dir, precision="int8").probabilities(images)
    packages = tmp_path / "int8"
    first = Predictor.from_pretrained(int8_model_dir, int8_package_dir=packages, precision="int8").probabilities(images)
    written = sorted(packages.glob("*.pt2"))
    assert len(written) == 1  # one batch size: one image at a time
    stamp = written[0].stat().st_mtime_ns
    again = Predictor.from_pretrained(int8_model_dir, int8_package_dir=packages, precision="int8").probabilities(images)
    assert sorted(packages.iterdir()) == written and written[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
    np.testing.assert_array_equal(first, compiled)
    np.testing.assert_array_equal(again, compiled)

def test_int8_without_calibration_is_refused():
    config = ModelConfig(architecture="test_resnet").to_dict()
    config["inference"]["precision"] = "int8"
    with pytest.raises(ConfigError, match="int8 calibration"):
        ModelConfig.from_dict(config)


def test_broken_or_mismatched_int8_calibration_is_a_clear_error(int8_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(int8_model_dir, broken)
    (broken / CALIBRATION_NAME).write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="int8 calibration"):
        Predictor.from_pretrained(broken)

    predictor = Predictor.from_pretrained(int8_model_dir, precision="int8")
    calibration = predictor.forward.calibration
    short = Int8Forward(predictor.model, dict(list(calibration.items())[:-2]))  # two observers short
    with pytest.raises(Int8CalibrationError, match="re-run"):
        short(torch.zeros(1, 3, predictor.config.image_size, predictor.config.image_size))


def test_one_process_predicts_a_saved_split_in_every_precision(int8_model_dir, small_data):
    """One process runs fp32, bf16 and int8 side by side: precision belongs to each Predictor, not to the process."""
    predictor = Predictor.from_pretrained(int8_model_dir, precision="int8")
    logits = {}
    for precision in ("float32", "bfloat16", "int8"):
        runner = predictor if precision == "int8" else Predictor(predictor.model, precision=precision)
        _, logits[precision], _ = predict_split(runner, str(small_data), int8_model_dir / "split.json", "validation")
    scale = np.abs(logits["float32"]).max() + 1
    if fast_bf16(predictor.device):  # bf16 really ran (a CPU without bf16 kernels runs fp32 instead)
        assert not np.array_equal(logits["bfloat16"], logits["float32"])
    assert not np.array_equal(logits["int8"], logits["float32"])  # and so did int8
    assert np.abs(logits["bfloat16"] - logits["float32"]).max() < 0.1 * scale
    assert np.abs(logits["int8"] - logits["float32"]).max() < 0.1 * scale
    assert json.loads((int8_model_dir / "config.json").read_text())["inference"]["precision"] == "int8"


def test_an_int8_folder_whose_kernels_disagree_falls_back_to_float32(int8_model_dir, monkeypatch, caplog):
    # tolerances tighter than int8's rounding and looser than float32's differences between CPUs: the real int8
    # kernels then disagree on every CPU, and float32 agrees
    monkeypatch.setattr(reference_module, "TOLERANCE", {"probability": 1e-5, "ood_score": 1e-4, "gate_logit": 1e-4})
    with caplog.at_level(logging.WARNING, logger="modeling.runtime.inference"):
        predictor = Predictor.from_pretrained(int8_model_dir)
    assert predictor.config.precision == "int8" and predictor.precision == "float32"
    assert predictor.reference_check.startswith("int8 disagreed with the reference outputs on this machine")
    [record] = caplog.records
    assert "running float32 instead" in record.getMessage() and str(int8_model_dir) not in record.getMessage()
