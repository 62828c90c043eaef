"""train.py --init-from and --time-budget: a network continued from a model folder, on that folder's split, within a
wall-clock budget, with its lineage in the log; and the refusals that keep validation images unseen."""
import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from modeling.runtime.artifacts import split_fingerprint_of

from .helpers import TINY_TRAIN_ARGS, refusal, run_script, train_cli

pytestmark = pytest.mark.slow
# the tiny network's arguments without --model: a continued run takes the architecture of the folder it continues
CONTINUE_ARGS = [arg for arg in TINY_TRAIN_ARGS if arg not in ("--model", "test_resnet")]


@pytest.fixture(scope="module")
def continued(tmp_path_factory, small_data, tiny_model_dir):
    out = tmp_path_factory.mktemp("continued")
    run_script("train.py", "--data", str(small_data), "--output-dir", str(out), "--init-from", str(tiny_model_dir),
               "--time-budget", "10s", "--budget-sizes", "48:1,64:1", "--augment", "thorax", "--no-finalize",
               *CONTINUE_ARGS)
    return out


def test_a_continued_run_starts_from_the_folders_network_on_its_split(continued, tiny_model_dir):
    log = json.loads((continued / "training_log.json").read_text())
    assert log["init_from"] == str(tiny_model_dir)
    assert log["args"]["model"] == "test_resnet"
    assert split_fingerprint_of(continued / "split.json") == split_fingerprint_of(tiny_model_dir / "split.json")
    # the starting network's validation equals the folder's own network's: its weights were loaded, not random ones
    earlier = json.loads((tiny_model_dir / "training_log.json").read_text())["history"][-1]
    assert log["start_validation"]["val_loss"] == pytest.approx(earlier["val_loss"], abs=1e-4)
    before, after = (load_file(str(path)) for path in (tiny_model_dir / "model.safetensors",
                                                       continued / "trained" / "model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not np.allclose(before[k].float().numpy(), after[k].numpy()) for k in before), "it trained"


def test_the_log_carries_the_lineage_and_what_the_budget_became(continued, tiny_model_dir):
    log = json.loads((continued / "training_log.json").read_text())
    earlier = json.loads((tiny_model_dir / "training_log.json").read_text())
    [stage] = log["lineage"]
    assert stage["command"] == earlier["command"] and stage["epochs"] == 2 and stage["recipe"] == "shortcut-breaking"
    assert stage["hours"] > 0 and stage["on"].startswith("on a ")
    budget = log["budget"]
    assert budget["budget_s"] == 10 and budget["plan"] == []
    sizes = [record["train_size"] for record in log["history"]]
    assert sizes == sorted(sizes) and set(sizes) <= {48, 64}
    assert log["args"]["epochs"] == len(sizes)
    assert sum(count for _, count in log["args"]["size_schedule"]) == len(sizes)
    assert budget["steps_done"] == sum(record["train_steps"] for record in log["history"])
    assert log["augmentation"]["recipe"] == "thorax" and log["augmentation"]["thorax_crop_probability"] > 0


def _refusal(small_data, tmp_path, *args: str) -> str:
    """What train.py, run in this process, stops with before it trains (the continued run above is the real process)."""
    return refusal(train_cli, "--data", small_data, "--output-dir", tmp_path / "run", *args, "--epochs", "1",
                   *CONTINUE_ARGS)


def test_another_split_is_refused(small_data, tiny_model_dir, tmp_path):
    split = json.loads((tiny_model_dir / "split.json").read_text())
    split["train"], split["validation"] = split["train"][2:], split["validation"] + split["train"][:2]
    (tmp_path / "other-split.json").write_text(json.dumps(split))
    line = _refusal(small_data, tmp_path, "--init-from", str(tiny_model_dir), "--split-file",
                    str(tmp_path / "other-split.json"))
    assert "is not the split --init-from's network was trained on" in line


def test_another_architecture_is_refused(small_data, tiny_model_dir, tmp_path):
    line = _refusal(small_data, tmp_path, "--init-from", str(tiny_model_dir), "--model", "resnet18")
    assert line.startswith("--model resnet18 but --init-from") and "test_resnet" in line


@pytest.mark.parametrize("damage", ["truncated weights", "no split", "no config"])
def test_a_damaged_folder_is_refused_in_one_sentence(small_data, tiny_model_dir, tmp_path, damage):
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, folder)
    if damage == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (folder / {"no split": "split.json", "no config": "config.json"}[damage]).unlink()
    line = _refusal(small_data, tmp_path, "--init-from", str(folder))
    assert str(tmp_path) not in line or damage != "truncated weights"
    assert line.endswith(".")
