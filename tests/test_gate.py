"""The chest X-ray gate: kept apart from the evaluation set, loaded strictly, and deciding "not a chest X-ray" alone."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from modeling import ModelLoadError, Predictor
from modeling.gate_training.negatives import fingerprint, near_duplicates
from modeling.gate_training.non_xray import assemble, development_photos
from modeling.runtime.artifacts import split_fingerprint_of
from modeling.runtime.files import CONFIG_NAME
from modeling.runtime.gate import GATE_FILE, GATE_REPORT_FILE, GATE_SOURCES_FILE, XrayGate
from modeling.runtime.ood import NOT_AN_XRAY, UNLIKE_TRAINING
from modeling.training.finalize import add_xray_gate
from tests.helpers import KERMANY, REPO, free_port

BUNDLE = REPO / "weights" / "pneumonia-resnet50"


def gate_folder(tmp_path, split_file, threshold: float, name: str = "gate"):
    """What modeling.gate_training.train writes, with an untrained gate (its threshold is what a test needs)."""
    folder = tmp_path / name
    folder.mkdir()
    XrayGate().save(folder / GATE_FILE, {"split_sha256": split_fingerprint_of(split_file)})
    (folder / GATE_SOURCES_FILE).write_text("[]")
    (folder / GATE_REPORT_FILE).write_text(json.dumps({
        "threshold": threshold, "threshold_rule": "set by the test", "architecture": "resnet10t", "input_size": 112,
        "command": "python -m scripts.train_xray_gate (test)"}))
    return folder


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    return target


def test_the_shipped_gate_learnt_nothing_of_the_evaluation_or_development_sets(tmp_path):
    sources = json.loads((BUNDLE / GATE_SOURCES_FILE).read_text())
    assert len(sources) > 2000 and len({s["source"] for s in sources}) >= 10
    evaluation = [fingerprint(Image.open(path)) for path in assemble(tmp_path / "non-xray")]
    development = [fingerprint(image) for image in development_photos().values()]
    assert len(evaluation) > 100 and len(development) > 20
    assert near_duplicates(sources, evaluation) == []
    assert near_duplicates(sources, development) == []
    # every source is a Debian package's file or generated here, never a file of a Python package's samples
    packaged = [s for s in sources if not s["source"].startswith("generated")]
    assert all(s["name"].startswith("/usr/share/") and "site-packages" not in s["name"] for s in packaged)
    assert all(s["name"].startswith(s["source"].split()[1]) for s in sources if s["source"].startswith("generated"))


def test_fingerprints_catch_an_evaluation_image_resized_and_recompressed(tmp_path):
    evaluation = [fingerprint(Image.open(path)) for path in assemble(tmp_path / "non-xray")]
    photo = Image.open(sorted((tmp_path / "non-xray").glob("skimage-astronaut.png"))[0])
    copy = photo.resize((333, 290)).convert("L").convert("RGB")
    other = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert near_duplicates([fingerprint(other), fingerprint(copy)], evaluation) == [1]


def test_with_a_gate_only_the_gate_says_not_a_chest_xray(model_copy, tmp_path):
    image = Image.open(sorted((KERMANY / "test" / "NORMAL").iterdir())[0])
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    without = list(Predictor.from_pretrained(model_copy).analyse([noise, image]).verdicts)
    assert without[0] == NOT_AN_XRAY  # the tiny detector's "not a chest X-ray"
    before = {p.name: p.read_bytes() for p in model_copy.iterdir() if p.is_file() and p.name != CONFIG_NAME}

    add_xray_gate(model_copy, gate_folder(tmp_path, model_copy / "split.json", threshold=-1e9), log=lambda _: None)
    after = {p.name: p.read_bytes() for p in model_copy.iterdir() if p.is_file() and p.name != CONFIG_NAME}
    assert {name: after[name] for name in before} == before  # nothing else rewritten
    assert set(after) - set(before) == {GATE_FILE, GATE_SOURCES_FILE, GATE_REPORT_FILE}
    predictor = Predictor.from_pretrained(model_copy)
    assert predictor.config.xray_gate["threshold"] == -1e9
    # a gate that lets everything through: the detector's "not a chest X-ray" becomes "unlike the training X-rays"
    assert list(predictor.analyse([noise, image]).verdicts) == [UNLIKE_TRAINING if v == NOT_AN_XRAY else v for v in without]

    add_xray_gate(model_copy, gate_folder(tmp_path, model_copy / "split.json", threshold=1e9, name="strict"),
                  log=lambda _: None)
    predictor = Predictor.from_pretrained(model_copy)
    analysis = predictor.analyse([noise, image])
    assert list(analysis.verdicts) == [NOT_AN_XRAY, NOT_AN_XRAY]
    logits, features = predictor.logits_and_features(predictor.tensor(image))
    detector_features, gate_logit = predictor.split_features(features)
    assert detector_features.shape[1] == sum(predictor.ood.sizes)
    assert gate_logit[0] == pytest.approx(float(predictor.xray_gate_logits(predictor.tensor(image))[0]))


def test_a_gate_fitted_for_another_model_is_refused(model_copy, tmp_path):
    other_split = tmp_path / "other-split.json"
    split = json.loads((model_copy / "split.json").read_text())
    other_split.write_text(json.dumps({**split, "validation": split["validation"][1:]}))
    config_before = (model_copy / CONFIG_NAME).read_bytes()
    with pytest.raises(ModelLoadError, match="fitted for another model's training split"):
        add_xray_gate(model_copy, gate_folder(tmp_path, other_split, threshold=0.0), log=lambda _: None)
    assert (model_copy / CONFIG_NAME).read_bytes() == config_before and not (model_copy / GATE_FILE).exists()

    add_xray_gate(model_copy, gate_folder(tmp_path, model_copy / "split.json", threshold=0.0, name="own"),
                  log=lambda _: None)
    Predictor.from_pretrained(model_copy)
    foreign = gate_folder(tmp_path, other_split, threshold=0.0, name="foreign")
    swapped = tmp_path / "swapped"  # another model's gate file, its hash written into config.json by hand
    shutil.copytree(model_copy, swapped)
    shutil.copy(foreign / GATE_FILE, swapped / GATE_FILE)
    config = json.loads((swapped / CONFIG_NAME).read_text())
    with pytest.raises(ModelLoadError, match="not the file whose threshold config.json holds"):
        Predictor.from_pretrained(swapped)
    from modeling.runtime.files import file_sha256
    config["inference"]["xray_gate"]["sha256"] = file_sha256(swapped / GATE_FILE)
    (swapped / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="fitted for another model's training split"):
        Predictor.from_pretrained(swapped)
    (swapped / GATE_FILE).write_bytes(b"not safetensors")
    config["inference"]["xray_gate"]["sha256"] = file_sha256(swapped / GATE_FILE)
    (swapped / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ModelLoadError):
        Predictor.from_pretrained(swapped)
    (swapped / GATE_FILE).unlink()
    with pytest.raises(ModelLoadError, match="lacks its chest X-ray gate"):
        Predictor.from_pretrained(swapped)


def document() -> Image.Image:
    """A typed letter: what a user uploads by mistake from the same folder as the X-ray."""
    page = Image.new("RGB", (850, 1100), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=22)
    draw.text((80, 80), "Radiology Department - Appointment letter", fill="black", font=ImageFont.load_default(size=30))
    for i, line in enumerate(["Dear parent,", "", "Your child's chest radiograph is booked for Monday at 9:30.",
                              "Please bring the referral form and arrive fifteen minutes early.",
                              "Children may eat and drink as usual before the examination.", "",
                              "Kind regards,", "The imaging team"] * 3):
        draw.text((80, 170 + 34 * i), line, fill="black", font=font)
    return page


@pytest.mark.slow
def test_the_demo_on_the_bundle_refuses_a_photo_and_a_document_and_answers_an_xray(tmp_path):
    from gradio_client import Client, handle_file
    from skimage import data

    import app
    files = {"photo.jpg": Image.fromarray(data.astronaut()), "photo-grey.png": Image.fromarray(data.astronaut()).convert("L"),
             "letter.png": document()}
    for name, image in files.items():
        image.save(tmp_path / name)
    xray = REPO / "examples" / "pneumonia-person1_virus_6.jpeg"
    predictor = Predictor.from_pretrained(BUNDLE)
    demo = app.build_demo(predictor)
    port = free_port()
    app.serve(demo, "127.0.0.1", port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for name in files:
            label, decision, shown = client.predict(handle_file(str(tmp_path / name)), heatmap=True, api_name="/predict")
            assert decision.startswith("### This does not look like a chest X-ray"), name
            assert not label.get("confidences") and shown is None, name
        label, decision, shown = client.predict(handle_file(str(xray)), heatmap=True, api_name="/predict")
        expected = float(predictor.analyse([Image.open(xray)]).probabilities[0, predictor.config.positive_index])
        confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert confidences["PNEUMONIA"] == pytest.approx(expected, abs=1e-4) and shown is not None
    finally:
        app.stop(demo)


def test_the_card_and_the_hub_upload_carry_the_gate_its_sources_and_its_mistakes():
    from modeling.hub import build_card, model_operations

    card = str(build_card(BUNDLE, "someone/pneumonia", REPO / "model_card.md"))
    report = json.loads((BUNDLE / GATE_REPORT_FILE).read_text())
    assert "### Is it a chest X-ray at all?" in card and "xray_gate_eval/mistakes.png" in card
    for source, entry in report["sources"].items():
        assert f"{source} ({entry['kept']} images; {', '.join(entry['licences'])})" in card
    uploaded = {op.path_in_repo for op in model_operations(BUNDLE)}
    assert {GATE_FILE, GATE_SOURCES_FILE, GATE_REPORT_FILE, "xray_gate_eval/mistakes.png"} <= uploaded
