"""scripts/publish_bundle.py: a bundle replaces the bundled model only when it is better on the test split, and the
replacement is whole: the new files with their card, the old model's test metrics kept, its scores left to docs/."""
import json
import shutil

import pytest

from modeling.config import ModelConfig
from scripts import publish_bundle, render_docs

from tests.helpers import REPO

BUNDLE = REPO / "weights" / "pneumonia-resnet50"
BUNDLED_TEST = json.loads((BUNDLE / "eval" / "metrics.json").read_text())


@pytest.mark.parametrize("accuracy, recall, better", [
    (BUNDLED_TEST["accuracy"] + 0.01, publish_bundle.SENSITIVITY_FLOOR, True),
    (BUNDLED_TEST["accuracy"], 0.99, False),  # not more accurate
    (BUNDLED_TEST["accuracy"] + 0.05, publish_bundle.SENSITIVITY_FLOOR - 0.001, False),  # misses more pneumonia
])
def test_a_bundle_replaces_the_bundled_model_only_when_better_on_test(accuracy, recall, better):
    verdict, why = publish_bundle.better_on_test({**BUNDLED_TEST, "accuracy": accuracy, "recall": recall}, BUNDLED_TEST)
    assert verdict is better
    assert f"{accuracy:.1%}" in why and f"{BUNDLED_TEST['accuracy']:.1%}" in why


def test_the_sensitivity_floor_is_the_highest_published_reference():
    assert publish_bundle.SENSITIVITY_FLOOR == max(r["recall"] for _, r in render_docs.REFERENCES if "recall" in r)


def test_scores_are_copied_under_one_stem_per_model(tmp_path):
    runs = tmp_path / "runs"
    seeds = [runs / "r50-sb-seed1", runs / "r50-sb-seed12"]
    stems = publish_bundle.score_stems(seeds, runs / "ensemble", runs / "student", runs / "bundle-v5")
    assert list(stems) == ["seed1", "seed12", "ensemble", "student", "bundle"]
    for stem, folder in stems.items():
        folder.mkdir(parents=True)
        (folder / "shortcuts.json").write_text(json.dumps({"title": stem}))
        (folder / "shortcuts.png").write_bytes(b"\x89PNG " + stem.encode())
    publish_bundle.copy_scores(stems, tmp_path / "docs")
    assert json.loads((tmp_path / "docs" / "seed12.json").read_text()) == {"title": "seed12"}
    assert (tmp_path / "docs" / "bundle.png").read_bytes().endswith(b"bundle")


def test_install_replaces_the_folder_whole_and_keeps_the_old_test_metrics(tmp_path):
    weights, bundle, history = tmp_path / "weights", tmp_path / "bundle-v5", tmp_path / "history"
    shutil.copytree(BUNDLE, weights)
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("README.md", "xray_gate_eval"))
    (bundle / "shortcuts").mkdir()
    (bundle / "shortcuts" / "shortcuts.json").write_text("{}")
    new_test = {**BUNDLED_TEST, "accuracy": 0.97}
    (bundle / "eval" / "metrics.json").write_text(json.dumps(new_test))

    publish_bundle.install(bundle, weights, history)

    old_name = render_docs.finalized_into(ModelConfig.load(BUNDLE / "config.json")).rsplit("/", 1)[-1]
    assert json.loads((history / f"{old_name}.test-metrics.json").read_text()) == BUNDLED_TEST
    assert json.loads((weights / "eval" / "metrics.json").read_text()) == new_test
    assert not (weights / "shortcuts").exists(), "scores go to docs/, not into the model folder"
    assert (weights / "xray_gate_eval" / "report.json").exists(), "the same gate keeps its evaluation"
    card = (weights / "README.md").read_text()
    assert "| accuracy | 0.9700 |" in card, "the card is written from the new files"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle-v5", "history", "weights"], "no partial folder left"


def test_a_second_publish_adds_no_validation_row_twice(tmp_path):
    runs = tmp_path / "runs"
    seeds = [runs / "r50-sb-seed1", runs / "r50-sb-seed2"]
    rows = publish_bundle.validation_rows(seeds, runs / "student", runs / "bundle-v5", bundled=True)
    first = publish_bundle.unlisted(rows, [])
    assert first[0] == f"--run=shortcut-breaking augmentation, 48 epochs at 128/176/224 px, from scratch, seed 1={seeds[0]}"
    assert f"--ensemble=the ensemble of those 2 seeds={seeds[0]},{seeds[1]}" in first
    # the table as scripts.validation_results writes it: an ensemble's folders as a list, another row's as a string
    table = [{"label": label, "model_dir": [str(f) for f in folders] if kind == "ensemble" else str(folders[0])}
             for kind, label, folders in rows[:-1]]
    assert publish_bundle.unlisted(rows, table) == [first[-1]]
