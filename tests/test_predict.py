"""predict.py on real files: a nested tree of DICOM, PNG, JPEG and corrupt files, scored as the demo scores them,
resumed after SIGKILL, and split across two processes under `accelerate launch`. The command's own main runs in
this process (predict_cli) except where a real process is what is tested: the kill, the launch, the environment."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pydicom
import pytest

from modeling import Predictor, load_rgb
from modeling.runtime.ood import NOT_AN_XRAY
from modeling.runtime.worklist import UNREADABLE
from tests.helpers import FORMATS, KERMANY, REPO, predict_cli, run_script

pytestmark = pytest.mark.slow  # every test here trains a model first (tiny_model_dir)

GROUP = {"chest_xray": 0, "unlike_training_xrays": 1, NOT_AN_XRAY: 2, UNREADABLE: 3}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A study export as hospitals hand them over: nested folders, DICOM (MONOCHROME1 and 2), PNG, JPEG, and files
    that are not images or are broken."""
    root = tmp_path_factory.mktemp("archive")
    (root / "study-1" / "series-a").mkdir(parents=True)
    (root / "study-2").mkdir()
    (root / "flat").mkdir()
    for name in ("rsna-pneumonia-sample.dcm", "monochrome1-sample.dcm"):
        shutil.copy(FORMATS / name, root / "study-1" / "series-a" / name)
    shutil.copy(FORMATS / "00000001_000.png", root / "study-2" / "adult.png")
    shutil.copy(FORMATS / "16747_3_1.jpg", root / "study-2" / "adult.jpg")
    for label in ("NORMAL", "PNEUMONIA"):
        for source in sorted((KERMANY / "test" / label).iterdir())[:5]:
            shutil.copy(source, root / "flat" / source.name)
    (root / "study-2" / "notes.png").write_text("not an image at all")
    (root / "study-2" / "empty.dcm").write_bytes(b"")
    data = (FORMATS / "16747_3_1.jpg").read_bytes()
    (root / "flat" / "truncated.jpg").write_bytes(data[: len(data) // 8])
    (root / ".hidden.png").write_bytes(data)  # hidden files are not part of an export
    return root


def files_of(root):
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_worklist_has_one_row_per_file_in_the_demos_order_with_the_predictors_numbers(tiny_model_dir, archive,
                                                                                      tmp_path):
    output = tmp_path / "worklist.csv"
    printed = predict_cli(archive, "--output", output, "--model", tiny_model_dir,
                          "--shard-size", "5", "--workers", "2")  # decoding in worker processes
    rows = read_rows(output)
    files = files_of(archive)
    assert sorted(row["path"] for row in rows) == sorted(p.relative_to(archive).as_posix() for p in files)
    assert [int(row["rank"]) for row in rows] == list(range(1, len(files) + 1))
    assert f"wrote {len(files)} rows" in printed
    predictor = Predictor.from_pretrained(tiny_model_dir)
    threshold = predictor.config.threshold
    unreadable = {"study-2/notes.png", "study-2/empty.dcm", "flat/truncated.jpg"}
    assert {row["path"] for row in rows if row["verdict"] == UNREADABLE} == unreadable
    for row in rows:
        path = archive / row["path"]
        if row["verdict"] == UNREADABLE:
            assert row["p_pneumonia"] == "" and row["result"].startswith("not analysed: ")
            assert str(archive) not in row["result"]  # no server paths in messages
            continue
        analysis = predictor.analyse([load_rgb(path)])
        assert row["verdict"] == analysis.verdicts[0]
        if row["verdict"] == NOT_AN_XRAY:
            assert row["p_pneumonia"] == ""
            continue
        p = analysis.probabilities[0, predictor.config.positive_index]
        assert float(row["p_pneumonia"]) == pytest.approx(p, abs=2e-6)
        assert row["decision"] == ("pneumonia suspected" if p >= threshold else "no pneumonia detected")
        if path.suffix == ".dcm":
            header = pydicom.dcmread(path, stop_before_pixels=True)
            assert (row["study_instance_uid"], row["series_instance_uid"]) == (header.StudyInstanceUID,
                                                                               header.SeriesInstanceUID)
        else:
            assert row["study_instance_uid"] == ""
    # the demo's order: assessed by P(pneumonia), then unlike the training X-rays, not X-rays, unreadable
    keys = [(GROUP[row["verdict"]], -float(row["p_pneumonia"] or 0)) for row in rows]
    assert keys == sorted(keys)
    assert [row["path"] for row in rows[-3:]] == sorted(unreadable, key=[p.relative_to(archive).as_posix()
                                                                        for p in files].index)


def test_parquet_holds_the_same_rows_and_a_new_threshold_reuses_the_parts(tiny_model_dir, archive, tmp_path):
    import pyarrow.parquet as pq
    csv_out, parquet_out = tmp_path / "w.csv", tmp_path / "w.parquet"
    predict_cli(archive, "--output", csv_out, "--model", tiny_model_dir)
    predict_cli(archive, "--output", parquet_out, "--model", tiny_model_dir, "--format", "parquet")
    table = pq.read_table(parquet_out).to_pylist()
    assert [(r["path"], r["verdict"]) for r in table] == [(r["path"], r["verdict"]) for r in read_rows(csv_out)]
    predict_cli(archive, "--output", csv_out, "--model", tiny_model_dir, "--threshold", "0")
    assert {r["decision"] for r in read_rows(csv_out) if r["p_pneumonia"]} == {"pneumonia suspected"}


def test_heatmaps_are_written_for_the_flagged_images(tiny_model_dir, archive, tmp_path):
    heatmaps = tmp_path / "heatmaps"
    output = tmp_path / "w.csv"
    predict_cli(archive, "--output", output, "--model", tiny_model_dir, "--threshold", "0", "--heatmaps", heatmaps)
    flagged = {r["path"] for r in read_rows(output) if r["decision"] == "pneumonia suspected"}
    written = {p.relative_to(heatmaps).as_posix()[:-len(".png")] for p in heatmaps.rglob("*.png")}
    assert flagged and written == flagged
    assert (heatmaps / (sorted(flagged)[0] + ".png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_killed_part_way_continues_to_the_same_worklist(tiny_model_dir, tmp_path):
    archive = tmp_path / "archive"
    for label in ("NORMAL", "PNEUMONIA"):
        shutil.copytree(KERMANY / "train" / label, archive / label)
    def command(name):  # heatmaps of every image (threshold 0) give each part some work
        return ["predict.py", str(archive), "--output", str(tmp_path / f"{name}.csv"), "--model", str(tiny_model_dir),
                "--shard-size", "2", "--workers", "0", "--threshold", "0", "--heatmaps", str(tmp_path / name)]
    predict_cli(*command("whole")[1:])
    output, parts = tmp_path / "resumed.csv", tmp_path / "resumed.csv.parts"
    process = subprocess.Popen([sys.executable, *command("resumed")], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while len(list(parts.glob("part-*.csv"))) < 3 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = len(list(parts.glob("part-*.csv")))
    assert not output.exists() and 3 <= done < 40  # stopped part-way: 80 files make 40 parts
    predict_cli(*command("resumed")[1:])
    assert output.read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert sorted(p.name for p in (tmp_path / "resumed").rglob("*")) == sorted(p.name for p in (tmp_path / "whole").rglob("*"))


def test_two_processes_under_accelerate_launch_give_the_same_worklist(tiny_model_dir, archive, tmp_path):
    single, double = tmp_path / "one.csv", tmp_path / "two.csv"
    predict_cli(archive, "--output", single, "--model", tiny_model_dir, "--shard-size", "6")
    run_script("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "predict.py", str(archive), "--output", str(double),
               "--model", str(tiny_model_dir), "--shard-size", "6")
    assert sorted(p.name for p in (tmp_path / "two.csv.parts").glob("part-*")) == [
        f"part-00000{k}-{r}-of-2.csv" for k in range(3) for r in range(2)]
    assert double.read_bytes() == single.read_bytes()


def test_inputs_that_cannot_be_listed_end_in_one_sentence(tiny_model_dir, archive, tmp_path):
    # sys.exit with a sentence: the user reads that sentence and no traceback
    with pytest.raises(SystemExit, match="neither a folder, a list file nor a glob"):
        predict_cli(tmp_path / "nowhere", "--output", tmp_path / "w.csv", "--model", tiny_model_dir)
    # a real process: the Hub's offline switch is read when huggingface_hub is imported
    offline = run_script("predict.py", "someone/chest-xrays", "--output", str(tmp_path / "w.csv"),
                         "--model", str(tiny_model_dir), check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode != 0 and "Traceback" not in offline.stderr
    assert "connect to the internet or pass a local folder" in offline.stderr
    shutil.copytree(archive, tmp_path / "export")
    listing = tmp_path / "studies.txt"  # paths relative to the list's folder
    listing.write_text("\n".join("export/" + p.relative_to(archive).as_posix() for p in files_of(archive)[:3]))
    predict_cli(listing, "--output", tmp_path / "w.csv", "--model", tiny_model_dir)
    assert len(read_rows(tmp_path / "w.csv")) == 3
    with pytest.raises(SystemExit, match="holds parts of another run"):
        predict_cli(archive, "--output", tmp_path / "w.csv", "--model", tiny_model_dir)
