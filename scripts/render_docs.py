"""Render the README's results and the pages of docs/ from the files the runs wrote; no number is typed by hand.

    python -m scripts.render_docs [--model weights/pneumonia-resnet50]
    python -m scripts.render_docs --check        # fails if a page is out of date with the files (the tests run it)

This script collects numbers and tables from the bundled model's folder and the run files under docs/; the words are
in the Jinja templates of docs/templates/, one per page (`PAGES`) and per README block. A missing file leaves its
section naming the command that writes it.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from modeling.analysis.replacement import AS_IS_MARGIN
from modeling.analysis.report import (
    development_summary,
    format_ood,
    format_robustness,
    format_table,
    gate_summary,
    largest_robustness_cost,
)
from modeling.hub import reproduction_commands
from modeling.runtime.config import ModelConfig
from modeling.training.augment import describe as describe_augmentation
from modeling.training.run_log import epoch_cost, finalized_into, read_training_log, runnable, shown_in, stage_of

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TEMPLATES = DOCS / "templates"
MODEL = ROOT / "weights" / "pneumonia-resnet50"
REFERENCES = [  # published figures on the same 624-image test split (not our runs)
    ("notebook ResNet50 (reported)", {"accuracy": 0.893, "recall": 0.936, "precision": 0.867}),
    ("Kermany et al. 2018 (reported)", {"accuracy": 0.928, "recall": 0.932, "specificity": 0.901, "roc_auc": 0.968}),
]
README_BLOCKS = {"results": "readme_results.md.j2", "xray-gate": "readme_xray_gate.md.j2",
                 "gate-sources": "readme_gate_sources.md.j2"}
PAGES = ("experiments.md", "out-of-distribution.md", "shortcuts.md", "speed.md")  # each from docs/templates/PAGE.j2
SHORTCUTS_ORDER = ("bundle-before", "proxy-", "bundle")  # before the work, the proxies, the bundles, then the rest


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _history(kind: str) -> dict[str, Any]:
    """docs/bundle_history/NAME.KIND.json by NAME, in name order."""
    return {path.name.removesuffix(f".{kind}.json"): json.loads(path.read_text())
            for path in sorted((DOCS / "bundle_history").glob(f"*.{kind}.json"))}


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True, undefined=StrictUndefined)
    env.filters["f"] = format
    env.filters["pct"] = lambda value: "-" if value is None else f"{100 * value:.1f}%"
    env.filters["runnable"] = runnable  # recorded commands, as they run today
    env.filters["relative"] = lambda path: Path(path).relative_to(ROOT).as_posix()
    return env


# ---------------------------------------------------------------- the bundled model

def bundle_context(model_dir: Path) -> dict[str, Any]:
    """The bundled model's training, lineage, deployment and test evaluation."""
    log = read_training_log(model_dir)
    config = ModelConfig.load(model_dir / "config.json")
    metrics = json.loads((model_dir / "eval" / "metrics.json").read_text())
    cost, inference = epoch_cost(log), json.loads((model_dir / "config.json").read_text())["inference"]
    return {"model_dir": model_dir, "log": log, "cost": cost, "stages": [*log["lineage"], stage_of(log)],
            "lineage_hours": sum(stage["hours"] for stage in log["lineage"]) + cost["hours"],
            "augmentation": describe_augmentation(log["augmentation"]["recipe"]), "inference": inference,
            "metrics": metrics,
            "rates_table": format_table(metrics), "earlier_bundles": _history("test-metrics"),
            "references": REFERENCES, "finalized_into": shown_in(finalized_into(config)),
            "commands": made_by(model_dir, log, config), "gate": gate_context(model_dir, inference.get("xray_gate"))}


def made_by(model_dir: Path, log: dict[str, Any], config: ModelConfig) -> list[str]:
    """Training and finalize as logged, then the commands the folder's own files record (thresholds, evaluations)."""
    commands = reproduction_commands(log, config)
    for name in ("validation_thresholds.json", "eval-validation/metrics.json", "eval/metrics.json"):
        words = shlex.split((_read(model_dir / name) or {}).get("command", ""))
        if "--ood-images" in words:  # the non-X-ray images it read are generated, not downloaded
            commands.append(f"python -m scripts.non_xray {words[words.index('--ood-images') + 1]}")
        if words:
            commands.append(shlex.join(words))
    return commands


def gate_context(model_dir: Path, gate: dict[str, Any] | None) -> dict[str, Any] | None:
    """The chest X-ray gate: config.json's record, its training report, and its evaluation's counts (None without a
    gate). `counts`: per group, 'k/n (p%)' of images without an answer (non-X-rays) or wrongly refused (X-rays)."""
    if not gate:
        return None
    evaluation = _read(model_dir / "xray_gate_eval" / "report.json")
    context = {"gate": gate, "trained": json.loads((model_dir / gate["report"]).read_text()), "evaluation": evaluation,
               "sheet": model_dir / "xray_gate_eval" / "mistakes.png"}
    if evaluation:
        counts = {}
        for name, g in evaluation["groups"].items():
            k, rate = (g["no_assessment"], g["no_assessment_rate"]) if "no_assessment" in g else (
                g["called_not_a_chest_xray"], g["refused_rate"])
            counts[name] = f"{k}/{g['images']} ({100 * rate:.1f}%)"
        changed = [name for name in counts if name.startswith("validation X-rays, ")]
        context |= {"counts": counts, "changed": changed,
                    "worst": max(changed, key=lambda n: evaluation["groups"][n]["refused_rate"]) if changed else None}
    return context


# ---------------------------------------------------------------- docs/experiments.md

def changes_context() -> dict[str, Any] | None:
    """The table of changes on validation, each row with the shortcut scores measured on its model, views and
    int8-or-not (docs/shortcuts/*.json), and the per-epoch pictures."""
    results = _read(DOCS / "validation_results.json")
    if results is None:
        return None
    scores = [json.loads(p.read_text()) for p in _score_files()]
    by_model = {(json.dumps(s["model"]), s["views"], s["precision"] == "int8"): s for s in scores}
    rows = [{**row, "shortcuts": by_model.get((json.dumps(row["model_dir"]), row.get("views", 1),
                                               row.get("precision") == "int8"))} for row in results["rows"]]
    curves = {name: _read(DOCS / f"{name}.json") for name in ("training_curves", "mixup_curves")}
    return {"results": results, "rows": rows, "roc_aucs": [row["roc_auc"] for row in rows], "curves": curves}


def experiments_context(bundle: dict[str, Any]) -> dict[str, Any]:
    return {"bundle": bundle, "changes": changes_context(), "as_is_margin": AS_IS_MARGIN,
            "windows": [json.loads(p.read_text()) for p in sorted((DOCS / "windows").glob("*.json"))],
            "decisions": _history("decision")}


# ---------------------------------------------------------------- docs/out-of-distribution.md

def development_context(model_dir: Path, deployed_ood: dict, candidate_oods: list[dict]) -> dict[str, Any] | None:
    """The "not a chest X-ray" gates on the development set (scripts/ood_development.py), None before it ran."""
    dev = _read(DOCS / "ood_development.json")
    return None if dev is None else development_summary(dev, model_dir.relative_to(ROOT), deployed_ood, candidate_oods)


def ood_context(bundle: dict[str, Any]) -> dict[str, Any]:
    """The detector and gate as the bundle deploys them, and the evaluation sets' reports (from `bundle_context`)."""
    model_dir, metrics = bundle["model_dir"], bundle["metrics"]
    context = {key: bundle[key] for key in ("inference", "gate", "metrics")} | {"robustness": None}
    if "ood" in metrics:
        candidates = _history("ood")
        context |= {"ood_report": format_ood(metrics["ood"]), "deployed_gate": gate_summary(metrics["ood"]),
                    "candidates": [{"name": name, **c, "report": format_ood(c["ood"]), "summary": gate_summary(c["ood"])}
                                   for name, c in candidates.items()],
                    "development": development_context(model_dir, metrics["ood"], [c["ood"] for c in candidates.values()])}
    if "robustness" in metrics:
        worst, cost = largest_robustness_cost(metrics)
        context["robustness"] = {"table": format_robustness(metrics), "worst": worst, "cost": cost, "validation": None}
        validation = _read(model_dir / "eval-validation" / "metrics.json")
        if validation and "robustness" in validation:
            val_worst, val_cost = largest_robustness_cost(validation)
            context["robustness"]["validation"] = {
                "command": validation["command"], "worst": val_worst, "cost": val_cost,
                "change": 100 * (validation["robustness"][worst]["accuracy"] - validation["accuracy"])}
    return context


# ---------------------------------------------------------------- docs/shortcuts.md

def _score_files() -> list[Path]:
    """docs/shortcuts/*.json: a model's shortcut scores each (older ones keep their run's summary in .training.json)."""
    return sorted(p for p in (DOCS / "shortcuts").glob("*.json") if not p.name.endswith(".training.json"))


def shortcuts_context() -> dict[str, Any]:
    """Every model's shortcut scores in the order of the work, the commands that trained them, the sharpness tie."""
    rank = {p: (next((i for i, first in enumerate(SHORTCUTS_ORDER) if p.stem.startswith(first)), len(SHORTCUTS_ORDER)),
                p.stem) for p in _score_files()}
    rows = []
    for path in sorted(rank, key=rank.get):
        scores, training = json.loads(path.read_text()), _read(path.with_name(f"{path.stem}.training.json"))
        summaries = scores.get("training") or []
        summaries = summaries if isinstance(summaries, list) else [summaries]  # one run's summary, or a list of them
        commands = [t["command"] for t in summaries if t.get("command")]
        rows.append({"name": path.stem, "scores": scores, "picture": path.with_suffix(".png").exists(),
                     "commands": commands or ([training["command"]] if training else []),
                     "roc_auc": scores.get("roc_auc", training["final_ema"]["val_roc_auc"] if training else None)})
    return {"rows": rows, "commands": list(dict.fromkeys(c for row in rows for c in row["commands"])),
            "tie": _read(DOCS / "sharpness_tie.json")}


# ---------------------------------------------------------------- docs/speed.md

def speed_context() -> dict[str, Any]:
    return {name: _read(DOCS / f"{name}.json")
            for name in ("benchmarks", "precision_paths", "cold_start", "load_test", "predict_benchmark")}


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda _: f"<!-- {name}:start -->\n{body}\n<!-- {name}:end -->", text)


def rendered_pages(model_dir: Path) -> dict[Path, str]:
    """Every page this script writes, as it would write it now."""
    env, readme, bundle = environment(), ROOT / "README.md", bundle_context(model_dir)
    contexts = {"experiments.md": experiments_context(bundle), "out-of-distribution.md": ood_context(bundle),
                "shortcuts.md": shortcuts_context(), "speed.md": speed_context()}
    text = readme.read_text()
    for block, template in README_BLOCKS.items():
        text = replace_block(text, block, env.get_template(template).render(b=bundle).rstrip("\n"))
    return {readme: text, **{DOCS / page: env.get_template(f"{page}.j2").render(contexts[page]) for page in PAGES}}


def stale_pages(pages: dict[Path, str]) -> list[Path]:
    return [path for path, text in pages.items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--check", action="store_true", help="write nothing; fail if a page differs from its files")
    args = parser.parse_args(argv)
    pages = rendered_pages(args.model.resolve())
    if args.check:
        stale = stale_pages(pages)
        if stale:
            raise SystemExit("Out of date with the runs' files: " + ", ".join(p.relative_to(ROOT).as_posix() for p in stale)
                             + "; run `python -m scripts.render_docs`.")
        return
    for path, text in pages.items():
        path.write_text(text)
    print("rendered " + ", ".join(path.relative_to(ROOT).as_posix() for path in pages))


if __name__ == "__main__":
    main()
