"""scripts/publish_bundle.py and modeling/analysis/replacement.py: a candidate replaces the bundled model only when the rule, on validation and the shortcut
scores, chooses it, and the replacement is whole: the new files with their card, the old model's test metrics kept,
its scores left to docs/."""
import json
import shutil

import pytest

from modeling.analysis.replacement import replaces as rule_replaces
from modeling.runtime.config import ModelConfig
from modeling.training.run_log import finalized_into
from scripts import publish_bundle
from tests.helpers import REPO

BUNDLE = REPO / "weights" / "pneumonia-resnet50"
BUNDLED_TEST = json.loads((BUNDLE / "eval" / "metrics.json").read_text())


BUNDLED = {"as_is": 0.11, "changes": 0.20, "flipped_black": 0.17, "flipped_crop": 0.19,
           "gradcam_in_lungs_pneumonia": 0.43}


@pytest.mark.parametrize("change, replaces", [
    ({}, True),  # as good on every criterion
    ({"as_is": 0.11 * 1.09, "flipped_black": 0.02, "flipped_crop": 0.03}, True),  # a little worse as is, in the margin
    ({"as_is": 0.11 * 1.11}, False),  # worse as is beyond the margin
    ({"changes": 0.2001}, False),  # worse under the robustness changes
    ({"flipped_black": 0.18}, False),
    ({"flipped_crop": 0.20}, False),
    ({"gradcam_in_lungs_pneumonia": 0.43 - 0.021}, False),
    ({"gradcam_in_lungs_pneumonia": 0.43 - 0.019}, True),
])
def test_the_rule_reads_validation_and_the_shortcut_scores_only(change, replaces):
    verdict, rows = rule_replaces({**BUNDLED, **change}, BUNDLED)
    assert verdict is replaces
    assert len(rows) == 5 and all(set(row) == {"criterion", "candidate", "bundled", "holds", "needs"} for row in rows)
    assert sum(not row["holds"] for row in rows) == (0 if replaces else 1)


def test_install_replaces_the_folder_whole_and_keeps_the_old_test_metrics(tmp_path):
    weights, bundle, history = tmp_path / "weights", tmp_path / "bundle-v5", tmp_path / "history"
    shutil.copytree(BUNDLE, weights)
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("README.md", "xray_gate_eval"))
    (bundle / "shortcuts").mkdir()
    (bundle / "shortcuts" / "shortcuts.json").write_text("{}")
    new_test = {**BUNDLED_TEST, "accuracy": 0.97}
    (bundle / "eval" / "metrics.json").write_text(json.dumps(new_test))

    publish_bundle.install(bundle, weights, history)

    old_name = finalized_into(ModelConfig.load(BUNDLE / "config.json")).rsplit("/", 1)[-1]
    assert json.loads((history / f"{old_name}.test-metrics.json").read_text()) == BUNDLED_TEST
    assert json.loads((weights / "eval" / "metrics.json").read_text()) == new_test
    assert not (weights / "shortcuts").exists(), "scores go to docs/, not into the model folder"
    assert (weights / "xray_gate_eval" / "report.json").exists(), "the same gate keeps its evaluation"
    card = (weights / "README.md").read_text()
    assert "| accuracy | 0.9700 |" in card, "the card is written from the new files"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle-v5", "history", "weights"], "no partial folder left"


@pytest.mark.slow
def test_decide_writes_the_rules_inputs_and_its_decision(tiny_model_dir, small_data, tmp_path):
    candidate, bundled = tmp_path / "candidate", tmp_path / "bundled"
    for folder in (candidate, bundled):
        shutil.copytree(tiny_model_dir, folder)
    scores = {"outside_thorax_black": {"flipped": 0.1}, "cropped_to_thorax": {"flipped": 0.2},
              "gradcam_in_lungs_pneumonia": 0.4}
    (candidate / "shortcuts").mkdir()
    (candidate / "shortcuts" / "shortcuts.json").write_text(json.dumps(scores))
    (tmp_path / "bundled-shortcuts.json").write_text(json.dumps(scores))

    decision = publish_bundle.decide(candidate, str(small_data), bundled, tmp_path / "history",
                                     tmp_path / "bundled-shortcuts.json")

    assert decision == json.loads((candidate / "decision.json").read_text())
    assert decision["replaces"], "the same network and scores on both sides meet every criterion"
    [cached] = (tmp_path / "history").glob("*.network-scores.json")
    network = json.loads(cached.read_text())
    assert network["as_is"] == decision["criteria"][0]["bundled"] == decision["criteria"][0]["candidate"]
    assert set(network["per_change"]) > {"as is"} and network["changes"] > 0
    assert publish_bundle.chosen(candidate)
    (candidate / "model.safetensors").write_bytes((candidate / "model.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    assert not publish_bundle.chosen(candidate), "a decision holds for the weights it was made on"
