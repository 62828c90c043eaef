"""Publish what scripts/make_bundle.sh made: its scores into docs/, and its bundle into weights/ where it is better.

    python -m scripts.publish_bundle --data ../shared/data/chest_xray --seeds runs/r50-sb-seed1 ... \\
        --ensemble runs/ensemble --student runs/r50-sb-student --bundle runs/bundle-v5

make_bundle.sh's `publish` stage runs it with its own folders. It writes
- docs/shortcuts/{seedN,ensemble,student,bundle}.{json,png}: each model's shortcut scores (modeling.shortcuts);
- docs/ensemble/test_metrics.json: the ensemble on the test split, beside the bundle's in the README;
- rows appended to docs/validation_results.json: each seed, the ensemble, the student, and the bundle as deployed.
Then, when the bundle is better on the test split than the bundled model (`better_on_test`), it replaces
weights/pneumonia-resnet50 whole, with its card, and the old model's test metrics go to docs/bundle_history/.
Last, it renders docs/shortcuts.md, the README's results and the docs pages. Nothing is committed: read
`git diff`, then commit.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Any

from modeling.config import ModelConfig
from modeling.files import file_sha256, folder_written_whole
from modeling.hub import build_card
from scripts import render_docs, shortcut_report, validation_results

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
WEIGHTS = ROOT / "weights" / "pneumonia-resnet50"
REPO_ID = "pneumonia-xray/pneumonia-resnet50"
# the highest sensitivity the published references give on the same test split: a replacement must keep at least it
SENSITIVITY_FLOOR = max(reference.get("recall", 0.0) for _, reference in render_docs.REFERENCES)


def better_on_test(new: dict[str, Any], old: dict[str, Any]) -> tuple[bool, str]:
    """Whether the new model replaces the old, from their test metrics at each one's own operating point: higher
    accuracy, and a sensitivity no published reference beats (a missed pneumonia is the costly error)."""
    better = new["accuracy"] > old["accuracy"] and new["recall"] >= SENSITIVITY_FLOOR
    return better, (f"test accuracy {new['accuracy']:.1%} against {old['accuracy']:.1%} for the bundled model, "
                    f"sensitivity {new['recall']:.1%} (at least {SENSITIVITY_FLOOR:.1%} kept)")


def score_stems(seeds: list[Path], ensemble: Path, student: Path, bundle: Path) -> dict[str, Path]:
    """docs/shortcuts stem -> the folder modeling.shortcuts wrote for that model."""
    stems = {f"seed{_seed(run)}": run / "shortcuts" for run in seeds}
    return {**stems, "ensemble": ensemble / "shortcuts", "student": student / "shortcuts", "bundle": bundle / "shortcuts"}


def _seed(run: Path) -> str:
    """The seed a make_bundle.sh run folder is named after (r50-sb-seed1: "1"), else the folder's name."""
    number = re.search(r"seed(\d+)$", run.name)
    return number.group(1) if number else run.name


def copy_scores(stems: dict[str, Path], into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for stem, folder in stems.items():
        for suffix in (".json", ".png"):
            shutil.copy2(folder / f"shortcuts{suffix}", into / f"{stem}{suffix}")


def validation_rows(seeds: list[Path], student: Path, bundle: Path, bundled: bool) -> list[tuple[str, str, list[Path]]]:
    """(kind, label, folders) of the rows each model adds to docs/validation_results.json."""
    recipe = "shortcut-breaking augmentation, 48 epochs at 128/176/224 px, from scratch"
    return [*(("run", f"{recipe}, seed {_seed(run)}", [run]) for run in seeds),
            ("ensemble", f"the ensemble of those {len(seeds)} seeds", seeds),
            ("run", "one ResNet50 distilled from that ensemble", [student]),
            ("deployed", f"the same, as deployed ({'bundled' if bundled else 'not bundled: worse on the test split'})",
             [bundle])]


def unlisted(rows: list[tuple[str, str, list[Path]]], listed: list[dict[str, Any]]) -> list[str]:
    """scripts.validation_results arguments for the rows the table does not hold yet (same label, same folders)."""
    held = {(row["label"], json.dumps(row["model_dir"])) for row in listed}
    return [f"--{kind}={label}={','.join(map(str, folders))}" for kind, label, folders in rows
            if (label, json.dumps(_stored_model_dir(kind, folders))) not in held]


def _stored_model_dir(kind: str, folders: list[Path]) -> str | list[str]:
    """A row's model_dir as scripts.validation_results stores it: an ensemble's folders as a list."""
    return [str(f) for f in folders] if kind == "ensemble" else str(folders[0])


def install(bundle: Path, weights: Path, history: Path) -> None:
    """Replace `weights` by a copy of `bundle` (its scores stay in docs/) with its card; the chest X-ray gate's
    evaluation comes along when the gate is the same file. The old folder's test metrics are kept in `history`."""
    old = ModelConfig.load(weights / "config.json")
    new = ModelConfig.load(bundle / "config.json")
    history.mkdir(parents=True, exist_ok=True)
    shutil.copy2(weights / "eval" / "metrics.json",
                 history / f"{Path(render_docs.finalized_into(old)).name}.test-metrics.json")
    same_gate = bool(old.xray_gate) and old.xray_gate.get("sha256") == new.xray_gate.get("sha256")
    with folder_written_whole(weights) as out:
        shutil.copytree(bundle, out, ignore=shutil.ignore_patterns("shortcuts"), dirs_exist_ok=True)
        if same_gate and (weights / "xray_gate_eval").is_dir():
            shutil.copytree(weights / "xray_gate_eval", out / "xray_gate_eval")
        build_card(out, REPO_ID).save(out / "README.md")
    if not same_gate:
        print("The bundle's chest X-ray gate differs from the old one's: measure it with scripts.xray_gate_report.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", type=Path, nargs="+", required=True, help="the ensemble's training runs")
    parser.add_argument("--ensemble", type=Path, required=True, help="the folder of the ensemble's scores and evaluations")
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True, help="the student as modeling.finalize deployed it")
    args = parser.parse_args(argv)

    copy_scores(score_stems(args.seeds, args.ensemble, args.student, args.bundle), DOCS / "shortcuts")
    (DOCS / "ensemble").mkdir(exist_ok=True)
    shutil.copy2(args.ensemble / "eval-test" / "metrics.json", render_docs.ENSEMBLE_TEST)

    installed = file_sha256(WEIGHTS / "model.safetensors") == file_sha256(args.bundle / "model.safetensors")
    better, why = (True, "it is the bundled model already") if installed else better_on_test(
        json.loads((args.bundle / "eval" / "metrics.json").read_text()),
        json.loads((WEIGHTS / "eval" / "metrics.json").read_text()))
    print(("Bundling it: " if better else "Not bundling it: ") + why)
    rows = validation_rows(args.seeds, args.student, args.bundle, bundled=better)
    table = DOCS / "validation_results.json"
    new_rows = unlisted(rows, json.loads(table.read_text())["rows"])  # a second publish adds no row twice
    if new_rows:
        validation_results.main(["--data", args.data, "--append", *new_rows, "--output", str(table)])
    if better and not installed:
        install(args.bundle, WEIGHTS, DOCS / "bundle_history")
    shortcut_report.main(["--data", args.data])
    render_docs.main([])


if __name__ == "__main__":
    main()
