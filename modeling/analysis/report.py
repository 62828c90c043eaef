"""The evaluation report as text: the rates with their intervals, the out-of-distribution counts and the changes
that move answers, as evaluate.py prints them and the docs show them; and the summaries the docs draw from reports."""
from __future__ import annotations

from pathlib import Path

from ..training.metrics import RATES


def format_table(metrics: dict) -> str:
    """A Markdown table of the rates with 95% intervals, at the model's threshold and at 0.5."""
    head = (f"| metric | at threshold {metrics['threshold']:.3f} | 95% CI | at 0.5 | 95% CI |\n"
            "| --- | --- | --- | --- | --- |")
    rows = []
    for name in RATES:
        low, high = metrics["ci95"][name]
        low5, high5 = metrics["at_0.5"]["ci95"][name]
        rows.append(f"| {name} | {metrics[name]:.4f} | {low:.3f}-{high:.3f} | {metrics['at_0.5'][name]:.4f} "
                    f"| {low5:.3f}-{high5:.3f} |")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    rows.append(f"\nexpected calibration error {metrics['ece']:.4f} (temperature {metrics['temperature']:.3f})")
    rows.append(f"n={metrics['n']}, confusion matrix at threshold: TN={tn} FP={fp} FN={fn} TP={tp}")
    return "\n".join([head, *rows])


def format_ood(report: dict) -> str:
    counts = report["test_xrays_verdicts"]
    lines = [f"{report.get('split', 'test')} X-rays flagged {report['test_xrays_flagged']}/{report['test_xrays']} "
             f"({report['test_xrays_flagged_rate']:.1%}): {counts}"]
    for key, label in (("non_xray", "non-X-ray images caught (refused or 'not a chest X-ray')"),
                       ("other_xrays", "other chest X-rays flagged")):
        for entry in report.get(key, []):
            lines.append(f"{label}: {entry['flagged']}/{entry['images']} ({entry['flagged_rate']:.1%}; "
                         f"{len(entry['refused_by_reader'])} refused by the reader; verdicts {entry['verdicts']}) "
                         f"in {entry['folder']}")
    return "\n".join(lines)


def format_robustness(metrics: dict) -> str:
    lines = ["| change | accuracy | sensitivity | specificity | ROC-AUC |", "| --- | --- | --- | --- | --- |",
             f"| none | {metrics['accuracy']:.4f} | {metrics['recall']:.4f} | {metrics['specificity']:.4f} "
             f"| {metrics['roc_auc']:.4f} |"]
    for name, r in metrics["robustness"].items():
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['recall']:.4f} | {r['specificity']:.4f} | {r['roc_auc']:.4f} |")
    return "\n".join(lines)


def gate_summary(report: dict) -> dict[str, int]:
    """Non-X-rays caught, in the set and passed as a chest X-ray; test X-rays flagged."""
    non_xray = report["non_xray"][0]
    return {"caught": non_xray["flagged"], "total": non_xray["images"], "passed": non_xray["verdicts"]["chest_xray"],
            "flagged": report["test_xrays_flagged"]}


def development_summary(dev: dict, deployed_model: Path, deployed_ood: dict, candidate_oods: list[dict]) -> dict:
    """The "not a chest X-ray" gates on the development set (scripts/ood_development.py's file): each detector's rates
    at the factor in use, the lowest factor that keeps every X-ray group at most 1%, and whether the development set
    favours the first candidate gate (docs/bundle_history) as the evaluation sets do. `deployed_model`: the bundle's
    folder as the file names it."""
    factors, at = dev["factors"], dev["factors"].index(dev["factor_in_use"])
    photos = [name for name in dev["images"] if name.startswith("photos")]
    xrays = [name for name in dev["images"] if not name.startswith("photos")]
    rows = []
    for label, model in dev["models"].items():
        for candidate, rates in model["not_a_chest_xray_rate"].items():
            clean = next((i for i in range(len(factors)) if all(rates[name][i] <= 0.01 for name in xrays)), None)
            rows.append({"label": label, "stages": candidate, "in_use": candidate == model["in_use"],
                         "rates": [rates[name][at] for name in dev["images"]],
                         "clean": None if clean is None else factors[clean],
                         "there": None if clean is None else [rates[name][clean] for name in photos]})
    context = {"dev": dev, "rows": rows, "favours": None}
    deployed = [m for m in dev["models"].values() if Path(m["model"]) == deployed_model]
    others = [m for m in dev["models"].values() if Path(m["model"]) != deployed_model]
    if candidate_oods and deployed and others:
        def on_dev(model: dict) -> tuple[list[float], float]:
            rates = model["not_a_chest_xray_rate"][model["in_use"]]
            return [rates[n][at] for n in photos], max(rates[n][at] for n in xrays)
        (caught, wrong), (c_caught, c_wrong) = on_dev(deployed[0]), on_dev(others[0])
        deployed_eval, candidate_eval = gate_summary(deployed_ood), gate_summary(candidate_oods[0])
        context["favours"] = {
            "dev": all(c >= d for c, d in zip(c_caught, caught)) and c_wrong <= wrong,
            "eval": candidate_eval["caught"] > deployed_eval["caught"] and candidate_eval["passed"] <= deployed_eval["passed"]}
    return context


def largest_robustness_cost(metrics: dict) -> tuple[str, float]:
    name, change = min(metrics["robustness"].items(), key=lambda item: item[1]["accuracy"])
    return name, 100 * (metrics["accuracy"] - change["accuracy"])
