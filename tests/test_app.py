"""The Gradio demo, launched for real and reached through gradio_client, raw HTTP calls and SIGTERM."""
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import app
from modeling import Predictor, read_image
from tests.helpers import FORMATS, KERMANY, REPO, SHIPPED, evaluate_cli, free_port, refusal


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    """The demo on the tiny model with its out-of-distribution gate off, so that every readable image gets an
    answer (the tiny network's gate, fitted on 68 images, flags most of them; test_ood_robustness tests the gate)."""
    predictor = Predictor.from_pretrained(tiny_model_dir)
    predictor.ood = None
    demo = app.build_demo(predictor)
    port = free_port()
    app.serve(demo, "127.0.0.1", port)
    yield demo, Client(f"http://127.0.0.1:{port}/", verbose=False)
    app.stop(demo)


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    evaluate_cli("--model", tiny_model_dir, "--data", small_data, "--split", "test", "--output-dir", out,
                 "--bootstrap", "50")
    with open(out / "predictions.csv") as f:
        return {row["image"]: float(row["prob_pneumonia"]) for row in csv.DictReader(f)}


def library_p(model_dir: Path, image: Image.Image) -> float:
    """P(pneumonia) of the library itself for an image, to check what the demo answers against."""
    predictor = Predictor.from_pretrained(model_dir)
    return float(predictor.analyse([image]).probabilities[0, predictor.config.positive_index])


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


def heatmap_array(result) -> np.ndarray:
    return np.asarray(Image.open(result[2]).convert("RGB"), dtype=np.float32)


@pytest.mark.slow
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


def test_concurrent_heatmaps_equal_each_image_asked_alone(server, small_data, tmp_path):
    """8 clients x 4 requests with the heatmap on, over 10 different images, all at once: every heatmap is the
    one that image gives alone (Grad-CAM shares nothing between requests)."""
    demo, client = server
    images = [p for label in ("NORMAL", "PNEUMONIA") for p in sorted((small_data / "test" / label).iterdir())[:5]]
    alone = {path.name: (p_pneumonia(r := predict(client, path)), heatmap_array(r)) for path in images}
    downloads = tmp_path / "downloads"

    def session(index: int) -> list[tuple[str, float, np.ndarray]]:
        # a folder of its own for the files it downloads, as separate users have (gradio_client writes the same
        # heatmap to one path in a shared folder, and a thread reading it could see another thread's partial write)
        own = Client(client.src, verbose=False, download_files=str(downloads / str(index)))
        answers = []
        for r in range(4):
            path = images[(index + 3 * r) % len(images)]
            result = predict(own, path)
            answers.append((path.name, p_pneumonia(result), heatmap_array(result)))
        return answers

    with ThreadPoolExecutor(8) as pool:
        answers = [answer for answers in pool.map(session, range(8)) for answer in answers]
    assert len(answers) == 32 and {name for name, _, _ in answers} == set(alone)
    for name, probability, heatmap in answers:
        assert probability == pytest.approx(alone[name][0], abs=1e-6)
        assert np.abs(heatmap - alone[name][1]).mean() < 1.0  # grey levels; PNG encoding is lossless


def test_the_same_image_from_many_clients_twice_and_twice_in_a_batch(server, evaluated, small_data, tmp_path):
    _, client = server
    path = sorted((small_data / "test" / "PNEUMONIA").iterdir())[0]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: predict(Client(client.src, verbose=False,
                                                         download_files=str(tmp_path / str(i))), path), range(6)))
    assert all(p_pneumonia(r) == pytest.approx(evaluated[path.name], abs=2e-6) for r in results)
    first, again = predict(client, path, heatmap=False), predict(client, path, heatmap=False)  # Analyse twice
    assert p_pneumonia(first) == p_pneumonia(again)
    table, _ = client.predict([handle_file(str(path)), handle_file(str(path))], api_name="/predict_batch")
    assert [row[1] for row in table["data"]] == [path.name, path.name]
    assert table["data"][0][2] == pytest.approx(evaluated[path.name], abs=1e-4) == table["data"][1][2]


def _call(base: str, endpoint: str, data: list) -> tuple[str, object]:
    """Gradio's raw HTTP API: (event, payload) of the call's final event."""
    event_id = httpx.post(f"{base}gradio_api/call/{endpoint}", json={"data": data}, timeout=60).json()["event_id"]
    with httpx.stream("GET", f"{base}gradio_api/call/{endpoint}/{event_id}", timeout=120) as response:
        lines = [line for line in response.iter_lines() if line]
    event = [line.split(": ", 1)[1] for line in lines if line.startswith("event:")][-1]
    payload = [line.split(": ", 1)[1] for line in lines if line.startswith("data:")][-1]
    return event, json.loads(payload)


def _upload(base: str, path: Path) -> dict:
    with open(path, "rb") as f:
        server_path = httpx.post(f"{base}gradio_api/upload", files={"files": (path.name, f)}, timeout=60).json()[0]
    return {"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def test_a_cache_file_the_client_did_not_upload_is_refused_and_kept(server, small_data):
    demo, client = server
    base = client.src
    event, outputs = _call(base, "predict", [_upload(base, sorted((small_data / "test" / "NORMAL").iterdir())[0]),
                                             0.5, True])
    assert event == "complete"
    heatmap = outputs[2]["path"]  # another request's output, in Gradio's cache
    assert Path(heatmap).is_file()
    event, message = _call(base, "predict", [{"path": heatmap, "meta": {"_type": "gradio.FileData"}}, 0.5, False])
    assert event == "error" and "was not uploaded to this demo" in json.dumps(message)
    assert str(Path(heatmap).parent) not in json.dumps(message)  # the file's name at most, never its path
    assert Path(heatmap).is_file()


def _render_dicom_independently(path: Path) -> Image.Image:
    """The windowing rule for grey without a window of its own, written out: the 0.5-99.5 percentiles. The JPEG
    is decoded by Pillow, which agrees to the bit with dcmtk (tests/test_transfer_syntaxes.py)."""
    dataset = pydicom.dcmread(path)
    pixels = pydicom.pixels.pixel_array(dataset, decoding_plugin="pillow").astype(np.float64)
    low, high = np.percentile(pixels, (0.5, 99.5))
    grey = np.round((np.clip(pixels, low, high) - low) / (high - low) * 255).astype(np.uint8)
    if dataset.PhotometricInterpretation == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey)


@pytest.mark.parametrize("name", ["rsna-pneumonia-sample.dcm", "monochrome1-sample.dcm"])
def test_dicom_gives_the_same_result_as_the_equivalent_png(server, tmp_path, name):
    _, client = server
    equivalent = save(tmp_path, name.replace(".dcm", ".png"), png(_render_dicom_independently(FORMATS / name)))
    from_dicom, from_png = predict(client, FORMATS / name), predict(client, equivalent)
    assert p_pneumonia(from_dicom) == pytest.approx(p_pneumonia(from_png), abs=1e-6)
    age_note = "\n\n*Note: PatientAge 62 is outside the training population (children aged 1 to 5): the result may not hold.*"
    assert from_dicom[1] == from_png[1] + age_note  # the header's warning is the one difference


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
    demo, client = server
    make, message = BAD_INPUTS[name]
    with pytest.raises(Exception, match=message) as raised:
        predict(client, save(tmp_path, name, make(tmp_path)))
    text = str(raised.value)
    assert name in text  # the file is named by its original name ...
    assert str(Path(demo.GRADIO_CACHE)) not in text and str(tmp_path) not in text  # ... never by a server path
    assert p_pneumonia(predict(client, REPO / "examples" / "normal-IM-0001-0001.jpeg", heatmap=False)) > 0


@pytest.mark.parametrize("name, make, note", [
    ("animated.gif", _animated_gif, "only the first was analysed"),
    ("sixteen-bit.png", _sixteen_bit_png, None),
])
def test_unusual_but_valid_images_are_analysed(server, tiny_model_dir, tmp_path, name, make, note):
    _, client = server
    path = save(tmp_path, name, make())
    result = predict(client, path)
    # what the library gives for the image as read (a GIF's first frame: the grey 30 of _animated_gif)
    expected = Image.new("L", (256, 256), 30) if name.endswith(".gif") else read_image(path)
    assert p_pneumonia(result) == pytest.approx(library_p(tiny_model_dir, expected), abs=2e-6)
    if note:
        assert note in result[1]


def test_one_16_bit_array_gives_one_probability_in_every_container(server, tmp_path):
    """16-bit PNG, 16-bit TIFF, DICOM MONOCHROME2 and DICOM MONOCHROME1 (stored inverted) of the same pixels."""
    _, client = server
    grey = np.asarray(Image.open(sorted((KERMANY / "test" / "PNEUMONIA").iterdir())[0]).convert("L"), dtype=np.uint16)
    values = (grey * 13 + 300).astype(np.uint16)  # 12-bit data, no window of its own
    files = {"same.png": values, "same.tif": values}
    paths = []
    for name, array in files.items():
        Image.fromarray(array).save(tmp_path / name)
        assert Image.open(tmp_path / name).mode.startswith("I;16")
        paths.append(tmp_path / name)
    for photometric, stored in (("MONOCHROME2", values), ("MONOCHROME1", values.max() - values)):
        paths.append(_dicom(tmp_path / f"same-{photometric}.dcm", stored, photometric))
    probabilities = [p_pneumonia(predict(client, path, heatmap=False)) for path in paths]
    assert max(probabilities) - min(probabilities) < 1e-4, probabilities


def _dicom(path: Path, pixels: np.ndarray, photometric: str) -> Path:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # computed radiography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.PhotometricInterpretation = "CR", photometric
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 16, 16, 15
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.slow
def test_large_images_sent_together_are_each_answered(server, tiny_model_dir, tmp_path):
    _, client = server
    rng = np.random.default_rng(0)
    base = np.asarray(Image.open(REPO / "examples" / "normal-IM-0001-0001.jpeg").convert("L").resize((4800, 4800)),
                      dtype=np.uint16) * 200
    paths = []
    for i in range(4):  # four 23-megapixel 16-bit PNGs (46 MB of pixels each; fast zlib: the default takes 10 s each)
        Image.fromarray(base + rng.integers(0, 50, base.shape, dtype=np.uint16)).save(tmp_path / f"big-{i}.png",
                                                                                       compress_level=1)
        paths.append(tmp_path / f"big-{i}.png")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: predict(Client(client.src, verbose=False), p, heatmap=False), paths))
    predictor = Predictor.from_pretrained(tiny_model_dir)
    expected = predictor.analyse([read_image(path) for path in paths]).probabilities[:, 1]
    assert [p_pneumonia(r) for r in results] == pytest.approx(expected.tolist(), abs=2e-6)


@pytest.mark.slow
def test_batch_mode_is_a_worklist_sorted_by_probability(server, tmp_path, evaluated, small_data):
    _, client = server
    good = [p for label in ("NORMAL", "PNEUMONIA") for p in sorted((small_data / "test" / label).iterdir())[:3]]
    bad = save(tmp_path, "broken.jpeg", b"nope")
    sent = [good[0], bad, *good[1:]]
    table, csv_path = client.predict([handle_file(str(p)) for p in sent], api_name="/predict_batch")
    rows = table["data"]
    assert table["headers"] == app.BATCH_HEADERS and [r[0] for r in rows] == list(range(1, len(sent) + 1))
    assessed = rows[:len(good)]
    assert sorted(r[1] for r in assessed) == sorted(p.name for p in good)
    assert [r[2] for r in assessed] == sorted((r[2] for r in assessed), reverse=True)  # highest P first
    for row in assessed:
        assert row[2] == pytest.approx(evaluated[row[1]], abs=1e-4)
        assert sent[row[4] - 1].name == row[1]  # the upload order is kept
    assert [r[1] for r in rows[len(good):]] == ["broken.jpeg"]  # unreadable files last
    assert rows[-1][2] is None and rows[-1][3].startswith("not analysed: broken.jpeg")
    with open(csv_path) as f:
        written = list(csv.reader(f))
    assert written[0] == app.BATCH_HEADERS and [r[1] for r in written[1:]] == [r[1] for r in rows]


def test_a_dicom_headers_refusals_and_warnings_reach_the_demo(server):
    """A lateral and a CT are refused from their headers, with the tag that says why; an adult's frontal image is
    assessed, with the age warning; the batch tab gives the same reasons and warnings."""
    _, client = server
    studies = SHIPPED / "dicom-studies"
    lateral, ct, frontal = (studies / "study-a" / "lateral.dcm", studies / "study-b" / "ct.dcm",
                            studies / "study-a" / "frontal.dcm")
    label, text, heatmap = predict(client, lateral)
    assert not label and heatmap is None and "not a frontal view" in text and "ViewPosition is LL" in text
    label, text, _ = predict(client, ct)
    assert not label and "not a radiograph" in text and "Modality is CT" in text
    result = predict(client, frontal, heatmap=False)
    assert 0 <= p_pneumonia(result) <= 1 and "PatientAge 062Y is outside the training population" in result[1]
    table, _ = client.predict([handle_file(str(p)) for p in (lateral, frontal, ct)], api_name="/predict_batch")
    rows = {row[1]: row for row in table["data"]}
    assert rows["frontal.dcm"][2] is not None and "PatientAge 062Y" in rows["frontal.dcm"][5]
    assert rows["lateral.dcm"][2] is None and rows["lateral.dcm"][3].startswith("not assessed: ViewPosition is LL")
    assert rows["ct.dcm"][3].startswith("not assessed: Modality is CT")
    assert table["data"][0][1] == "frontal.dcm"  # the assessed image first


def test_threshold_changes_the_decision_not_the_probability(server):
    _, client = server
    path = handle_file(str(REPO / "examples" / "pneumonia-person1_virus_6.jpeg"))
    low = client.predict(path, 0.0, False, api_name="/predict")
    high = client.predict(path, 1.0, False, api_name="/predict")
    assert p_pneumonia(low) == p_pneumonia(high)
    assert low[1].startswith("### Pneumonia suspected") and high[1].startswith("### No pneumonia detected")


def test_operating_point_text_reads_the_validation_results(tiny_model_dir):
    config = Predictor.from_pretrained(tiny_model_dir).config
    at_operating_point = app.operating_point_text(config, round(config.threshold, 3))  # as the slider shows it
    assert f"sensitivity was **{config.validation['sensitivity']:.1%}**" in at_operating_point
    assert f"specificity **{config.validation['specificity']:.1%}**" in at_operating_point
    curve = config.validation["curve"]
    elsewhere = app.operating_point_text(config, 0.101)
    assert f"sensitivity was **{curve['sensitivity'][10]:.1%}**" in elsewhere and "threshold 0.100" in elsewhere


def test_uploads_expire_with_the_cache_and_examples_keep_answering(tiny_model_dir, small_data):
    demo = app.build_demo(Predictor.from_pretrained(tiny_model_dir), cache_minutes=0.05)  # 3 seconds
    port = free_port()
    app.serve(demo, "127.0.0.1", port)
    base = f"http://127.0.0.1:{port}/"
    try:
        kept = set().union(*(getattr(block, "keep_in_cache", set()) for block in demo.blocks.values()))
        example = next(path for path in kept if path.endswith("normal-IM-0001-0001.jpeg"))
        upload = _upload(base, sorted((small_data / "test" / "NORMAL").iterdir())[1])
        assert _call(base, "predict", [upload, 0.5, False])[0] == "complete"
        deadline = time.monotonic() + 120  # Gradio deletes every 1-2 s here; the bound only ends a broken run
        while Path(upload["path"]).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(upload["path"]).exists()  # uploads are not kept
        event, message = _call(base, "predict", [upload, 0.5, False])
        assert event == "error" and "no longer on the server" in json.dumps(message)
        event, outputs = _call(base, "predict", [{"path": example, "meta": {"_type": "gradio.FileData"}}, 0.5, True])
        assert event == "complete" and outputs[1].startswith("### ")
    finally:
        app.stop(demo)


def _files_under(*folders: Path) -> list[Path]:
    return [path for folder in folders for path in folder.rglob("*") if not path.is_dir()]


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal, options", [(signal.SIGTERM, ["--share"]), (signal.SIGINT, [])],
                         ids=["SIGTERM-share", "SIGINT"])
def test_a_stopped_server_leaves_no_file_behind(tiny_model_dir, small_data, tmp_path, stop_signal, options):
    """app.py as a Space runs it, stopped as a Space stops it (SIGTERM) and as Ctrl-C does. With --share and no
    internet it says so in one line and serves on."""
    gradio_dir, temp_dir = tmp_path / "gradio", tmp_path / "tmp"
    gradio_dir.mkdir()
    temp_dir.mkdir()
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(gradio_dir), "TMPDIR": str(temp_dir)}
    process = subprocess.Popen([sys.executable, "app.py", "--model", str(tiny_model_dir), "--port", str(port), *options],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("Demo running at")
        if "--share" in options:
            assert process.stdout.readline().startswith("Could not create a public share link")
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        images = sorted((small_data / "test" / "PNEUMONIA").iterdir())[:3]
        result = predict(client, images[0], heatmap=True)
        assert result[2] and p_pneumonia(result) == pytest.approx(library_p(tiny_model_dir, read_image(images[0])),
                                                                   abs=2e-6)
        predict(client, images[1], heatmap=False)
        _, csv_path = client.predict([handle_file(str(p)) for p in images], api_name="/predict_batch")
        assert _files_under(gradio_dir)  # uploads, the heatmap and the CSV, while serving
    finally:
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    assert _files_under(gradio_dir, temp_dir) == []


def test_command_line_app_refuses_a_missing_model_in_one_sentence(tmp_path):
    line = refusal(lambda *argv: app.main(list(argv)), "--model", tmp_path / "none")  # app.py's main, in this process
    assert line == f"No model folder at {tmp_path / 'none'}."


def test_cleaning_the_cache_removes_empty_folders_only(tmp_path):
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "kept" / "empty").mkdir(parents=True)
    (tmp_path / "kept" / "upload.png").write_bytes(b"x")
    app._clean_temp_folder(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["kept", "kept/upload.png"]
    app._clean_temp_folder(tmp_path / "gone")  # a cache another server already removed: nothing to do, no error
