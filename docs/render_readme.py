"""Fill the README's result sections from the files the runs wrote; no number is typed by hand.

    python docs/render_readme.py

Reads weights/pneumonia-resnet50/{config.json, training_log.json, eval/metrics.json},
docs/benchmarks.json (python -m benchmarks.run --output ...) and docs/load_test.json
(python -m benchmarks.load_test --output ...), and replaces the text between
`<!-- NAME:start -->` and `<!-- NAME:end -->` in README.md.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluate import format_ood, format_robustness, format_table  # noqa: E402
from modeling.augment import describe as describe_augmentation, trained_recipe  # noqa: E402
from modeling.hub import epoch_cost, reproduction_commands  # noqa: E402
from modeling.config import ModelConfig  # noqa: E402

MODEL = ROOT / "weights" / "pneumonia-resnet50"
FINAL = "runs/bundle-v3"  # the deployable folder (modeling.finalize's output) the bundled model was copied from
VALIDATION_EVAL = ("`python evaluate.py --model weights/pneumonia-resnet50 --data ../shared/data/chest_xray --split "
                   "validation --output-dir runs/val-eval-v3 --robustness`")  # the run whose metrics.json is copied
REFERENCES = [  # published figures on the same 624-image test split (not our runs)
    ("notebook ResNet50 (reported)", {"accuracy": 0.893, "recall": 0.936, "precision": 0.867}),
    ("Kermany et al. 2018 (reported)", {"accuracy": 0.928, "recall": 0.932, "specificity": 0.901, "roc_auc": 0.968}),
]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def results_section(model_dir: Path = MODEL) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    log = json.loads((model_dir / "training_log.json").read_text())
    metrics = json.loads((model_dir / "eval" / "metrics.json").read_text())
    inference = config["inference"]
    int8 = inference["precision"] == "int8"
    args = log["args"]
    cost = epoch_cost(log)
    schedule = ", ".join(f"{size} px x {count}" for size, count in args.get("size_schedule") or [])
    where = "this machine's 2-core CPU" if cost["device"] == "cpu" else f"one {cost['device']}"
    lines = [
        "## Results of the bundled model",
        "",
        f"`weights/pneumonia-resnet50/`: {config['architecture']} **trained from scratch** on "
        f"{where} "
        f"({args['epochs']} epochs{f' with progressive resizing ({schedule})' if schedule else ''}, validated at "
        f"{args['image_size']} px; {cost['hours']:.1f} hours of training as logged; selected by validation "
        f"{args['select_metric']}: epoch {log['best_epoch']}, "
        f"{'the moving average of the weights' if log.get('best_weights') == 'ema' else 'the weights themselves'}). "
        f"Augmentation: {describe_augmentation(trained_recipe(log))}. "
        "ImageNet weights cannot be downloaded here; with the Hub, `train.py` starts from them by default. "
        f"Inference: {1 + len(inference.get('tta_views', []))} view(s) per image, {inference['precision']}. "
        "Views, precision, threshold and temperature were chosen on validation only; the test split was used "
        "once, for this report. The same commands run on a GPU (the card says how).",
        "",
        "```bash",
        *reproduction_commands(log, ModelConfig.load(model_dir / "config.json")),
        f"cp {FINAL}/{{model.safetensors,config.json,ood.safetensors,{'int8-calibration.safetensors,' if int8 else ''}"
        "training_log.json,data_report.json,split.json} weights/pneumonia-resnet50/",
        "python docs/threshold_images.py weights/pneumonia-resnet50 --data ../shared/data/chest_xray "
        "--output weights/pneumonia-resnet50/validation_thresholds.png",
        "python -m modeling.non_xray runs/non-xray",
        "python evaluate.py --model weights/pneumonia-resnet50 --data ../shared/data/chest_xray --split test "
        "--output-dir weights/pneumonia-resnet50/eval --ood-images runs/non-xray --other-xrays ../shared/data/formats "
        "--robustness",
        "```",
        "",
        f"Test split, {metrics['n']} images, operating threshold {metrics['threshold']:.4f} (chosen on validation by the "
        f"rule `{inference['validation'].get('threshold_rule', 'sensitivity')}`"
        + (f", target sensitivity {inference['validation'].get('target_sensitivity')}"
           if inference['validation'].get('threshold_rule', 'sensitivity') == "sensitivity" else "")
        + "; the card gives every rule's bootstrap spread and the reasoning), 95% bootstrap intervals "
        f"({metrics.get('bootstrap')} resamples):",
        "",
        format_table(metrics),
        "",
        "| | accuracy | sensitivity | specificity | precision | ROC-AUC |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| **this model** (test, threshold {metrics['threshold']:.3f}) | {_pct(metrics['accuracy'])} | "
        f"{_pct(metrics['recall'])} | {_pct(metrics['specificity'])} | {_pct(metrics['precision'])} | "
        f"{metrics['roc_auc']:.3f} |",
    ]
    for path in sorted((ROOT / "docs" / "bundle_history").glob("*.test-metrics.json")):
        old = json.loads(path.read_text())
        lines.append(f"| earlier bundle `{path.name.removesuffix('.test-metrics.json')}` (test, threshold "
                     f"{old['threshold']:.3f}) | {_pct(old['accuracy'])} | {_pct(old['recall'])} | "
                     f"{_pct(old['specificity'])} | {_pct(old['precision'])} | {old['roc_auc']:.3f} |")
    for name, ref in REFERENCES:
        auc = f"{ref['roc_auc']:.3f}" if "roc_auc" in ref else "-"
        lines.append(f"| {name} | {_pct(ref.get('accuracy'))} | {_pct(ref.get('recall'))} | "
                     f"{_pct(ref.get('specificity'))} | {_pct(ref.get('precision'))} | {auc} |")
    lines += ["", against_reference(metrics, *REFERENCES[-1])]
    lines += [
        "",
        "| ROC | precision-recall | confusion matrix | reliability |",
        "| --- | --- | --- | --- |",
        "| ![ROC](weights/pneumonia-resnet50/eval/roc.png) | ![PR](weights/pneumonia-resnet50/eval/pr.png) | "
        "![confusion](weights/pneumonia-resnet50/eval/confusion_matrix.png) | "
        "![reliability](weights/pneumonia-resnet50/eval/reliability.png) |",
        "",
        f"Calibration: temperature {inference['temperature']:.3f} fitted on validation "
        f"(validation ECE {inference['validation'].get('ece_before', float('nan')):.4f} -> "
        f"{inference['validation'].get('ece_after', float('nan')):.4f}); test ECE {metrics['ece']:.4f}.",
        "",
        "Training, per epoch (validation = a patient-grouped 15% of train, "
        f"{inference['validation'].get('n')} images), beside GPU runs of the same recipe at batch 256 (two seeds, "
        "each also with 176 px instead of 224 px in its last 8 epochs; `docs/training_curves.py`, the command is "
        "under the table of changes below):",
        "",
        "![validation per epoch](docs/training_curves.png)",
        "",
        "<details><summary>every epoch of the bundled model's run (sensitivity and specificity at 0.5 before "
        "calibration)</summary>",
        "",
        "| epoch | size | weights | train loss | val loss | val calibrated loss | val ROC-AUC | val sensitivity | "
        "val specificity | train img/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in log["history"]:
        kind = "moving average" if r.get("weights") == "ema" else "weights"
        lines.append(f"| {r['epoch']} | {r.get('train_size', args['image_size'])} | {kind} | {r['train_loss']:.4f} | "
                     f"{r['val_loss']:.4f} | {r.get('val_calibrated_loss', float('nan')):.4f} | {r['val_roc_auc']:.4f} | "
                     f"{r['val_sensitivity']:.4f} | {r['val_specificity']:.4f} | {r['train_images_per_s']:.1f} |")
    lines += ["", "</details>"]
    lines += ["", f"At the operating threshold, validation sensitivity {inference['validation']['sensitivity']:.4f}, "
              f"specificity {inference['validation']['specificity']:.4f}: as the data notes warn, validation carved "
              "from train flatters specificity compared with the separately collected test split."]
    if "ood" in metrics:
        lines += ["", "### Out-of-distribution warning", "", "```", format_ood(metrics["ood"]), "```", "",
                  "The non-X-ray set (`python -m modeling.non_xray`) holds photos, microscopy, histology, retina "
                  "fundus, a CT phantom, an MRI head slice, text pages (scikit-image, matplotlib and scikit-learn "
                  "sample images), each also in greyscale, plus generated blanks, noise, gradients, screenshots, "
                  "charts and shapes. The other chest X-rays are the adult DICOM/PNG/JPEG files of "
                  "`../shared/data/formats` (a different population, so flagging them is not wrong)."]
        candidates = {path: json.loads(path.read_text())
                      for path in sorted((ROOT / "docs" / "bundle_history").glob("*.ood.json"))}
        for path, candidate in candidates.items():
            lines += ["", f"For comparison, {candidate['what']}: fitted on {candidate['fitted_on']}, no chest X-ray "
                      f"at {', '.join(candidate['not_xray_stages'])} (`{candidate['made_by']}`; the same evaluate "
                      f"command; `{path.relative_to(ROOT)}`):", "", "```", format_ood(candidate["ood"]), "```", "",
                      compare_gates(metrics["ood"], candidate["ood"])]
        lines += ood_development_lines(model_dir, metrics["ood"], [c["ood"] for c in candidates.values()])
    if "robustness" in metrics:
        worst, cost = largest_robustness_cost(metrics)
        lines += ["", "### Robustness (test split, operating threshold)", "", format_robustness(metrics), "",
                  f"The largest cost in accuracy: {worst}, {cost:.1f} points."]
        on_validation = model_dir / "eval-validation" / "metrics.json"
        if on_validation.exists():
            val = json.loads(on_validation.read_text())
            val_worst, val_cost = largest_robustness_cost(val)
            lines += ["", f"The same changes on validation ({VALIDATION_EVAL}; its metrics.json is "
                      f"`{on_validation.relative_to(ROOT)}`): the largest cost is {val_worst}, "
                      f"{val_cost:.1f} points, and {worst} changes accuracy by "
                      f"{100 * (val['robustness'][worst]['accuracy'] - val['accuracy']):+.1f} points. Validation, "
                      "from the same collection as train, does not show what the separately collected test split "
                      "shows: there what a change costs is specificity (test NORMAL images it pushes over the threshold), "
                      "while sensitivity hardly moves."]
    return "\n".join(lines)


def _gate_summary(report: dict) -> tuple[int, int, int, int]:
    """(non-X-rays caught, non-X-rays in the set, non-X-rays passed as a chest X-ray, test X-rays flagged)."""
    non_xray = report["non_xray"][0]
    return non_xray["flagged"], non_xray["images"], non_xray["verdicts"]["chest_xray"], report["test_xrays_flagged"]


def compare_gates(deployed: dict, candidate: dict) -> str:
    """One sentence: the candidate gate against the deployed one on the evaluation sets."""
    caught, total, passed, flagged = _gate_summary(deployed)
    c_caught, _, c_passed, c_flagged = _gate_summary(candidate)
    return (f"The candidate caught {c_caught}/{total} non-X-rays against the deployed gate's {caught}/{total}, let "
            f"{c_passed} through as a chest X-ray against {passed}, and flagged {c_flagged} test X-rays against "
            f"{flagged}.")


def ood_development_lines(model_dir: Path, deployed_ood: dict, candidate_oods: list[dict]) -> list[str]:
    """The "not a chest X-ray" gates on the development set (docs/ood_development.py), if it was run, and whether it
    agrees with the evaluation sets on the first candidate gate (docs/bundle_history)."""
    path = ROOT / "docs" / "ood_development.json"
    if not path.exists():
        return []
    dev = json.loads(path.read_text())
    factors, at = dev["factors"], dev["factors"].index(dev["factor_in_use"])
    photos = [name for name in dev["images"] if name.startswith("photos")]
    xrays = [name for name in dev["images"] if not name.startswith("photos")]
    rows = ["| detector fitted on | stages | " + " | ".join(f"{name} ({dev['images'][name]})" for name in dev["images"])
            + " | lowest factor with every X-ray group at most 1% | photos caught there |",
            "| --- | --- |" + " --- |" * (len(dev["images"]) + 2)]
    for label, model in dev["models"].items():
        for candidate, rates in model["not_a_chest_xray_rate"].items():
            clean = next((i for i in range(len(factors)) if all(rates[name][i] <= 0.01 for name in xrays)), None)
            there = " / ".join(f"{rates[name][clean]:.0%}" for name in photos) if clean is not None else "-"
            rows.append(f"| {label} | {candidate}{' (in use)' if candidate == model['in_use'] else ''} | "
                        + " | ".join(f"{rates[name][at]:.0%}" for name in dev["images"])
                        + f" | {factors[clean] if clean is not None else 'none'} | {there} |")
    unlike = ["| detector fitted on | " + " | ".join(dev["images"]) + " |", "| --- |" + " --- |" * len(dev["images"])]
    unlike += [f"| {label} | " + " | ".join(f"{model['unlike_rate'][name]:.0%}" for name in dev["images"]) + " |"
               for label, model in dev["models"].items()]
    lines = ["", "Both gates on a development set that shares no source with the evaluation sets above "
             f"(`{dev['command']}`): Gradio's sample photos with crops, in colour and greyscale, which should be called "
             "no chest X-ray, and every sixth validation X-ray changed as users change them, which should not "
             f"(the X-ray columns). Share called \"not a chest X-ray\" at the factor in use "
             f"({dev['factor_in_use']:g} x the 'unlike' threshold), and the best a factor can do:", "", *rows, "",
             "Share flagged at all (\"unlike the training X-rays\" or worse):", "", *unlike, "",
             "![development set](docs/ood_development.png)"]

    deployed = [m for m in dev["models"].values() if Path(m["model"]) == model_dir.relative_to(ROOT)]
    others = [m for m in dev["models"].values() if Path(m["model"]) != model_dir.relative_to(ROOT)]
    if not (candidate_oods and deployed and others):
        return lines
    def on_dev(model: dict) -> tuple[list[float], float]:
        rates = model["not_a_chest_xray_rate"][model["in_use"]]
        return [rates[n][at] for n in photos], max(rates[n][at] for n in xrays)
    (caught, wrong), (c_caught, c_wrong) = on_dev(deployed[0]), on_dev(others[0])
    dev_favours = all(c >= d for c, d in zip(c_caught, caught)) and c_wrong <= wrong
    e_caught, _, e_passed, _ = _gate_summary(deployed_ood)
    ce_caught, _, ce_passed, _ = _gate_summary(candidate_oods[0])
    eval_favours = ce_caught > e_caught and ce_passed <= e_passed
    if dev_favours == eval_favours:
        return lines + ["", f"The development set and the evaluation set agree on the candidate: it is "
                        f"{'better' if dev_favours else 'not better'} on both."]
    return lines + ["", f"The development set favours the {'candidate' if dev_favours else 'deployed gate'}, the "
                    f"evaluation set the {'deployed gate' if dev_favours else 'candidate'}. The deployed gate stays, as "
                    "the project replaces a bundled artifact only when a better one is measured: the development "
                    f"photos are crops of {dev['pictures']} pictures, too few to choose a gate with, and the factor "
                    "and stages in use were fixed before either set was looked at."]


def largest_robustness_cost(metrics: dict) -> tuple[str, float]:
    """The change in a robustness report that costs the most accuracy, and that cost in points."""
    name, change = min(metrics["robustness"].items(), key=lambda item: item[1]["accuracy"])
    return name, 100 * (metrics["accuracy"] - change["accuracy"])


def against_reference(metrics: dict, name: str, reference: dict) -> str:
    """One sentence: where this model's test figures stand against a published reference, with the 95% intervals."""
    parts = []
    for key, label in (("accuracy", "accuracy"), ("recall", "sensitivity"), ("specificity", "specificity"),
                       ("roc_auc", "ROC-AUC")):
        if key not in reference:
            continue
        low, high = metrics["ci95"][key]
        side = "above" if metrics[key] > reference[key] else "below"
        certain = low > reference[key] or high < reference[key]
        parts.append(f"{label} {side} ({'the whole 95% interval' if certain else 'the 95% interval includes it'})")
    return f"Against {name}: " + "; ".join(parts) + "."


def validation_section() -> str:
    path = ROOT / "docs" / "validation_results.json"
    if not path.exists():
        return "### What each change did on validation\n\nNot measured yet (`python docs/validation_results.py`)."
    results = json.loads(path.read_text())
    lines = ["### What each change did on validation", "",
             *[f"`{command}`\n" for command in results["commands"]],
             f"The same patient-grouped validation split for every row ({results['rows'][0]['n']} images); the test "
             "split played no part. Log-loss and ECE after a temperature fitted on the row's own logits (the "
             "calibrated log-loss that `--select-metric calibrated_loss` selects by); specificity at the threshold "
             "that keeps 95% sensitivity. Rows whose inference says \"(training)\" are runs whose weights were not "
             "kept: the figures are those their training log recorded for the selected epoch.", "",
             "| model | inference | ROC-AUC | log-loss | ECE | specificity at 95% sensitivity | best in the training log (ROC-AUC) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in results["rows"]:
        logged = "; ".join(f"{'moving average' if kind == 'ema' else 'weights'}: {best['val_roc_auc']:.4f} "
                           f"(epoch {best['epoch']})" for kind, best in row.get("log_best", {}).items())
        inference = f"{row.get('precision', 'float32')}, {row.get('views', 1)} view(s)"
        ece = "-" if row.get("ece") is None else f"{row['ece']:.3f}"
        lines.append(f"| {row['label']} | {inference} | {row['roc_auc']:.4f} | {row['log_loss']:.3f} | {ece} | "
                     f"{_pct(row.get('specificity'))} | {logged} |")
    curves = ROOT / "docs" / "training_curves.json"
    if curves.exists():
        lines += ["", f"The picture of validation per epoch above: `{json.loads(curves.read_text())['command']}`."]
    mixup = ROOT / "docs" / "mixup_curves.json"
    if mixup.exists():
        lines += ["", "Mixup and cutmix (`--mixup`, `--cutmix`) on the GPU recipe, seed 42, every epoch "
                  f"(`{json.loads(mixup.read_text())['command']}`):", "", "![mixup per epoch](docs/mixup_curves.png)"]
    return "\n".join(lines)


def load_test_section() -> str:
    path = ROOT / "docs" / "load_test.json"
    if not path.exists():
        return "Load test: not run yet (`python -m benchmarks.load_test --output docs/load_test.json`)."
    r = json.loads(path.read_text())
    mix = r["mix"]
    return "\n".join([
        "### Load test", "",
        "`python -m benchmarks.load_test --output docs/load_test.json`: the bundled model served by `python app.py` "
        f"as its own process; {r['clients']} concurrent `gradio_client` clients x {r['requests_per_client']} requests, "
        f"the way a Space is used: {mix['single']} single images, {mix['heatmap']} with the Grad-CAM heatmap, "
        f"{mix['batch']} batches of four, clients in pairs sending the same images at once. Each answer was checked "
        "against the model's own probability for that image.", "",
        "| sent | answered | lost | wrong | crashed | p50 | p95 | requests/s | server peak memory | files left after SIGTERM |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {r['sent']} | {r['answered']} | {r['lost']} | {r['wrong']} | {'yes' if r['crashed'] else 'no'} | "
        f"{r['p50_ms']:.0f} ms | {r['p95_ms']:.0f} ms | {r['throughput_rps']:.2f} | "
        f"{r['server_peak_memory_mb']:.0f} MB | {len(r['files_left_after_sigterm'])} |",
        "", f"(2 CPU cores, {r['wall_s']:.0f} s.)"])


def benchmark_section() -> str:
    path = ROOT / "docs" / "benchmarks.json"
    if not path.exists():
        return "## Speed\n\nNot measured yet (`python -m benchmarks.run --output docs/benchmarks.json`)."
    b = json.loads(path.read_text())
    demo, round_trip = b["demo"], b["demo"]["gradio_client_round_trip"]
    lines = [
        "## Speed", "",
        f"`python -m benchmarks.run --output docs/benchmarks.json` on this machine ({b['cpus']} CPU cores, "
        f"{b['threads']} threads, ResNet50 at 224 px). A row starting with + adds one change to the row above; every "
        "ratio is against the plain fp32 eager baseline measured in the same run, each row in its own process.", "",
        "| training, end to end (loading, augmentation, forward, backward, AdamW) | images/s | vs baseline |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {row['label']} | {row['images_per_s']:.2f} | {row['ratio']:.2f}x |" for row in b["training"].values()]
    if "compile" not in b["training"]:
        lines += ["", "`--train-compile` adds a row for torch.compile of the training step (minutes of compiling; "
                  "train.py does not use it)."]
    network = b.get("training_network_only")
    if network:
        fp32, bf16 = network["network_fp32"], network["network_bf16"]
        lines += ["", f"The network alone, on one random batch (forward, backward and AdamW; no loading, augmentation "
                  f"or weight averaging): {fp32['images_per_s']:.2f} images/s in fp32, {bf16['images_per_s']:.2f} in "
                  f"bf16 with channels_last and tcmalloc, {bf16['ratio']:.2f}x the baseline. That is the most any data "
                  f"path can reach on this CPU (its bf16 network is {bf16['images_per_s'] / fp32['images_per_s']:.2f}x "
                  "its fp32 one), and train.py's path comes within "
                  f"{100 * (1 - b['training']['tcmalloc']['images_per_s'] / bf16['images_per_s']):.0f}% of it."]
    decode = next((row["decode_once_s"] for row in b["training"].values() if "decode_once_s" in row), None)
    if decode is not None:
        lines += ["", f"Decoding and resizing the 5216 training images once took {decode:.1f} s in this run (read back "
                  "from the `datasets` cache when a previous run already did it)."]
    for name, batch in b["inference"].items():
        size = name.removeprefix("batch")
        lines += ["", f"| inference, batch {size} | latency | images/s | vs baseline |", "| --- | --- | --- | --- |"]
        lines += [f"| {row['label']} | {row['ms']:.1f} ms | {row['images_per_s']:.1f} | {row['speedup']:.2f}x |"
                  for row in batch.values()]
    verify_off = demo["without_heatmap_ssl_verify_false"]
    lines += [
        "", "| the demo (`python app.py`) through `gradio_client` | p50 | p95 |", "| --- | --- | --- |",
        f"| `/predict`, no heatmap | {demo['without_heatmap']['p50_ms']:.0f} ms | {demo['without_heatmap']['p95_ms']:.0f} ms |",
        f"| `/predict`, with Grad-CAM heatmap | {demo['with_heatmap']['p50_ms']:.0f} ms | "
        f"{demo['with_heatmap']['p95_ms']:.0f} ms |",
        f"| `/predict`, no heatmap, `Client(..., ssl_verify=False)` | {verify_off['p50_ms']:.0f} ms | "
        f"{verify_off['p95_ms']:.0f} ms |",
        f"| a do-nothing Gradio endpoint with the same file input (gradio_client's own round trip) | "
        f"{round_trip['default']['p50_ms']:.0f} ms | {round_trip['default']['p95_ms']:.0f} ms |",
        f"| the same, `ssl_verify=False` | {round_trip['ssl_verify_false']['p50_ms']:.0f} ms | "
        f"{round_trip['ssl_verify_false']['p95_ms']:.0f} ms |",
        "",
        f"The model's own batch-1 latency, as the app runs it, is {demo['model_batch1_ms']:.1f} ms: the demo's p50 "
        f"without heatmap is {demo['p50_without_heatmap_over_model_batch1']:.2f}x that with gradio_client's defaults, "
        f"{demo['ssl_verify_false_p50_without_heatmap_over_model_batch1']:.2f}x with `ssl_verify=False`. Most of the "
        f"difference is the client: the do-nothing endpoint takes {round_trip['default']['p50_ms']:.0f} ms. "
        "gradio_client makes a new httpx client for each file upload and queue join, and httpx builds a TLS "
        "context (loading the CA bundle) for each even over plain http (encode/httpx#2298, gradio-app/gradio#7890); "
        "`ssl_verify=False`, harmless on plain http to localhost and never to be used over https, makes that cheap. "
        "Then it polls for the answer every 50 ms (`time.sleep(0.05)` in `gradio_client/utils.py`): an answer "
        "is seen only at the first multiple of 50 ms after the queue join that follows it, so with the model's "
        "forward passes alone near 50 ms on 2 cores, the wait is 100 ms. The 1.5x goal is out of reach through "
        "gradio_client here. What the app adds over the do-nothing endpoint (p50 minus its round trip, the model "
        f"included) is {demo['p50_without_heatmap_minus_round_trip_over_model_batch1']:.2f}x the model's own "
        "latency: reading, preprocessing, the out-of-distribution check and the reply add little beyond the "
        "network.",
        "",
        f"Batch mode: 32 images in one `/predict_batch` request took {demo['batch_mode_32_images_s']:.2f} s, against "
        f"{demo['single_requests_32_images_s']:.2f} s as 32 single requests. `python app.py` from cold start to its "
        f"first answer: {demo['cold_start_to_first_answer_s']:.1f} s. `evaluate.py` on the 624 test images: "
        f"{b['evaluate_test_split_s']:.1f} s.",
    ]
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda _: f"<!-- {name}:start -->\n{body}\n<!-- {name}:end -->", text)


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    readme = args.readme
    text = readme.read_text()
    for name, render in (("results", lambda: results_section(args.model)), ("validation", validation_section),
                         ("loadtest", load_test_section),
                         ("benchmarks", benchmark_section)):
        text = replace_block(text, name, render())
    readme.write_text(text)
    print(f"rendered {readme}")


if __name__ == "__main__":
    main()
