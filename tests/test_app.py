"""The Gradio demo, launched for real in-process and reached through gradio_client."""
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import app
from benchmarks.load_test import free_port
from modeling import PneumoniaClassifier

from conftest import FORMATS, REPO, run_script


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    demo = app.build_demo(PneumoniaClassifier.from_pretrained(tiny_model_dir))
    port = free_port()
    app.serve(demo, "127.0.0.1", port)
    yield demo, Client(f"http://127.0.0.1:{port}/", verbose=False)
    demo.close()


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    run_script("evaluate.py", "--model", str(tiny_model_dir), "--data", str(small_data), "--split", "test",
               "--output-dir", str(out), "--bootstrap", "50")
    with open(out / "predictions.csv") as f:
        return {row["image"]: float(row["prob_pneumonia"]) for row in csv.DictReader(f)}


def p_pneumonia(result) -> float:
    confidences = {c["label"]: c["confidence"] for c in result[0]["confidences"]}
    return confidences["PNEUMONIA"]


def predict(client, path, heatmap=True):
    return client.predict(handle_file(str(path)), heatmap=heatmap, api_name="/predict")


def save(tmp_path, name, data) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_api_gives_the_same_probabilities_as_evaluate(server, evaluated, small_data):
    _, client = server
    images = [p for label in ("NORMAL", "PNEUMONIA") for p in sorted((small_data / "test" / label).iterdir())[:2]]
    for path in images:
        with_heatmap = predict(client, path, heatmap=True)
        without = predict(client, path, heatmap=False)
        assert p_pneumonia(with_heatmap) == pytest.approx(evaluated[path.name], abs=2e-6)
        assert p_pneumonia(without) == pytest.approx(evaluated[path.name], abs=2e-6)
        assert without[2] is None  # no heatmap asked for: no image encoded and sent
        assert with_heatmap[1].startswith(("### Pneumonia suspected", "### No pneumonia detected"))
        heatmap = Image.open(with_heatmap[2])
        assert heatmap.size == (224, 224) and np.asarray(heatmap).std() > 5


def _render_dicom_independently(path: Path) -> Image.Image:
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array.astype(np.float64)
    grey = np.round((pixels - pixels.min()) / (pixels.max() - pixels.min()) * 255).astype(np.uint8)
    if dataset.PhotometricInterpretation == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey)


@pytest.mark.parametrize("name", ["rsna-pneumonia-sample.dcm", "monochrome1-sample.dcm"])
def test_dicom_gives_the_same_result_as_the_equivalent_png(server, tmp_path, name):
    _, client = server
    equivalent = save(tmp_path, name.replace(".dcm", ".png"), png(_render_dicom_independently(FORMATS / name)))
    from_dicom, from_png = predict(client, FORMATS / name), predict(client, equivalent)
    assert p_pneumonia(from_dicom) == pytest.approx(p_pneumonia(from_png), abs=1e-6)
    assert from_dicom[1] == from_png[1]


def _truncated_jpeg() -> bytes:
    data = (REPO / "examples" / "normal-IM-0001-0001.jpeg").read_bytes()
    return data[: len(data) // 2]


def _bomb() -> bytes:
    return png(Image.new("1", (20000, 20000)))  # 400 megapixels, about 50 kB on disk


def _animated_gif() -> bytes:
    frames = [Image.new("L", (256, 256), value) for value in (30, 220, 90)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _sixteen_bit_png() -> bytes:
    xray = np.asarray(Image.open(REPO / "examples" / "pneumonia-person1_virus_6.jpeg").convert("L"), dtype=np.uint16)
    return png(Image.fromarray(xray * 16))  # 12-bit values in a 16-bit PNG


def _dicom_without_pixels(tmp_path) -> bytes:
    dataset = pydicom.dcmread(FORMATS / "rsna-pneumonia-sample.dcm")
    del dataset.PixelData
    path = tmp_path / "no-pixels.dcm"
    dataset.save_as(path)
    return path.read_bytes()


BAD_INPUTS = {
    "notes.txt": (lambda tmp: b"radiology report, not an image", "not an image this tool can read"),
    "empty.png": (lambda tmp: b"", "The file is empty"),
    "truncated.jpeg": (lambda tmp: _truncated_jpeg(), "damaged or truncated"),
    "bomb.png": (lambda tmp: _bomb(), "too large to process safely"),
    "one-pixel.png": (lambda tmp: png(Image.new("L", (1, 1))), "too small"),
    "wide.png": (lambda tmp: png(Image.new("L", (20000, 300))), "far from the roughly square shape"),
    "no-pixels.dcm": (_dicom_without_pixels, "no pixel data"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gets_a_clear_message_and_the_server_keeps_answering(server, tmp_path, name):
    _, client = server
    make, message = BAD_INPUTS[name]
    with pytest.raises(Exception, match=message):
        predict(client, save(tmp_path, name, make(tmp_path)))
    assert p_pneumonia(predict(client, REPO / "examples" / "normal-IM-0001-0001.jpeg", heatmap=False)) > 0


@pytest.mark.parametrize("name, make, note", [
    ("animated.gif", _animated_gif, "only the first was analysed"),
    ("sixteen-bit.png", _sixteen_bit_png, None),
])
def test_unusual_but_valid_images_are_analysed(server, tmp_path, name, make, note):
    _, client = server
    result = predict(client, save(tmp_path, name, make()))
    assert 0 <= p_pneumonia(result) <= 1
    if note:
        assert note in result[1]


def test_uploads_are_deleted_after_the_request(server, tmp_path):
    _, client = server
    name = f"upload-{uuid.uuid4().hex}.jpeg"
    predict(client, save(tmp_path, name, (REPO / "examples" / "normal-IM-0003-0001.jpeg").read_bytes()))
    upload_root = Path(os.environ.get("GRADIO_TEMP_DIR", Path(tempfile.gettempdir()) / "gradio"))
    assert upload_root.exists() and not list(upload_root.rglob(name))


def test_batch_mode_returns_a_table_and_a_csv(server, tmp_path, evaluated, small_data):
    _, client = server
    good = sorted((small_data / "test" / "PNEUMONIA").iterdir())[:3]
    bad = save(tmp_path, "broken.jpeg", b"nope")
    table, csv_path = client.predict([handle_file(str(p)) for p in [*good, bad]], api_name="/predict_batch")
    rows = table["data"]
    assert [r[0] for r in rows] == [p.name for p in good] + ["broken.jpeg"]
    for row, path in zip(rows, good):
        assert row[1] == pytest.approx(evaluated[path.name], abs=1e-4)
    assert rows[-1][1] is None and rows[-1][2].startswith("not analysed:")
    with open(csv_path) as f:
        assert list(csv.reader(f))[0] == ["file", "p_pneumonia", "result"]


def test_threshold_changes_the_decision_not_the_probability(server):
    _, client = server
    path = handle_file(str(REPO / "examples" / "pneumonia-person1_virus_6.jpeg"))
    low = client.predict(path, 0.0, False, api_name="/predict")
    high = client.predict(path, 1.0, False, api_name="/predict")
    assert p_pneumonia(low) == p_pneumonia(high)
    assert low[1].startswith("### Pneumonia suspected") and high[1].startswith("### No pneumonia detected")


def test_operating_point_text_reads_the_validation_results(tiny_model_dir):
    config = PneumoniaClassifier.from_pretrained(tiny_model_dir).config
    at_operating_point = app.operating_point_text(config, round(config.threshold, 3))  # as the slider shows it
    assert f"sensitivity was **{config.validation['sensitivity']:.1%}**" in at_operating_point
    assert f"specificity **{config.validation['specificity']:.1%}**" in at_operating_point
    curve = config.validation["curve"]
    elsewhere = app.operating_point_text(config, 0.101)
    assert f"sensitivity was **{curve['sensitivity'][10]:.1%}**" in elsewhere and "threshold 0.100" in elsewhere


def test_command_line_app_with_share_keeps_serving_offline(tiny_model_dir):
    port = free_port()
    process = subprocess.Popen([sys.executable, "app.py", "--model", str(tiny_model_dir), "--port", str(port), "--share"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.time() + 180
        while time.time() < deadline and not any("share link" in line for line in lines):
            lines.append(process.stdout.readline())
        assert any(line.startswith("Could not create a public share link") for line in lines), lines
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        result = predict(client, REPO / "examples" / "normal-IM-0001-0001.jpeg", heatmap=False)
        assert 0 <= p_pneumonia(result) <= 1
    finally:
        process.kill()
        _, stderr = process.communicate()
    assert "Traceback" not in stderr


def test_command_line_app_refuses_a_missing_model_in_one_sentence(tmp_path):
    result = run_script("app.py", "--model", str(tmp_path / "none"), check=False)
    assert result.returncode == 1 and result.stderr.strip() == f"No model folder at {tmp_path / 'none'}."
