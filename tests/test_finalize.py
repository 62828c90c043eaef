"""modeling.training.finalize: a tiny trained run made deployable in fp32, bf16 and int8, then used by evaluate and the
app with identical probabilities; artifacts fitted for other settings are refused with the refit command."""
import csv
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from safetensors import safe_open

import app
from modeling import ModelLoadError, Predictor, load_rgb
from modeling.hub import build_card
from modeling.runtime.files import WEIGHTS_NAME
from modeling.runtime.inference import runtime_precision
from modeling.runtime.ood import OOD_FILE
from modeling.runtime.quantize import CALIBRATION_NAME
from modeling.training.finalize import ood_train_features
from modeling.training.robustness import PERTURBATIONS
from modeling.training.run_log import recipe_of
from scripts.threshold_images import main as threshold_images
from tests.helpers import REPO, evaluate_cli, finalize_cli, free_port

pytestmark = pytest.mark.slow  # every test here trains, finalizes, evaluates or scores in subprocesses

PRECISIONS = ["float32", "bfloat16", "int8"]


def _finalized_with_views(tiny_model_dir, small_data, tmp_path_factory, precision: str):
    """The tiny run finalized by the CLI, with the default test-time views, into a folder of its own."""
    out = tmp_path_factory.mktemp(f"final-{precision}") / "model"
    extra = ["--int8-images", "16"] if precision == "int8" else []
    finalize_cli(tiny_model_dir, "--data", small_data, "--output-dir", out, "--precision", precision, "--tta", "default",
                 *extra)
    return out


@pytest.fixture(scope="module")
def float32_views_folder(tiny_model_dir, small_data, tmp_path_factory):
    return _finalized_with_views(tiny_model_dir, small_data, tmp_path_factory, "float32")


@pytest.fixture(scope="module", params=PRECISIONS)
def finalized(request, tiny_model_dir, small_data, tmp_path_factory):
    if request.param == "float32":
        return "float32", request.getfixturevalue("float32_views_folder")
    return request.param, _finalized_with_views(tiny_model_dir, small_data, tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def float32_folder(tiny_model_dir, small_data, tmp_path_factory):
    """The tiny run finalized in float32, for what does not depend on the precision."""
    out = tmp_path_factory.mktemp("final-float32-alone") / "model"
    finalize_cli(tiny_model_dir, "--data", small_data, "--output-dir", out, "--precision", "float32", "--tta", "none")
    return out


def test_finalize_fits_every_artifact_for_the_deployed_settings(finalized):
    precision, folder = finalized
    config = json.loads((folder / "config.json").read_text())["inference"]
    assert config["precision"] == precision and len(config["tta_views"]) == 3
    records = [config["validation"]["fitted_for"], config["ood"]["fitted_for"]]
    files = [OOD_FILE] + ([CALIBRATION_NAME] if precision == "int8" else [])
    if precision == "int8":
        records.append(config["quantization"]["fitted_for"])
    for name in files:
        with safe_open(str(folder / name), "pt") as f:
            records.append(json.loads(f.metadata()["fitted_for"]))
            assert "threshold" not in f.keys()  # scalars live in config.json only
    assert all(record == records[0] for record in records)
    assert records[0]["precision"] == precision and len(records[0]["views"]) == 3
    assert (folder / CALIBRATION_NAME).exists() == (precision == "int8")
    assert "threshold" not in json.loads((folder / "training_log.json").read_text())


def test_auto_views_deploy_the_candidate_with_the_lower_calibrated_loss_as_is_and_changed(
        tiny_model_dir, small_data, tmp_path, capsys, float32_views_folder, float32_folder):
    out = tmp_path / "model"
    finalize_cli(str(tiny_model_dir), "--data", str(small_data), "--output-dir",
                        str(out), "--precision", "float32", "--tta", "auto")
    validation = json.loads((out / "config.json").read_text())["inference"]["validation"]
    choice = validation["views_choice"]
    scores = choice["calibrated_log_loss"]
    assert set(scores) == {"default", "none"} and choice["chosen"] == min(scores, key=scores.get)
    for name, per_change in choice["per_change"].items():  # the images as they are and each robustness change
        assert list(per_change) == ["as is", *PERTURBATIONS] and scores[name] == pytest.approx(np.mean(list(per_change.values())))
    predictor = Predictor.from_pretrained(out)  # loads: every artifact was fitted for the chosen views
    assert len(predictor.config.tta_views) == (3 if choice["chosen"] == "default" else 0)
    assert validation["fitted_for"]["views"] == predictor.config.tta_views
    assert f"-> {choice['chosen']}" in capsys.readouterr().out
    # the card states the principles the views and the weights were chosen by
    evaluate_cli("--model", out, "--data", small_data, "--split", "test", "--output-dir", out / "eval", "--bootstrap", "20")
    card = " ".join(str(build_card(out, "someone/tiny-test", REPO / "model_card.md")).split())
    assert "The views follow a stated principle" in card and f": {choice['chosen']})." in card
    assert "the run's final ones (epoch 2, the moving average of the weights), by principle" in card
    # each candidate's score is what it deploys with: the folders finalized with "--tta default" and "--tta none"
    for name, fixed in (("default", float32_views_folder), ("none", float32_folder)):
        deployed = json.loads((fixed / "config.json").read_text())["inference"]["validation"]
        assert deployed["log_loss_after"] == pytest.approx(choice["per_change"][name]["as is"], abs=1e-6)


def test_evaluate_predictor_and_app_give_identical_probabilities(finalized, small_data, tmp_path):
    precision, folder = finalized
    out = tmp_path / "eval"
    evaluate_cli("--model", folder, "--data", small_data, "--output-dir", out, "--bootstrap", "20")
    with open(out / "predictions.csv") as f:
        evaluated = {row["image"]: float(row["prob_pneumonia"]) for row in csv.DictReader(f)}
    paths = [sorted((small_data / "test" / label).iterdir())[0] for label in ("NORMAL", "PNEUMONIA")]
    predictor = Predictor.from_pretrained(folder)
    expected = runtime_precision(precision, predictor.device)
    # the deployed path, unless this CPU's kernels do not reproduce the network (int8 on an AVX2-only CPU)
    assert predictor.precision == expected or predictor.reference_check.startswith(f"{expected} disagreed")
    assert predictor.device.type == "cpu"
    mine = predictor.probabilities([load_rgb(path) for path in paths], batch_size=1)[:, 1]
    demo = app.build_demo(predictor)
    port = free_port()
    app.serve(demo, "127.0.0.1", port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        served = [next(c["confidence"] for c in client.predict(handle_file(str(path)), heatmap=False,
                                                               api_name="/predict")[0]["confidences"]
                       if c["label"] == "PNEUMONIA") for path in paths]
    finally:
        app.stop(demo)
    # evaluate batches images; int8 and bf16 kernels round a little differently per batch size
    tolerance = 1e-5 if precision == "float32" else 2e-2
    for path, p_mine, p_served in zip(paths, mine, served):
        assert p_served == pytest.approx(p_mine, abs=1e-6)  # the app is the Predictor
        assert evaluated[path.name] == pytest.approx(p_mine, abs=tolerance)


def test_evaluate_on_validation_reproduces_what_finalize_fitted(finalized, small_data, tmp_path):
    """`evaluate.py --split validation` reads the validation side of the folder's split.json: the same images, and at
    the stored threshold the same sensitivity and specificity that finalize recorded."""
    precision, folder = finalized
    if Predictor.from_pretrained(folder).precision != runtime_precision(precision, torch.device("cpu")):
        pytest.skip(f"this CPU's {precision} kernels do not reproduce the network, so what finalize fitted on them "
                    "is not what runs here")
    out = tmp_path / "validation"
    printed = evaluate_cli("--model", folder, "--data", small_data, "--split", "validation", "--output-dir", out,
                           "--bootstrap", "20")
    assert "validation X-rays flagged" in printed and "test X-rays" not in printed
    with open(out / "predictions.csv") as f:
        names = [row["image"] for row in csv.DictReader(f)]
    assert sorted(names) == sorted(json.loads((folder / "split.json").read_text())["validation"])
    metrics = json.loads((out / "metrics.json").read_text())
    fitted = json.loads((folder / "config.json").read_text())["inference"]["validation"]
    assert metrics["n"] == fitted["n"] and metrics["split"] == "validation"
    assert metrics["recall"] == pytest.approx(fitted["sensitivity"], abs=1e-9)
    assert metrics["specificity"] == pytest.approx(fitted["specificity"], abs=1e-9)


def test_evaluate_on_validation_without_a_split_file_is_one_sentence(float32_folder, small_data, tmp_path):
    folder = float32_folder
    copied = tmp_path / "no-split"
    shutil.copytree(folder, copied)
    (copied / "split.json").unlink()
    with pytest.raises(SystemExit) as refusal:  # sys.exit with one sentence: no traceback
        evaluate_cli("--model", copied, "--data", small_data, "--split", "validation", "--output-dir", tmp_path / "out")
    assert refusal.value.code == (f"The model {copied} has no split.json, so its validation images are unknown; "
                                  "pass another --split.")


def test_threshold_figure_shows_the_validation_images_that_decide_the_rules(float32_folder, small_data, tmp_path):
    folder = float32_folder
    picture = tmp_path / "thresholds.png"
    threshold_images([str(folder), "--data", str(small_data), "--per-row", "3", "--output", str(picture)])
    listing = json.loads(picture.with_suffix(".json").read_text())
    split = json.loads((folder / "split.json").read_text())
    labels = {name: label for label in ("NORMAL", "PNEUMONIA") for name in
              (path.name for path in (small_data / "train" / label).iterdir())}
    shown_pneumonia = [entry["file"] for entry in listing["pneumonia_most_normal"]]
    shown_normal = [entry["file"] for entry in listing["normal_most_pneumonia"]]
    assert len(shown_pneumonia) == len(shown_normal) == 3
    assert set(shown_pneumonia + shown_normal) <= set(split["validation"])
    assert {labels[name] for name in shown_pneumonia} == {"PNEUMONIA"} and {labels[n] for n in shown_normal} == {"NORMAL"}
    ordered = [entry["p"] for entry in listing["pneumonia_most_normal"]]
    assert ordered == sorted(ordered)  # most normal first
    assert set(listing["threshold_rules"]) == {"sensitivity", "youden", "prior"}
    assert picture.stat().st_size > 10_000


def _copy(folder, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    return target


def test_artifacts_fitted_for_other_settings_are_refused_with_the_refit_command(tiny_model_dir, small_data, tmp_path):
    folder = tmp_path / "fp32"
    finalize_cli(str(tiny_model_dir), "--data", str(small_data), "--output-dir", str(folder),
               "--precision", "float32", "--tta", "none")
    Predictor.from_pretrained(folder)  # as finalized: fine

    switched = _copy(folder, tmp_path, "switched")  # precision changed by hand, nothing refitted
    config = json.loads((switched / "config.json").read_text())
    config["inference"]["precision"] = "bfloat16"
    (switched / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"fitted for float32 .* deploys bfloat16.*python -m scripts\.finalize"):
        Predictor.from_pretrained(switched)

    other = tmp_path / "views"  # a detector fitted with other views, copied in with its config entry
    finalize_cli(str(tiny_model_dir), "--data", str(small_data), "--output-dir", str(other),
               "--precision", "float32", "--tta", "default")
    swapped = _copy(folder, tmp_path, "swapped")
    shutil.copy(other / OOD_FILE, swapped / OOD_FILE)
    with pytest.raises(ModelLoadError, match="out-of-distribution detector was fitted for float32 with 4 view"):
        Predictor.from_pretrained(swapped)

    retrained = _copy(folder, tmp_path, "retrained")  # new weights under old artifacts
    weights = (retrained / WEIGHTS_NAME).read_bytes()
    (retrained / WEIGHTS_NAME).write_bytes(weights[:-4] + bytes(4))
    with pytest.raises(ModelLoadError, match="weights_sha256 differ"):
        Predictor.from_pretrained(retrained)


def test_bf16_weights_halve_the_file_and_keep_the_answers(tiny_model_dir, small_data, tmp_path):
    folders = {}
    for dtype in ("float32", "bfloat16"):
        folders[dtype] = tmp_path / dtype
        finalize_cli(str(tiny_model_dir), "--data", str(small_data), "--output-dir",
                   str(folders[dtype]), "--precision", "float32", "--tta", "none", "--weights-dtype", dtype)
    sizes = {dtype: (folder / WEIGHTS_NAME).stat().st_size for dtype, folder in folders.items()}
    assert sizes["bfloat16"] < 0.55 * sizes["float32"]
    images = [load_rgb(path) for path in sorted((small_data / "test" / "PNEUMONIA").iterdir())[:4]]
    probs = {dtype: Predictor.from_pretrained(folder).probabilities(images) for dtype, folder in folders.items()}
    assert np.abs(probs["bfloat16"] - probs["float32"]).max() < 0.02


def test_ood_features_of_augmented_training_xrays_follow_the_as_is_ones(tiny_model_dir, small_data):
    """--ood-gate augmented: every training X-ray as is (the features the app computes), then once augmented."""
    predictor = Predictor.from_pretrained(tiny_model_dir)
    split_file = tiny_model_dir / "split.json"
    recipe = recipe_of(tiny_model_dir)  # the run's own
    direct = ood_train_features(predictor, str(small_data), split_file, augmented=False, recipe=recipe)
    assert len(direct) == len(json.loads(split_file.read_text())["train"])
    as_is, augmented = np.split(ood_train_features(predictor, str(small_data), split_file, augmented=True,
                                                   recipe=recipe), 2)
    np.testing.assert_allclose(as_is, direct, rtol=1e-4, atol=1e-4)
    assert np.abs(augmented - as_is).mean() > 0.01


@pytest.mark.slow
def test_finalize_killed_at_any_moment_leaves_the_previous_folder_or_none(tiny_run_dir, small_data, tmp_path):
    """SIGKILL while the new folder is being written, at each of its stages: the destination is the previous complete
    folder (or, once the renames begin, none, then the new complete one), and the half-made folder never loads."""
    out = tmp_path / "deployed"
    command = ["-m", "scripts.finalize", str(tiny_run_dir), "--data", str(small_data),
               "--output-dir", str(out), "--precision", "float32", "--tta", "none"]
    finalize_cli(*command[2:])  # in this process; the killed ones below are real processes
    previous = {path.name: path.read_bytes() for path in out.iterdir()}
    complete = set(previous)
    for files_written in (0, 3, 4, 5):  # empty; the run's files copied; + the weights; + the detector
        # each stage until a kill lands while the new folder is partial: the writer may outrun the watcher once
        for _attempt in range(10):
            for stray in tmp_path.glob(".deployed.*"):  # what an earlier kill left: not this attempt's folder
                shutil.rmtree(stray)
            process = subprocess.Popen([sys.executable, *command], cwd=REPO, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            partial = None
            while process.poll() is None:
                partial = next(tmp_path.glob(".deployed.*.partial"), None)
                if partial is not None and len([p for p in partial.iterdir()
                                                if not p.name.endswith(".tmp")]) >= files_written:
                    break
                time.sleep(0.005)
            process.kill()
            process.wait()
            landed = partial is not None and partial.exists()
            if landed:
                assert not (partial / "config.json").exists()  # written last: a half-made folder is no model folder
                with pytest.raises(ModelLoadError):
                    Predictor.from_pretrained(partial)
            assert out.is_dir()  # a kill before the renames leaves the previous folder in place
            assert {path.name for path in out.iterdir()} == complete
            Predictor.from_pretrained(out)
            if landed:
                break
        else:
            pytest.fail(f"no kill landed while {files_written} files were written, in 10 tries")
    finalize_cli(*command[2:])  # the next writer clears what the killed ones left
    assert sorted(path.name for path in tmp_path.iterdir()) == ["deployed"]
    Predictor.from_pretrained(out)
