"""The replacement rule, and the publishing of what a training window made (scripts/make_bundle.sh).

    python -m scripts.publish_bundle decide --candidate runs/window/model    # the rule's decision.json
    python -m scripts.publish_bundle chosen --candidate runs/window/model    # exit 0 when the rule chose it
    python -m scripts.publish_bundle publish --candidate runs/window/model --data ../shared/data/chest_xray

The rule (`modeling.analysis.replacement.replaces`) was written before any candidate's test figures were seen, and
reads validation and the shortcut scores alone.

`publish` records the decision in docs/bundle_history/, and when the rule chose the candidate and its one test
evaluation exists, installs it as weights/pneumonia-resnet50 whole, with its card, keeping the old model's test
metrics beside the decision. Nothing is committed: read `git diff`, then commit.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from modeling.hub import build_card
from modeling.runtime.artifacts import split_fingerprint_of
from modeling.runtime.config import ModelConfig
from modeling.analysis.replacement import replaces, rule_inputs
from modeling.runtime.files import SPLIT_NAME, file_sha256, folder_written_whole, write_json_atomic
from modeling.training.run_log import finalized_into, shown, shown_in
from scripts import render_docs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
WEIGHTS = ROOT / "weights" / "pneumonia-resnet50"
HISTORY = DOCS / "bundle_history"
REPO_ID = "pneumonia-xray/pneumonia-resnet50"
DECISION = "decision.json"
def bundled_shortcuts(bundled: Path) -> Path:
    """The bundled model's shortcut scores as deployed: published under its name (bundle-before.json: the scores of
    the bundle from before the names, bundle-v3)."""
    named = DOCS / "shortcuts" / f"{_name(bundled)}.json"
    return named if named.exists() else DOCS / "shortcuts" / "bundle-before.json"


def decide(candidate: Path, data: str, bundled: Path = WEIGHTS, history: Path = HISTORY,
           bundled_scores: Path | None = None) -> dict:
    """Apply the rule and write it, with its inputs, to CANDIDATE/decision.json; the bundled network's validation
    log-losses are kept in `history`, its shortcut scores read from `bundled_scores` (default: docs/shortcuts/)."""
    if split_fingerprint_of(candidate / SPLIT_NAME) != split_fingerprint_of(bundled / SPLIT_NAME):
        sys.exit("The candidate was trained on another split than the bundled model: their validation sides differ.")
    new = rule_inputs(candidate, candidate / "shortcuts" / "shortcuts.json", data, candidate / "network_scores.json")
    old = rule_inputs(bundled, bundled_scores or bundled_shortcuts(bundled), data,
                      history / f"{_name(bundled)}.network-scores.json")
    chosen, rows = replaces(new, old)
    decision = {"replaces": chosen, "candidate": shown(candidate), "bundled": _name(bundled),
                "candidate_weights_sha256": file_sha256(candidate / "model.safetensors"),
                "rule": "modeling/analysis/replacement.py: replaces", "criteria": rows}
    write_json_atomic(candidate / DECISION, decision)
    for row in rows:
        print(f"{'holds ' if row['holds'] else 'FAILS '} {row['criterion']}: {row['candidate']:.4f} ({row['needs']} "
              f"{row['bundled']:.4f})")
    print(("The rule chose the candidate." if chosen else "The rule keeps the bundled model.")
          + f" ({candidate / DECISION})")
    return decision


def _name(model_dir: Path) -> str:
    """The run a model folder was finalized from (runs/stage2/model: "stage2")."""
    return Path(finalized_into(ModelConfig.load(model_dir / "config.json"))).name


def chosen(candidate: Path) -> bool:
    path = candidate / DECISION
    return path.exists() and json.loads(path.read_text())["replaces"] and json.loads(path.read_text())[
        "candidate_weights_sha256"] == file_sha256(candidate / "model.safetensors")


def install(bundle: Path, weights: Path, history: Path) -> None:
    """Replace `weights` by a copy of `bundle` (its scores stay in docs/) with its card; the chest X-ray gate's
    evaluation comes along when the gate is the same file. The old folder's test metrics are kept in `history`."""
    old = ModelConfig.load(weights / "config.json")
    new = ModelConfig.load(bundle / "config.json")
    history.mkdir(parents=True, exist_ok=True)
    shutil.copy2(weights / "eval" / "metrics.json",
                 history / f"{Path(finalized_into(old)).name}.test-metrics.json")
    same_gate = bool(old.xray_gate) and old.xray_gate.get("sha256") == new.xray_gate.get("sha256")
    with folder_written_whole(weights) as out:
        shutil.copytree(bundle, out, ignore=shutil.ignore_patterns("shortcuts", "network_scores.json"),
                        dirs_exist_ok=True)
        if same_gate and (weights / "xray_gate_eval").is_dir():
            shutil.copytree(weights / "xray_gate_eval", out / "xray_gate_eval")
        build_card(out, REPO_ID).save(out / "README.md")
    if not same_gate:
        print("The bundle's chest X-ray gate differs from the old one's: measure it with scripts.xray_gate_report.")


def publish(candidate: Path, weights: Path = WEIGHTS, history: Path = HISTORY, docs: Path = DOCS) -> bool:
    """Record the decision and the candidate's shortcut scores in docs/; install the candidate where the rule chose
    it and its test evaluation exists. Returns whether it was installed."""
    name = _name(candidate)
    history.mkdir(parents=True, exist_ok=True)
    shutil.copy2(candidate / DECISION, history / f"{name}.decision.json")
    shutil.copy2(candidate / "shortcuts" / "shortcuts.png", docs / "shortcuts" / f"{name}.png")
    (docs / "shortcuts" / f"{name}.json").write_text(shown_in((candidate / "shortcuts" / "shortcuts.json").read_text()))
    if not chosen(candidate):
        print(f"The rule kept the bundled model; {name}'s decision is in {shown(history)}.")
        return False
    if not (candidate / "eval" / "metrics.json").exists():
        sys.exit(f"The rule chose {name}, but its test evaluation is missing: run make_bundle.sh's test stage first.")
    if file_sha256(weights / "model.safetensors") != file_sha256(candidate / "model.safetensors"):
        install(candidate, weights, history)
    render_docs.main([])
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["decide", "chosen", "publish"])
    parser.add_argument("--candidate", type=Path, required=True, help="the finalized candidate folder")
    parser.add_argument("--data", default="../shared/data/chest_xray", help="the data it was trained on")
    args = parser.parse_args(argv)
    if args.action == "decide":
        decide(args.candidate, args.data)
    elif args.action == "chosen":
        sys.exit(0 if chosen(args.candidate) else 1)
    else:
        publish(args.candidate)


if __name__ == "__main__":
    main()
