"""The validation images that decide the threshold rules, as one picture for the model card.

    python -m scripts.threshold_images weights/pneumonia-resnet50 --data ../shared/data/chest_xray \\
        --output docs/threshold_images.png

The deployed folder is run as the app runs it (its precision, views and temperature) on the
validation side of its split.json. Top: every validation image's P(pneumonia) by label, with the
threshold each rule in config.json's `threshold_rules` picks and its bootstrap 5-95% band. Below:
the pneumonia-labelled images the model finds most normal (they pull a target-sensitivity
threshold down) and the normal-labelled images it finds most like pneumonia (they push a
Youden threshold up). Only validation is read; the test split stays for the final report.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from modeling import Predictor
from modeling.runtime.preprocessing import read_image, to_rgb
from modeling.runtime.probability import positive_probs
from modeling.training.data import image_name, load_data, saved_split
from modeling.training.evaluation import predict_split

RULE_COLOURS = {"sensitivity": "crimson", "youden": "darkorange", "prior": "royalblue"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a folder made by modeling.training.finalize")
    parser.add_argument("--data", required=True)
    parser.add_argument("--per-row", type=int, default=8, help="images shown per class")
    parser.add_argument("--output", type=Path, required=True, help="the picture (.png); a .json beside it lists the images")
    args = parser.parse_args(argv)

    predictor = Predictor.from_pretrained(args.model_dir, device="cpu")
    config = predictor.config
    split_file = args.model_dir / "split.json"
    labels, logits, _ = predict_split(predictor, args.data, split_file, "validation")
    positive = labels == config.positive_index
    probs = positive_probs(logits, config.temperature, config.positive_index)
    records = saved_split(load_data(args.data), split_file, "validation")["image"]
    names = [image_name(record, i) for i, record in enumerate(records)]
    rules = config.validation["threshold_rules"]

    n = args.per_row
    most_normal_pneumonia = np.flatnonzero(positive)[np.argsort(probs[positive])[:n]]
    most_pneumonia_normal = np.flatnonzero(~positive)[np.argsort(-probs[~positive])[:n]]

    fig = Figure(figsize=(2 * n, 9.5))  # no pyplot: no GUI backend, no global figure state
    grid = fig.add_gridspec(3, n, height_ratios=[1.5, 1, 1], hspace=0.6)
    strip = fig.add_subplot(grid[0, :])
    jitter = np.random.default_rng(0).uniform(-0.18, 0.18, len(probs))
    for row, (mask, name) in enumerate([(~positive, "NORMAL"), (positive, "PNEUMONIA")]):
        strip.scatter(probs[mask], row + jitter[mask], s=6, alpha=0.5, color="grey")
    for rule, record in rules.items():
        colour = RULE_COLOURS.get(rule, "black")
        strip.axvspan(record["bootstrap_p05"], record["bootstrap_p95"], color=colour, alpha=0.12)
        strip.axvline(record["threshold"], color=colour, lw=1.5,
                      label=f"{rule}: {record['threshold']:.3f} (bootstrap 5-95% {record['bootstrap_p05']:.3f}-"
                            f"{record['bootstrap_p95']:.3f}){'  <- deployed' if rule == config.validation['threshold_rule'] else ''}")
    strip.set_yticks([0, 1], [f"labelled NORMAL\n(n={int((~positive).sum())})",
                              f"labelled PNEUMONIA\n(n={int(positive.sum())})"])
    strip.set_xlim(0, 1)
    strip.set_xlabel("calibrated P(pneumonia), as deployed")
    strip.set_title(f"Validation ({len(probs)} images, {predictor.precision}, {1 + len(config.tta_views)} views): "
                    "where each threshold rule puts the threshold", pad=24)
    strip.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)

    for row, (indices, title) in enumerate([(most_normal_pneumonia, "labelled PNEUMONIA, most normal to the model"),
                                            (most_pneumonia_normal, "labelled NORMAL, most like pneumonia to the model")], 1):
        for column, index in enumerate(indices):
            ax = fig.add_subplot(grid[row, column])
            record = records[int(index)]
            ax.imshow(to_rgb(read_image(record["bytes"] or record["path"])).convert("L"), cmap="gray")
            ax.set_title(f"{Path(names[index]).stem[:26]}\nP={probs[index]:.3f}", fontsize=7)
            ax.axis("off")
            if column == 0:
                ax.text(0, 1.32, title, transform=ax.transAxes, fontsize=10, weight="bold")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=80, bbox_inches="tight")
    listing = {"command": shlex.join(["python", "-m", "scripts.threshold_images", *(sys.argv[1:] if argv is None else argv)]),
               "model_dir": str(args.model_dir), "threshold_rules": rules,
               "pneumonia_most_normal": [{"file": names[i], "p": float(probs[i])} for i in most_normal_pneumonia],
               "normal_most_pneumonia": [{"file": names[i], "p": float(probs[i])} for i in most_pneumonia_normal]}
    args.output.with_suffix(".json").write_text(json.dumps(listing, indent=2) + "\n")
    print(f"wrote {args.output} and {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
