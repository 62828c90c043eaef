"""Real training runs of a tiny timm model on real X-rays: output folder, evaluate, distributed, kill and resume."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modeling import PneumoniaClassifier, Predictor
from modeling.runtime.inference import describe_device, fast_bf16
from modeling.training.checkpointing import latest_checkpoint
from modeling.training.data import patient_id
from scripts.training_curves import main as training_curves
from scripts.validation_results import main as validation_results
from tests.helpers import REPO, TINY_TRAIN_ARGS, printed_by, refusal, run_script, train_cli

METRIC_KEYS = {"n", "threshold", "accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc",
               "confusion_matrix", "ci95", "at_0.5"}


def test_training_writes_a_finalized_model_folder(tiny_run_dir, tiny_model_dir):
    assert sorted(p.name for p in tiny_run_dir.iterdir()) == ["checkpoints", "data_report.json", "model", "split.json",
                                                             "trained", "training_log.json"]  # nothing half-made
    predictor = Predictor.from_pretrained(tiny_model_dir)  # every artifact fitted for what config.json deploys
    config = predictor.config
    assert config.architecture == "test_resnet" and config.label_names == ("NORMAL", "PNEUMONIA")
    assert 0 < config.threshold < 1 and config.precision == "float32" and config.tta_views == []
    assert config.validation["sensitivity"] >= 0.95  # the default rule: target sensitivity 0.95
    assert predictor.ood is not None
    log = json.loads((tiny_model_dir / "training_log.json").read_text())
    assert "threshold" not in log and "temperature" not in log  # the deployed scalars live in config.json only
    # by default the run keeps its final moving average, the one network validated each epoch
    assert [(r["epoch"], r["weights"]) for r in log["history"]] == [(1, "ema"), (2, "ema")]
    # each epoch says where and in what precision it ran: a resumed run can span machines
    assert {(r["device"], r["mixed_precision"]) for r in log["history"]} == {(describe_device(torch.device("cpu")), "no")}
    assert describe_device(torch.device("cpu")).endswith(" CPU")
    assert (log["best_epoch"], log["best_weights"]) == (2, "ema")
    assert log["augmentation"]["recipe"] == "shortcut-breaking" and log["augmentation"]["frame_probability"] > 0
    assert log["commit"] is None or len(log["commit"].split("+")[0]) == 40
    assert log["command"].startswith("python train.py --data") and log["device"] == "cpu"
    split = json.loads((tiny_model_dir / "split.json").read_text())
    assert {patient_id(n) for n in split["train"]}.isdisjoint({patient_id(n) for n in split["validation"]})
    assert (tiny_model_dir / "data_report.json").exists()


@pytest.mark.slow
def test_evaluate_writes_metrics_plots_and_predictions(tiny_model_dir, small_data, tmp_path):
    result = run_script("evaluate.py", "--model", str(tiny_model_dir), "--data", str(small_data), "--split", "test",
                        "--output-dir", str(tmp_path), "--bootstrap", "200")
    assert "| recall |" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and metrics["n"] == 24
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert tn + fp == 12 and fn + tp == 12
    assert set(metrics["ci95"]) >= {"accuracy", "recall", "specificity", "roc_auc"}
    assert metrics["threshold"] == PneumoniaClassifier.from_pretrained(tiny_model_dir).config.threshold
    for picture in ("roc.png", "pr.png", "confusion_matrix.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0] == "image,label,prob_pneumonia,predicted" and len(rows) == 25


@pytest.mark.slow
def test_training_curves_picture_from_the_training_log(tiny_model_dir, tmp_path):
    picture = tmp_path / "curves.png"
    printed = printed_by(training_curves, ["--run", f"tiny={tiny_model_dir}", "--output", picture])  # in this process
    assert printed.strip() == f"wrote {picture}"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000


@pytest.mark.slow
def test_validation_table_appends_rows_and_keeps_every_command(tiny_model_dir, small_data, tmp_path):
    table = tmp_path / "validation_results.json"
    log = json.loads((tiny_model_dir / "training_log.json").read_text())
    chosen = next(r for r in log["history"] if (r["epoch"], r["weights"]) == (log["best_epoch"], log["best_weights"]))
    for label, extra in (("first", []), ("second", ["--append"])):  # the command's own main, in this process
        validation_results(["--data", str(small_data), "--logged", f"{label}={tiny_model_dir}", "--output", str(table),
                            *extra])
    written = json.loads(table.read_text())
    assert [row["label"] for row in written["rows"]] == ["first", "second"]
    assert written["rows"][1]["log_loss"] == chosen["val_calibrated_loss"]
    assert len(written["commands"]) == 2 and written["commands"][1].endswith("--append")
    validation_results(["--data", str(small_data), "--logged", f"alone={tiny_model_dir}",
                        "--run", f"network={tiny_model_dir.parent}", "--output", str(table)])  # no --append: starts again
    rows = json.loads(table.read_text())["rows"]
    assert [row["label"] for row in rows] == ["alone", "network"]


@pytest.mark.slow
def test_offline_pretrained_run_stops_with_one_sentence(small_data, tmp_path):
    result = run_script("train.py", "--data", str(small_data), "--output-dir", str(tmp_path), "--model", "test_resnet",
                        "--epochs", "1", check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert "pass --no-pretrained" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_mixup_with_an_odd_batch_stops_with_one_sentence(small_data, tmp_path):
    line = refusal(train_cli, "--data", small_data, "--output-dir", tmp_path, *TINY_TRAIN_ARGS, "--batch-size", "7",
                   "--mixup", "0.2")
    assert line == "--mixup and --cutmix pair the images of a batch: make --batch-size even (it is 7)."


@pytest.mark.slow
def test_balanced_sampler_is_sharded_across_two_processes(tmp_path):
    out = tmp_path / "probe.json"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    str(REPO / "tests" / "distributed_sampler_probe.py"), str(out)],
                   check=True, capture_output=True, timeout=300)
    probe = json.loads(out.read_text())
    first, second = (p["indices"] for p in sorted(probe["processes"], key=lambda p: p["rank"]))
    draw = probe["single_process_draw"]
    assert len(first) == len(second) == 56  # 120 draws, batches of 8, last partial dropped, split in two
    assert Counter(first + second) == Counter(draw[:112])  # together they are exactly the one draw
    batches = [draw[i:i + 8] for i in range(0, 112, 8)]
    assert first == sum(batches[0::2], []) and second == sum(batches[1::2], [])


@pytest.mark.slow
def test_two_process_distributed_training(small_data, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "train.py", "--data", str(small_data),
         "--output-dir", str(tmp_path), "--epochs", "2", *TINY_TRAIN_ARGS, "--mixed-precision", "auto"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert log["num_processes"] == 2 and [r["epoch"] for r in log["history"]] == [1, 2]  # the moving average
    # auto: bf16 where this CPU runs it faster than fp32, as the log records it
    assert log["args"]["mixed_precision"] == ("bf16" if fast_bf16(torch.device("cpu")) else "no")
    Predictor.from_pretrained(tmp_path / "model")


def _assert_checkpoint_complete(root: Path) -> None:
    checkpoint = latest_checkpoint(root)
    if checkpoint is None:
        return
    assert not checkpoint.name.endswith(".tmp")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["epoch"] == int(checkpoint.name.split("-")[1])
    load_file(str(checkpoint / "model.safetensors"))  # complete and readable


@pytest.mark.slow
def test_sigkilled_run_resumes_and_matches_an_uninterrupted_run(small_data, tmp_path):
    # with mixup and cutmix on, so that their random draws must resume where they stopped too; what is compared is
    # the trained network, so neither run finalizes
    args = ["train.py", "--data", str(small_data), "--epochs", "5", "--mixup", "0.4", "--cutmix", "1.0", "--no-finalize",
            *TINY_TRAIN_ARGS]
    reference = tmp_path / "reference"
    run_script(*args, "--output-dir", str(reference))

    interrupted = tmp_path / "interrupted"
    for kill_after_epoch in (0, 2):  # kill twice, each time while later epochs are being written
        process = subprocess.Popen([sys.executable, *args, "--output-dir", str(interrupted), "--resume"], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline:
            checkpoint = latest_checkpoint(interrupted / "checkpoints")
            if checkpoint and int(checkpoint.name.split("-")[1]) >= kill_after_epoch:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        _assert_checkpoint_complete(interrupted / "checkpoints")
    result = run_script(*args, "--output-dir", str(interrupted), "--resume")
    assert "resumed from" in result.stdout + result.stderr

    done = json.loads((interrupted / "training_log.json").read_text())
    expected = json.loads((reference / "training_log.json").read_text())
    assert [r["epoch"] for r in done["history"]] == [1, 2, 3, 4, 5]  # the moving average, each epoch
    for mine, theirs in zip(done["history"], expected["history"], strict=True):
        assert mine["weights"] == theirs["weights"]
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], abs=1e-5)
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-5)
    ours, ref = (load_file(str(run / "trained" / "model.safetensors")) for run in (interrupted, reference))
    assert all(np.allclose(ours[k].numpy(), ref[k].numpy(), atol=1e-5) for k in ref)
    assert not list((interrupted / "checkpoints").glob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_unreachable_hub_dataset_is_one_sentence(script, tmp_path, tiny_model_dir):
    model = ["--model", str(tiny_model_dir)] if script == "evaluate.py" else []
    result = run_script(script, "--data", "someone/no-such-dataset", "--output-dir", str(tmp_path), *model, check=False,
                        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Could not load the dataset 'someone/no-such-dataset'")


TCMALLOC_PROBE = """
import os
from modeling.runtime.host import use_tcmalloc
pid = os.getpid()
use_tcmalloc()
print(pid, "tcmalloc" in open("/proc/self/maps").read())
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="LD_PRELOAD and /proc are Linux")
def test_training_processes_re_execute_under_tcmalloc_once(tmp_path):
    from modeling.runtime.host import find_tcmalloc
    if find_tcmalloc() is None:
        pytest.skip("tcmalloc is not installed (apt install libtcmalloc-minimal4; .ci/run installs it)")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PNEUMONIA_NO_TCMALLOC")}
    probe = subprocess.Popen([sys.executable, "-c", TCMALLOC_PROBE], env=env, stdout=subprocess.PIPE, text=True)
    output = probe.communicate(timeout=120)[0]
    pid, loaded = output.split()
    assert probe.returncode == 0 and loaded == "True"
    assert int(pid) == probe.pid  # the same process: torchrun and accelerate keep tracking it
    opted_out = subprocess.run([sys.executable, "-c", TCMALLOC_PROBE], capture_output=True, text=True,
                               env=env | {"PNEUMONIA_NO_TCMALLOC": "1"}, check=True)
    assert opted_out.stdout.split()[1] == "False"
