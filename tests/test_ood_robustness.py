import json

import numpy as np
import pytest
from PIL import Image

from modeling import Predictor
from modeling.gate_training.non_xray import assemble
from modeling.runtime.ood import (
    IN_DISTRIBUTION,
    NOT_AN_XRAY,
    UNLIKE_TRAINING,
    StagedDetector,
    fit_detector,
    ood_verdicts,
)
from modeling.training.robustness import PERTURBATIONS
from scripts.ood_development import main as ood_development
from tests.helpers import REPO, evaluate_cli, finalize_cli, free_port, printed_by


def test_feature_density_scores_far_points_higher():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(8, 32))
    train = rng.normal(size=(500, 8)) @ basis + 0.01 * rng.normal(size=(500, 32))
    validation = rng.normal(size=(200, 8)) @ basis + 0.01 * rng.normal(size=(200, 32))
    density, threshold = fit_detector(train, validation, quantile=0.99, components=8)
    assert np.mean(density.score(validation) > threshold) <= 0.02
    off_subspace = validation + 0.5 * rng.normal(size=validation.shape)  # leaves the training subspace
    far_along = validation * 6  # stays in it, but much further out
    assert (density.score(off_subspace) > threshold).mean() > 0.95
    assert (density.score(far_along) > threshold).mean() > 0.95


def test_an_outlier_at_one_stage_is_caught_even_if_the_others_look_normal():
    rng = np.random.default_rng(3)
    train, validation = rng.normal(size=(400, 6 + 10)), rng.normal(size=(200, 6 + 10))
    detector, threshold = fit_detector(train, validation, quantile=0.99, components=4, sizes=[6, 10])
    assert np.mean(detector.score(validation) > threshold) <= 0.02
    odd_first_stage = validation.copy()
    odd_first_stage[:, :6] *= 8  # only the first stage's features are unusual
    assert (detector.score(odd_first_stage) > threshold).mean() > 0.95
    assert (detector.stage_scores(odd_first_stage)[:, 0] > detector.stage_scores(odd_first_stage)[:, 1]).all()


def test_detector_round_trips_through_safetensors(tmp_path):
    rng = np.random.default_rng(1)
    detector, _ = fit_detector(rng.normal(size=(50, 9)), rng.normal(size=(30, 9)), 0.95, components=3, sizes=[4, 5])
    detector.save(tmp_path / "ood.safetensors", {"fitted_for": "{}"})
    loaded, metadata = StagedDetector.load(tmp_path / "ood.safetensors")
    probe = rng.normal(size=(5, 9))
    np.testing.assert_allclose(loaded.score(probe), detector.score(probe), rtol=1e-4)
    assert loaded.sizes == [4, 5] and metadata["fitted_for"] == "{}"


def test_verdicts_tell_unlike_training_xrays_from_non_xrays():
    settings = {"threshold": 1.0, "not_xray_threshold": 3.0, "not_xray_stages": [0, 1]}
    scores = np.array([[0.5, 0.9, 0.8],    # close at every stage
                       [0.9, 1.5, 4.0],    # X-ray-like texture, unusual content: another population's X-ray
                       [5.0, 2.0, 9.0]])   # unusual texture as well: not an X-ray
    assert list(ood_verdicts(scores, settings)) == [IN_DISTRIBUTION, UNLIKE_TRAINING, NOT_AN_XRAY]


def test_non_xray_set_has_over_100_described_images(tmp_path):
    paths = assemble(tmp_path / "non-xray")
    assert len(paths) >= 100 and len({p.name for p in paths}) == len(paths)
    assert {p.stem.split("-")[0] for p in paths} == {"skimage", "matplotlib", "sklearn", "generated"}


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_robustness_changes_are_mild_and_keep_rgb(name):
    image = Image.open(REPO / "examples" / "normal-IM-0001-0001.jpeg").convert("RGB")
    changed = PERTURBATIONS[name](image)
    assert changed.mode == "RGB" and changed.size[0] >= 100
    a = np.asarray(image.resize((64, 64)), dtype=float)
    b = np.asarray(changed.resize((64, 64)), dtype=float)
    assert 0 < np.abs(a - b).mean() < 60  # changed, but still the same picture


@pytest.mark.slow
def test_finalized_detector_travels_with_the_model_and_evaluate_reports_it(tiny_model_dir, small_data, tmp_path):
    predictor = Predictor.from_pretrained(tiny_model_dir)
    assert predictor.ood is not None and predictor.config.ood["file"] == "ood.safetensors"
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(noise_dir / f"{i}.png")
    out = tmp_path / "eval"
    printed = evaluate_cli("--model", tiny_model_dir, "--data", small_data, "--output-dir", out, "--bootstrap", "20",
                           "--ood-images", noise_dir, "--robustness")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ood"]["test_xrays"] == 24 and metrics["ood"]["non_xray"][0]["images"] == 3
    assert sum(metrics["ood"]["non_xray"][0]["verdicts"].values()) == 3
    assert set(metrics["robustness"]) == set(PERTURBATIONS)
    assert "test X-rays flagged" in printed and "| letterbox 4:3 |" in printed


def test_demo_says_not_an_xray_for_noise(tiny_model_dir, tmp_path):
    from gradio_client import Client, handle_file

    import app
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(noise)
    predictor = Predictor.from_pretrained(tiny_model_dir)
    assert predictor.analyse([Image.open(noise)]).verdicts[0] == NOT_AN_XRAY
    demo = app.build_demo(predictor)
    port = free_port()
    app.serve(demo, "127.0.0.1", port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for heatmap in (True, False):
            label, decision, shown = client.predict(handle_file(str(noise)), heatmap=heatmap, api_name="/predict")
            assert decision.startswith("### This does not look like a chest X-ray") and not label.get("confidences")
            assert shown is None
        broken = tmp_path / "broken.jpeg"
        broken.write_bytes(b"nope")
        table, _ = client.predict([handle_file(str(p)) for p in (broken, noise)], api_name="/predict_batch")
        assert [row[1] for row in table["data"]] == ["noise.png", "broken.jpeg"]  # flagged first, unreadable last
        assert table["data"][0][3].startswith("does not look like a chest X-ray") and table["data"][0][2] is None
    finally:
        app.stop(demo)


@pytest.mark.slow
def test_ood_development_set_shares_no_image_with_the_evaluation_set(tiny_model_dir, small_data, tmp_path):
    from modeling.gate_training.non_xray import _package_images, development_photos

    def thumb(image):
        return np.asarray(image.convert("L").resize((16, 16)), dtype=float)

    evaluation = [thumb(image) for image in _package_images().values()]
    development = {name: thumb(image) for name, image in development_photos().items() if "-crop" not in name}
    assert len(development) >= 5
    for name, image in development.items():
        assert min(np.abs(image - other).mean() for other in evaluation) > 10, name

    augmented = tmp_path / "augmented"
    finalize_cli(str(tiny_model_dir), "--data", str(small_data), "--output-dir",
               str(augmented), "--precision", "float32", "--ood-gate", "augmented")
    picture = tmp_path / "dev.png"
    printed = printed_by(ood_development, ["--model", f"as is={tiny_model_dir}", "--model", f"augmented={augmented}",
                                           "--data", small_data, "--output", picture])
    assert printed.strip().endswith(f"wrote {picture} and dev.json")
    report = json.loads(picture.with_suffix(".json").read_text())
    assert report["images"]["photos, greyscale"] == report["images"]["photos, colour"] == 5 * len(development)
    as_is, augmented = report["models"]["as is"], report["models"]["augmented"]
    assert as_is["in_use"] == "mid-level stages" and as_is["fitted_on"].endswith("as they are")
    assert augmented["in_use"] == "mid-level stages + thumbnail" and "augmentation" in augmented["fitted_on"]
    for model in (as_is, augmented):
        for rates in model["not_a_chest_xray_rate"].values():
            for group, curve in rates.items():
                assert all(0 <= r <= 1 for r in curve) and curve == sorted(curve, reverse=True), group
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
