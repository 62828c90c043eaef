"""The deep ensemble (`modeling.ensemble`) on real X-rays, and distillation from it through train.py --teachers.

Training runs as real processes; evaluate.py and the shortcut scores run their own main in this process."""
import json

import numpy as np
import pytest
import torch

from modeling.config import ModelConfig
from modeling.ensemble import Ensemble
from modeling.files import ModelLoadError
from modeling.inference import Predictor, runtime_precision
from modeling.model import PneumoniaClassifier
from modeling.preprocessing import load_rgb
from modeling.robustness import PERTURBATIONS

from evaluate import evaluate, parse_args as parse_evaluate_args
from modeling.shortcuts import main as shortcuts_main
from train import load_teacher

from tests.helpers import KERMANY, TINY_TRAIN_ARGS, run_script

IMAGES = [load_rgb(path) for label in ("NORMAL", "PNEUMONIA")
          for path in sorted((KERMANY / "test" / label).iterdir())[:3]]


def _networks(count: int, image_size: int = 64) -> list[PneumoniaClassifier]:
    torch.manual_seed(0)
    return [PneumoniaClassifier(ModelConfig(architecture="test_resnet", image_size=image_size)).eval()
            for _ in range(count)]


def test_the_ensemble_answers_its_networks_mean_probability():
    networks = _networks(3)
    each = np.stack([Predictor(n, device="cpu", precision="float32", views=[]).probabilities(IMAGES) for n in networks])
    ensemble = Predictor(Ensemble(networks), device="cpu", precision="float32", views=[])
    assert np.allclose(ensemble.probabilities(IMAGES), each.mean(0), atol=1e-5)
    assert not np.allclose(each[0], each[1], atol=1e-3)  # the networks differ, so the mean says something


def test_an_ensemble_of_one_network_is_that_network_grad_cam_included():
    network, = _networks(1)
    alone = Predictor(network, device="cpu", precision="float32", views=[])
    ensemble = Predictor(Ensemble([network]), device="cpu", precision="float32", views=[])
    assert np.allclose(ensemble.probabilities(IMAGES), alone.probabilities(IMAGES), atol=1e-6)
    for image in IMAGES[::3]:
        assert alone.grad_cam(image).max() == 1.0
        assert np.allclose(ensemble.grad_cam(image), alone.grad_cam(image), atol=1e-5)


def test_networks_that_read_images_differently_make_no_ensemble():
    with pytest.raises(ModelLoadError, match="image_size"):
        Ensemble(_networks(1) + _networks(1, image_size=96))


@pytest.mark.slow
def test_a_student_distilled_from_an_ensemble_and_the_ensemble_evaluated(tiny_run_dir, small_data, tmp_path):
    split = str(tiny_run_dir / "split.json")
    second = tmp_path / "second"
    run_script("train.py", "--data", str(small_data), "--output-dir", str(second), "--epochs", "1", "--seed", "7",
               "--split-file", split, "--no-finalize", *TINY_TRAIN_ARGS)
    teachers = [str(tiny_run_dir), str(second)]

    student = tmp_path / "student"
    run_script("train.py", "--data", str(small_data), "--output-dir", str(student), "--epochs", "1", "--seed", "3",
               "--split-file", split, "--teachers", *teachers, "--no-finalize", *TINY_TRAIN_ARGS)
    log = json.loads((student / "training_log.json").read_text())
    assert log["args"]["teachers"] == teachers and len(log["history"]) == 1
    # what the card needs of each teacher: its command, seed and hours
    assert [(t["run"], t["seed"]) for t in log["teachers"]] == [(teachers[0], 42), (teachers[1], 7)]
    assert all(t["hours"] > 0 and t["command"].startswith("python train.py") for t in log["teachers"])

    # teachers that saw the student's validation images would leak them into it: another split is refused
    other_split = tmp_path / "other-split.json"
    split_of = json.loads((tiny_run_dir / "split.json").read_text())
    split_of["train"], split_of["validation"] = split_of["train"][2:], split_of["validation"] + split_of["train"][:2]
    other_split.write_text(json.dumps(split_of))
    student_config = PneumoniaClassifier.from_pretrained(student / "trained").config
    with pytest.raises(ModelLoadError, match="another train/validation split than the student"):
        load_teacher(teachers, student_config, other_split, torch.device("cpu"))
    assert load_teacher(teachers, student_config, student / "split.json", torch.device("cpu")).config.image_size == 64

    evaluate(parse_evaluate_args(["--ensemble", *teachers, "--data", str(small_data), "--split", "test",
                                  "--output-dir", str(tmp_path / "eval"), "--bootstrap", "50"]))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["model"] == teachers and metrics["n"] == 24 and metrics["views"] == 1
    assert metrics["threshold"] == 0.5  # the prior rule
    assert metrics["precision_deployed"] == runtime_precision("bfloat16", torch.device("cpu"))  # bf16 where it is fast
    assert metrics["temperature"] > 0 and 0 <= metrics["ece"] <= 1
    # on the validation side the teachers share, with the robustness changes
    evaluate(parse_evaluate_args(["--ensemble", *teachers, "--data", str(small_data), "--split", "validation",
                                  "--output-dir", str(tmp_path / "eval-validation"), "--bootstrap", "20", "--robustness"]))
    metrics = json.loads((tmp_path / "eval-validation" / "metrics.json").read_text())
    assert metrics["split"] == "validation" and metrics["n"] == len(json.loads(open(split).read())["validation"])
    assert set(metrics["robustness"]) == set(PERTURBATIONS)

    shortcuts_main(["--ensemble", *teachers, "--data", str(small_data), "--output-dir", str(tmp_path / "shortcuts")])
    scores = json.loads((tmp_path / "shortcuts" / "shortcuts.json").read_text())
    assert scores["model"] == teachers and scores["precision"] == runtime_precision("bfloat16", torch.device("cpu"))
    assert [member["seed"] for member in scores["training"]] == [42, 7] and 0 <= scores["roc_auc"] <= 1
    assert scores["images"] == len(json.loads((tiny_run_dir / "split.json").read_text())["validation"])
