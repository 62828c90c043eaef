"""Hub packaging: loading from a local folder and an offline Hub cache, timm compatibility, strict loading, card."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors.torch import load_file, save_file

from modeling import ModelLoadError, PneumoniaClassifier, Predictor, load_rgb
from modeling.hub import build_card, model_operations, space_operations
from modeling.training.run_log import (
    MOVED_COMMANDS,
    completed,
    epoch_cost,
    read_training_log,
    runnable,
    training_precision,
)
from scripts.hub import main as hub_main
from tests.helpers import KERMANY, REPO, evaluate_cli, modeling_imports, printed_by, run_script
from tests.hub_cache import add_to_hub_cache

BUNDLE = REPO / "weights" / "pneumonia-resnet50"

REPO_ID = "pneumonia-xray/tiny-test"


@pytest.fixture(scope="module")
def evaluated_model(tiny_model_dir, small_data, tmp_path_factory):
    """The tiny model folder with eval/ written by evaluate.py, as publishing expects."""
    model_dir = tmp_path_factory.mktemp("published") / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("checkpoints"))
    evaluate_cli("--model", model_dir, "--data", small_data, "--split", "test", "--output-dir", model_dir / "eval",
                 "--bootstrap", "200")
    return model_dir


@pytest.fixture(scope="module")
def hub_cache(evaluated_model, tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf-cache")
    files = {name: (evaluated_model / name).read_bytes()
             for name in ("model.safetensors", "config.json", "ood.safetensors", "split.json")}
    add_to_hub_cache(cache, REPO_ID, files)
    older = json.loads(files["config.json"])
    older["inference"]["threshold"] = 0.123
    add_to_hub_cache(cache, REPO_ID, {**files, "config.json": json.dumps(older).encode()}, revision="v0")
    return cache


IMAGES = [sorted((KERMANY / "test" / label).iterdir())[0] for label in ("NORMAL", "PNEUMONIA")]


@pytest.fixture(scope="module")
def offline_process(hub_cache) -> dict:
    """What one user process, offline with the Hub cache above, loads by repo id (tests/offline_hub_probe.py)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "HF_HOME": str(hub_cache.parent / "home")}
    result = subprocess.run([sys.executable, str(REPO / "tests" / "offline_hub_probe.py"), REPO_ID,
                             ",".join(map(str, IMAGES))], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_from_pretrained_reads_a_hub_id_from_the_offline_cache(offline_process, evaluated_model):
    assert offline_process["threshold"] == PneumoniaClassifier.from_pretrained(evaluated_model).config.threshold
    assert offline_process["v0_network_threshold"] == 0.123 and offline_process["architecture"] == "test_resnet"


@pytest.mark.slow
def test_predictor_loads_a_hub_revision_with_its_side_files_from_the_offline_cache(offline_process, evaluated_model):
    local = Predictor.from_pretrained(evaluated_model).probabilities([load_rgb(image) for image in IMAGES])
    np.testing.assert_allclose(offline_process["probabilities"], local, atol=1e-6)
    assert offline_process["v0_threshold"] == 0.123 and offline_process["has_detector"]


@pytest.mark.slow
def test_timm_hf_hub_loader_gives_the_same_logits(offline_process):
    out = offline_process
    assert out["timm_num_classes"] == 2 and out["timm_label_names"] == ["NORMAL", "PNEUMONIA"]
    assert out["timm_input_size"] == [3, 64, 64]
    np.testing.assert_allclose(out["logits"], out["timm_logits"], rtol=0, atol=1e-6)
    assert np.abs(np.asarray(out["logits"])).max() > 0


@pytest.mark.slow
def test_uncached_hub_id_offline_is_one_clear_sentence(offline_process):
    assert offline_process["uncached"].startswith("ModelLoadError |")
    assert "not in the local Hugging Face cache" in offline_process["uncached"]


@pytest.mark.slow
def test_card_metadata_is_valid_and_matches_metrics(evaluated_model):
    card = ModelCard(str(build_card(evaluated_model, REPO_ID, REPO / "model_card.md")))  # parses the YAML front matter like the Hub
    metrics = json.loads((evaluated_model / "eval" / "metrics.json").read_text())
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["library_name"] == "timm"
    assert data["pipeline_tag"] == "image-classification" and "hf-vision/chest-xray-pneumonia" in data["datasets"]
    assert "base_model" not in data  # trained from scratch: there is no base model
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "tiny-test" and len(results) == 6
    for result in results:
        assert result.metric_value == round(metrics[result.metric_type], 4)
    text = card.text
    for needle in ("not a diagnosis", "aged one to five", "Trained from scratch", "hf-hub:" + REPO_ID,
                   "eval/roc.png", "@article{kermany2018identifying", "zoom-out onto black", "### Reproduce"):
        assert needle in text
    # the reproduction commands: training as logged, the batch size pinned so that a GPU runs the same recipe
    log = json.loads((evaluated_model / "training_log.json").read_text())
    commands = re.search(r"### Reproduce\n.*?```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert commands[0].startswith("python train.py") and "--resume" not in commands[0].split()
    assert f"--batch-size {log['args']['batch_size']}" in commands[0]
    assert set(log["command"].split()) - {"--resume"} <= set(commands[0].split())
    table = re.search(r"\| recall \| ([0-9.]+) \| ([0-9.]+)-([0-9.]+) \|", text)
    assert float(table.group(1)) == round(metrics["recall"], 4)
    assert float(table.group(2)) == round(metrics["ci95"]["recall"][0], 3)



def test_the_one_reader_fills_in_what_older_logs_lack_and_keeps_what_they_have(tmp_path):
    old = {"args": {"image_size": 224, "epochs": 1}, "history": [{"epoch": 1, "train_seconds": 10.0}]}
    (tmp_path / "training_log.json").write_text(json.dumps(old))
    log = read_training_log(tmp_path)
    assert (log["best_weights"], log["device"], log["lineage"], log["augmentation"]) == \
        ("weights", "cpu", [], {"recipe": "acquisition"})
    assert log["history"] == [{"epoch": 1, "train_seconds": 10.0, "weights": "weights", "train_size": 224,
                               "device": "cpu", "mixed_precision": "bf16"}]
    bundled = json.loads((BUNDLE / "training_log.json").read_text())
    read = read_training_log(BUNDLE)
    assert all(read["history"][i][key] == value for i, record in enumerate(bundled["history"])
               for key, value in record.items())
    assert read["args"] == {"mixed_precision": "bf16", **bundled["args"]} and read["command"] == bundled["command"]


def test_recorded_commands_are_shown_as_they_run_today():
    """A bundle's records keep the commands that ran; the card and pages show each under its present name (a
    module that still exists) and the server's home as ~."""
    recorded = f"python -m modeling.finalize runs/r --output-dir {Path.home() / 'runs' / 'b'}"
    assert runnable(recorded) == "python -m scripts.finalize runs/r --output-dir ~/runs/b"
    for command in MOVED_COMMANDS.values():
        assert (REPO / (command.split()[2].replace(".", "/") + ".py")).is_file(), command
    assert runnable("python train.py --data d") == "python train.py --data d"


def test_training_hours_at_the_median_epoch_leave_out_a_paused_epoch():
    log = {"args": {"image_size": 224}, "history": [
        {"epoch": 0, "train_size": 128, "train_seconds": 100.0}, {"epoch": 1, "train_size": 128, "train_seconds": 1300.0},
        {"epoch": 1, "train_size": 128, "train_seconds": 1300.0},  # the EMA's record of the same epoch
        {"epoch": 2, "train_size": 128, "train_seconds": 110.0}, {"epoch": 3, "train_seconds": 360.0}]}
    log = completed(log)  # what the log lacks, filled in as its run trained
    cost = epoch_cost(log)
    assert cost["seconds_per_epoch"] == {128: 110.0, 224: 360.0}
    assert cost["hours"] == pytest.approx(1870 / 3600) and cost["median_hours"] == pytest.approx(690 / 3600)
    assert cost["on"] == "on a 2-core CPU" and training_precision(log) == "bf16 autocast"  # logs before either was kept


def test_a_run_resumed_on_other_machines_gives_the_hours_and_precision_of_each():
    log = {"args": {"image_size": 224, "mixed_precision": "bf16"}, "device": "NVIDIA H200", "history": [
        {"epoch": 1, "train_seconds": 7200.0, "device": "2-core AMD EPYC CPU", "mixed_precision": "no"},
        {"epoch": 2, "train_seconds": 3600.0, "device": "2-core AMD EPYC CPU", "mixed_precision": "no"},
        {"epoch": 3, "train_seconds": 36.0, "device": "NVIDIA H200", "mixed_precision": "bf16"}]}
    log = completed(log)
    assert epoch_cost(log)["on"] == "(3.0 h on a 2-core AMD EPYC CPU, 0.0 h on one NVIDIA H200)"
    assert training_precision(log) == "fp32 for 2 epochs, bf16 autocast for 1 epochs (each sitting in what its " \
                                      "machine runs fast)"


@pytest.mark.slow
def test_push_dry_run_lists_files_and_card(evaluated_model):
    printed = printed_by(hub_main, ["push", evaluated_model, "--repo-id", REPO_ID, "--dry-run"])  # in this process
    listed = [line.strip() for line in printed.split("---")[0].splitlines()[1:] if line.strip()]
    assert listed == [op.path_in_repo for op in model_operations(evaluated_model, card="")]
    assert not (evaluated_model / "README.md").exists(), "the card is uploaded from memory, not written beside the weights"
    assert {"model.safetensors", "config.json", "README.md", "eval/metrics.json", "eval/roc.png"} <= set(listed)
    assert "model-index:" in printed


@pytest.mark.slow
@pytest.mark.parametrize("env_extra, expected", [
    ({"HF_TOKEN": "hf_fake_token_for_test", "HF_HUB_OFFLINE": "1"}, "Could not publish to the Hugging Face Hub"),
    ({"HF_TOKEN": ""}, "No Hugging Face token found"),
])
def test_push_without_network_or_token_is_one_sentence(evaluated_model, tmp_path, env_extra, expected):
    env = {**os.environ, "HF_HOME": str(tmp_path), **env_extra}
    result = run_script("-m", "scripts.hub", "push", str(evaluated_model), "--repo-id", REPO_ID, check=False, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(expected) and len(result.stderr.strip().splitlines()) == 1
    assert not (evaluated_model / "README.md").exists()  # a failed push leaves the folder as it was


def test_space_files_and_front_matter():
    readme = (REPO / "README.md").read_text()
    front = readme.split("---")[1]
    gradio_pin = re.search(r"^gradio==(\S+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert re.search(r"^sdk: gradio$", front, re.M) and re.search(r"^app_file: app.py$", front, re.M)
    assert re.search(rf"^sdk_version: {re.escape(gradio_pin)}$", front, re.M) and gradio_pin.count(".") == 2
    assert re.search(r"^models:\n  - \S+/\S+$", front, re.M)
    operations = {op.path_in_repo: op for op in space_operations(REPO, "someone/other-model")}
    assert {"app.py", "requirements.txt", "README.md", "modeling/runtime/model.py"} <= set(operations)
    assert not any(path.startswith(("weights/", "tests/")) for path in operations)
    assert b"  - someone/other-model\n" in operations["README.md"].path_or_fileobj


def test_the_space_ships_the_runtime_alone_and_everything_it_imports():
    operations = {op.path_in_repo for op in space_operations(REPO, "someone/other-model")}
    code = {path for path in operations if path.startswith("modeling/")}
    assert code and all(path == "modeling/__init__.py" or path.startswith("modeling/runtime/") for path in code)
    # every modeling import of the uploaded code (app.py included) is an uploaded file
    imported = {name for path in operations if path.endswith(".py") for name in modeling_imports(REPO / path)}
    files = [Path("modeling", *name.split(".")) if name else Path("modeling") for name in imported]
    wanted = {str(f.with_suffix(".py")) if (REPO / f).with_suffix(".py").exists() else str(f / "__init__.py")
              for f in files}
    assert wanted <= operations, sorted(wanted - operations)



def test_the_space_installs_the_pins_of_the_library_and_its_demo():
    """requirements.txt (what a Space installs) is pyproject.toml's dependencies plus its demo extra, pin for pin."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = (REPO / "requirements.txt").read_text().splitlines()
    space = sorted(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    pinned = [spec.split("#")[0].strip() for spec in project["dependencies"] + project["optional-dependencies"]["demo"]]
    assert space == sorted(pinned) and all("==" in spec for spec in space)

# --- strict loading: every bad checkpoint is refused with a message naming the problem

def _broken_copy(source, tmp_path, weights=None, config=None):
    target = tmp_path / "broken"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    if weights is not None:
        weights(target / "model.safetensors")
    if config is not None:
        config(target / "config.json")
    return target


def _edit_state(edit):
    def apply(path):
        state = load_file(str(path))
        edit(state)
        save_file(state, str(path))
    return apply


def _edit_config(edit):
    def apply(path):
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return apply


BAD_CHECKPOINTS = {
    "corrupt weights": (dict(weights=lambda p: p.write_bytes(os.urandom(4096))), "not a readable safetensors"),
    "truncated weights": (dict(weights=lambda p: p.write_bytes(p.read_bytes()[:100_000])), "not a readable safetensors"),
    "pickle instead of safetensors": (dict(weights=lambda p: torch.save({"a": torch.zeros(1)}, p)),
                                      "not a readable safetensors"),
    "missing key": (dict(weights=_edit_state(lambda s: s.pop("fc.weight"))), "1 missing keys (e.g. fc.weight)"),
    "unexpected key": (dict(weights=_edit_state(lambda s: s.update(extra=torch.zeros(3)))), "1 unexpected keys (e.g. extra)"),
    "wrong shape": (dict(weights=_edit_state(lambda s: s.update({"fc.bias": torch.zeros(5)}))), "fc.bias (5,) != (2,)"),
    "no weights": (dict(weights=lambda p: p.unlink()), "has no model.safetensors"),
    "config not json": (dict(config=lambda p: p.write_text("{not json")), "not valid JSON"),
    "config lacks architecture": (dict(config=_edit_config(lambda d: d.pop("architecture"))), "lacks the field 'architecture'"),
    "num_classes mismatch": (dict(config=_edit_config(lambda d: d.update(num_classes=3))), "num_classes=3"),
    "threshold out of range": (dict(config=_edit_config(lambda d: d["inference"].update(threshold=1.5))), "threshold must lie"),
    "bad test-time view": (dict(config=_edit_config(lambda d: d["inference"].update(tta_views=[{"zoom": 0, "degrees": 5}]))),
                           "each of tta_views must be"),
    "unknown interpolation": (dict(config=_edit_config(lambda d: d["pretrained_cfg"].update(interpolation="sideways"))),
                              "interpolation 'sideways' is not a mode timm knows"),
    "unknown architecture": (dict(config=_edit_config(lambda d: d.update(architecture="no_such_net"))), "no_such_net"),
    "architecture mismatch": (dict(config=_edit_config(lambda d: d.update(architecture="resnet18"))), "do not match the architecture"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoints_are_refused_by_name(tiny_model_dir, tmp_path, case):
    breakage, message = BAD_CHECKPOINTS[case]
    broken = _broken_copy(tiny_model_dir, tmp_path, **breakage)
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        PneumoniaClassifier.from_pretrained(broken)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="No model folder"):
        PneumoniaClassifier.from_pretrained(tmp_path / "nothing-here")
