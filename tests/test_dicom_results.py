"""DICOM in and out: header checks before any pixel, the study worklist, one SR per study and a Secondary Capture per
flagged image, on the shipped test studies (tests/data/dicom-studies, made by scripts/make_dicom_studies.py from a
real CR) scored by the bundled model. The SR and SC are checked by Debian's dciodvfy and read back by highdicom."""
import copy
import csv
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from modeling.runtime.dicom import NOT_A_RADIOGRAPH, NOT_FRONTAL, check_header, patient_age_years
from modeling.runtime.dicom_results import write_atomic
from modeling.runtime.files import file_sha256
from modeling.runtime.preprocessing import read_checked
from tests.helpers import REPO, SHIPPED, predict_cli

STUDIES = SHIPPED / "dicom-studies"
BUNDLE = REPO / "weights" / "pneumonia-resnet50"
BUNDLE_SHA = file_sha256(BUNDLE / "model.safetensors")


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """predict.py with every DICOM output on; a threshold low enough that every assessed image is flagged."""
    out = tmp_path_factory.mktemp("dicom-out")
    common = ["--model", BUNDLE, "--threshold", "0.01", "--workers", "0"]
    predict_cli(STUDIES, "--output", out / "files.csv", "--dicom-sr", out / "sr", "--dicom-heatmaps", out / "sc",
                "--heatmaps", out / "png", *common)
    predict_cli(STUDIES, "--output", out / "studies.csv", "--per", "study", *common)
    return out


def by_path(rows):
    return {row["path"]: row for row in rows}


# --- the header, before any pixel


def test_ages_are_read_in_every_unit_and_digits_alone_as_years():
    assert patient_age_years("003Y") == 3 and patient_age_years("62") == 62
    assert patient_age_years("018M") == pytest.approx(1.5) and patient_age_years("006W") == pytest.approx(42 / 365.25)
    assert patient_age_years("unknown") is None


def test_header_checks_refuse_or_warn_and_an_absent_tag_checks_nothing():
    frontal = pydicom.dcmread(STUDIES / "study-a" / "frontal.dcm", stop_before_pixels=True)
    assert check_header(frontal).verdict is None
    assert [w.kind for w in check_header(frontal).warnings] == ["age"]
    for keyword, value, verdict in [("Modality", "CT", NOT_A_RADIOGRAPH), ("ViewPosition", "RL", NOT_FRONTAL),
                                    ("ViewPosition", "LATERAL", NOT_FRONTAL), ("Modality", "DX", None)]:
        edited = copy.deepcopy(frontal)
        setattr(edited, keyword, value)
        assert check_header(edited).verdict == verdict, (keyword, value)
    edited = copy.deepcopy(frontal)
    edited.BodyPartExamined, edited.PatientAge = "ABDOMEN", "004Y"
    assert [w.kind for w in check_header(edited).warnings] == ["body part"]
    for keyword in ("Modality", "ViewPosition", "PatientAge", "BodyPartExamined"):
        delattr(edited, keyword)
    check = check_header(edited)
    assert check.verdict is None and check.warnings == ()


def test_a_refused_file_is_never_decoded(tmp_path):
    """A CT whose pixel data no decoder reads: refused from its header, with no decoding error."""
    broken = pydicom.dcmread(STUDIES / "other" / "undecodable.dcm")
    broken.Modality = "CT"
    broken.save_as(tmp_path / "ct.dcm")
    image, check = read_checked(tmp_path / "ct.dcm")
    assert image is None and check.verdict == NOT_A_RADIOGRAPH and "Modality is CT" in check.reason


# --- the worklists


def test_the_csv_gives_each_header_verdict_warning_and_bad_input_its_reason(outputs):
    rows = by_path(read_rows(outputs / "files.csv"))
    assert rows["study-a/lateral.dcm"]["verdict"] == NOT_FRONTAL and rows["study-a/lateral.dcm"]["p_pneumonia"] == ""
    assert "ViewPosition is LL" in rows["study-a/lateral.dcm"]["result"]
    assert rows["study-b/ct.dcm"]["verdict"] == NOT_A_RADIOGRAPH and "Modality is CT" in rows["study-b/ct.dcm"]["result"]
    assert "PatientAge 062Y" in rows["study-a/lateral.dcm"]["warnings"]
    assert rows["study-b/frontal-child.dcm"]["warnings"] == ""  # three years old: the training population
    assert "2 frames: the first one was read" in rows["study-b/multi-frame.dcm"]["warnings"]
    assert "no StudyInstanceUID" in rows["other/no-study-uid.dcm"]["warnings"]
    assert "could not be decoded" in rows["other/undecodable.dcm"]["result"]
    assert "same SOPInstanceUID as other/duplicate.dcm" in rows["study-a/frontal.dcm"]["warnings"]
    for row in rows.values():
        assert str(REPO) not in row["result"] + row["warnings"]


def test_the_study_worklist_has_one_row_per_study_with_its_most_suspicious_frontal_image(outputs):
    files = read_rows(outputs / "files.csv")
    studies = read_rows(outputs / "studies.csv")
    uids = {row["study_instance_uid"] for row in files if row["study_instance_uid"]}
    assert sorted(r["study_instance_uid"] for r in studies if r["study_instance_uid"]) == sorted(uids)
    assert len(studies) == len(uids) + 1  # the file without a study is a row of its own
    for study in studies:
        if not study["study_instance_uid"]:
            continue
        members = [r for r in files if r["study_instance_uid"] == study["study_instance_uid"]]
        assessed = [r for r in members if r["p_pneumonia"] and "a duplicate" not in r["warnings"]]
        assert int(study["images"]) == len(members) and int(study["assessed"]) == len(assessed)
        if assessed:
            best = max(assessed, key=lambda r: float(r["p_pneumonia"]))
            assert float(study["p_pneumonia"]) == float(best["p_pneumonia"])
            assert by_path(files)[study["image"]]["p_pneumonia"] == best["p_pneumonia"]
        else:
            assert study["p_pneumonia"] == "" and study["result"].startswith("not analysed")
    study_b = next(r for r in studies if r["image"].startswith("study-b/"))
    assert "Modality is CT" in study_b["warnings"]


# --- the Structured Reports


def test_one_sr_per_study_with_an_image_assessed(outputs):
    files = read_rows(outputs / "files.csv")
    assessed_studies = {r["study_instance_uid"] for r in files if r["study_instance_uid"] and r["p_pneumonia"]}
    reports = sorted((outputs / "sr").iterdir())
    assert sorted(pydicom.dcmread(p).StudyInstanceUID for p in reports) == sorted(assessed_studies)
    assert not list((outputs / "sr").glob("*.tmp"))


def _dciodvfy(path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("Debian's dicom3tools (dciodvfy) is not installed; .ci/run installs it")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_dciodvfy_finds_no_error_in_the_srs_and_captures(outputs):
    written = sorted((outputs / "sr").iterdir()) + sorted((outputs / "sc").rglob("*.dcm"))
    assert len(written) >= 4
    for path in written:
        assert _dciodvfy(path) == [], path.name


def test_the_sr_reads_back_with_the_csvs_finding_probability_and_references(outputs):
    rows = {r["sop_instance_uid"]: r for r in read_rows(outputs / "files.csv")
            if r["sop_instance_uid"] and "a duplicate" not in r["warnings"]}
    seen = set()
    for path in sorted((outputs / "sr").iterdir()):
        sr = hd.sr.srread(path)
        source = pydicom.dcmread(STUDIES / "study-a" / "frontal.dcm", stop_before_pixels=True)
        assert (sr.PatientID, sr.PatientName) == (source.PatientID, source.PatientName)
        assert (sr.PreliminaryFlag, sr.VerificationFlag, sr.CompletionFlag) == ("PRELIMINARY", "UNVERIFIED", "COMPLETE")
        assert "not a diagnosis" in sr.SeriesDescription
        groups = sr.content.get_image_measurement_groups()
        assert groups
        for group in groups:
            sop = group.source_images[0].referenced_sop_instance_uid
            row = rows[sop]
            seen.add(sop)
            assert row["study_instance_uid"] == sr.StudyInstanceUID
            texts = [(item.ConceptNameCodeSequence[0].CodeMeaning, item.TextValue)
                     for item in group[0].ContentSequence if item.ValueType == "TEXT"]
            assert ("Algorithm Name", "pneumonia-resnet50") in texts
            assert ("Algorithm Parameters", f"weights sha256 {BUNDLE_SHA}") in texts
            values = {m.name.meaning: m.value for m in group.get_measurements()}
            evaluations = {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}
            if row["p_pneumonia"]:
                assert values["Calibrated probability of pneumonia"] == pytest.approx(float(row["p_pneumonia"]),
                                                                                      abs=1e-12)
                assert values["Decision threshold"] == pytest.approx(0.01)
                assert evaluations["Pneumonia"].lower() == row["decision"]
            else:
                assert values == {} and "not assessed" in evaluations["Input assessment"]
    study_rows = [r for r in rows.values() if r["study_instance_uid"]
                  and any(o["study_instance_uid"] == r["study_instance_uid"] and o["p_pneumonia"] for o in rows.values())]
    assert seen == {r["sop_instance_uid"] for r in study_rows}


def test_a_secondary_capture_equals_the_png_overlay_and_references_its_source(outputs):
    captures = sorted((outputs / "sc").rglob("*.dcm"))
    assert {p.relative_to(outputs / "sc").as_posix() for p in captures} >= {"study-a/frontal.dcm",
                                                                            "study-b/frontal-child.dcm"}
    for path in captures:
        name = path.relative_to(outputs / "sc").as_posix()
        capture, source = pydicom.dcmread(path), pydicom.dcmread(STUDIES / name, stop_before_pixels=True)
        png = np.asarray(Image.open(outputs / "png" / (name + ".png")).convert("RGB"))
        assert np.array_equal(capture.pixel_array, png)
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert capture.StudyInstanceUID == source.StudyInstanceUID and capture.PatientID == source.PatientID


def test_an_object_that_fails_while_written_leaves_nothing_on_disk(tmp_path):
    dataset = pydicom.dcmread(STUDIES / "study-a" / "frontal.dcm")
    with pytest.warns(UserWarning, match="VR US"):
        dataset.Rows = 70000  # US holds at most 65535: writing fails after part of the file is out
    with pytest.raises(OSError):
        write_atomic(dataset, tmp_path / "out.dcm")
    assert list(tmp_path.iterdir()) == []


def test_the_predictor_assesses_a_file_as_the_worklist_does(outputs):
    from modeling import Predictor
    predictor = Predictor.from_pretrained(BUNDLE)
    lateral = predictor.assess_file(STUDIES / "study-a" / "lateral.dcm")
    assert (lateral.probability, lateral.verdict, lateral.image) == (None, NOT_FRONTAL, None)
    assert "ViewPosition is LL" in lateral.reason
    frontal = predictor.assess_file(STUDIES / "study-b" / "multi-frame.dcm")
    row = by_path(read_rows(outputs / "files.csv"))["study-b/multi-frame.dcm"]
    assert frontal.probability == pytest.approx(float(row["p_pneumonia"]), abs=1e-6)
    assert any("2 frames" in w for w in frontal.warnings) and frontal.verdict == row["verdict"]
