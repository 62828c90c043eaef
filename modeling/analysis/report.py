"""The evaluation report as text: the rates with their intervals, the out-of-distribution counts and the changes
that move answers, as evaluate.py prints them and the docs show them."""
from __future__ import annotations

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
