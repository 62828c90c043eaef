"""Compare "not a chest X-ray" gates on a development set kept apart from the sets that measure them.

    python -m scripts.ood_development --model "LABEL=MODEL_DIR" [--model ...] --data ../shared/data/chest_xray \
        --output docs/ood_development.png

The evaluation set (`python -m scripts.non_xray`: scikit-image, matplotlib and scikit-learn samples,
generated images) and the adult X-rays of ../shared/data/formats measure the gate; nothing here reads
them. The development set is:
- photos: Gradio's bundled sample photos (a different package from every evaluation source), each
  whole and as four random crops, in colour and in greyscale (X-rays are grey, so grey photos are
  the hard case);
- chest X-rays that must stay chest X-rays: every sixth image of the model's validation split, changed
  the ways users change them (letterbox, padding on all sides, rotation, blur, exposure, burnt-in text).

For each model (its detector), each candidate set of stages (the network's mid-level stages; those
plus the thumbnail; the model's config.json says which it uses) and each factor (an image is no
chest X-ray when one of the stages puts it beyond factor x the "unlike" threshold), it counts the
photos caught and the changed X-rays wrongly called "not a chest X-ray", and draws both against
the factor. A .json beside the picture keeps every count and the command.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from modeling.gate_training.non_xray import development_photos
from modeling.runtime.files import SPLIT_NAME, resolve_model_folder
from modeling.runtime.inference import Predictor
from modeling.runtime.ood import NOT_AN_XRAY_FACTOR
from modeling.runtime.preprocessing import load_rgb
from modeling.training.data import load_data, saved_split
from modeling.training.robustness import XRAY_CHANGES

FACTORS = np.round(np.arange(1.5, 8.01, 0.25), 2)


def stage_scores(predictor: Predictor, images: list[Image.Image]) -> np.ndarray:
    """(N, stages) scaled scores of the model's detector, for the image as is (as the app computes them)."""
    features = [predictor.split_features(predictor.logits_and_features(predictor.tensor(image), views=False)[1])[0]
                for image in images]
    return predictor.ood.stage_scores(np.concatenate(features))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="LABEL=MODEL_DIR, repeatable")
    parser.add_argument("--data", required=True, help="the imagefolder the models were trained on")
    parser.add_argument("--output", type=Path, required=True, help="the picture (.png); the .json goes beside it")
    args = parser.parse_args(argv)
    models = dict(spec.split("=", 1) for spec in args.model)

    # the X-rays: every sixth validation image of the first model's split (models compared share one split)
    validation = saved_split(load_data(args.data), resolve_model_folder(next(iter(models.values()))) / SPLIT_NAME,
                             "validation")
    xrays = [load_rgb(record["bytes"] or record["path"])
             for record in validation.select(range(0, len(validation), 6))["image"]]
    photos = development_photos()
    groups = {"photos, colour": list(photos.values()),
              "photos, greyscale": [image.convert("L").convert("RGB") for image in photos.values()]}
    groups |= {f"X-ray, {name}": [change(image) for image in xrays] for name, change in XRAY_CHANGES.items()}
    report = {"command": shlex.join(["python", "-m", "scripts.ood_development", *(sys.argv[1:] if argv is None else argv)]),
              "factor_in_use": NOT_AN_XRAY_FACTOR, "factors": FACTORS.tolist(),
              "images": {name: len(images) for name, images in groups.items()},
              "pictures": sum("-crop" not in name for name in photos), "models": {}}
    for label, folder in models.items():
        predictor = Predictor.from_pretrained(folder, device="cpu")
        settings = predictor.config.ood
        scores = {name: stage_scores(predictor, images) for name, images in groups.items()}
        stage_names = settings["stages"]
        network = predictor.model.feature_stages()
        mid_level = [stage_names.index(name) for name in network[:-1]]
        thumbnail = [i for i, name in enumerate(stage_names) if name.startswith("thumbnail")]
        candidates = {"mid-level stages": mid_level, "mid-level stages + thumbnail": mid_level + thumbnail}
        report["models"][label] = {
            "model": folder, "fitted_on": settings.get("fitted_on", "the training X-rays as is"),
            "stages": stage_names, "unlike_threshold": settings["threshold"],
            "in_use": next((name for name, stages in candidates.items() if stages == settings["not_xray_stages"]),
                           ", ".join(stage_names[i] for i in settings["not_xray_stages"])),
            "stage_medians": {name: dict(zip(stage_names, np.median(s, axis=0).round(3).tolist()))
                              for name, s in scores.items()},
            "unlike_rate": {name: float((s.max(axis=1) > settings["threshold"]).mean()) for name, s in scores.items()},
            "not_a_chest_xray_rate": {
                candidate: {name: [float((s[:, stages].max(axis=1) > factor * settings["threshold"]).mean())
                                   for factor in FACTORS] for name, s in scores.items()}
                for candidate, stages in candidates.items()}}
        at = list(FACTORS).index(NOT_AN_XRAY_FACTOR)
        for candidate, rates in report["models"][label]["not_a_chest_xray_rate"].items():
            print(f"{label}, {candidate}, factor {NOT_AN_XRAY_FACTOR}: "
                  + ", ".join(f"{name} {r[at]:.0%}" for name, r in rates.items()), flush=True)
    plot(report, args.output)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output} and {args.output.with_suffix('.json').name}")


def plot(report: dict, output: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = report["models"]
    columns = max(len(m["not_a_chest_xray_rate"]) for m in models.values())
    fig, axes = plt.subplots(len(models), columns, figsize=(6 * columns, 4 * len(models)), sharey=True, squeeze=False)
    for row, (label, model) in zip(axes, models.items()):
        for ax, (candidate, rates) in zip(row, model["not_a_chest_xray_rate"].items()):
            for name, rate in rates.items():
                photo = name.startswith("photos")
                ax.plot(report["factors"], rate, lw=2.5 if photo else 1, ls="-" if photo else "--",
                        label=f"{name} ({report['images'][name]})")
            ax.axvline(report["factor_in_use"], color="grey", lw=0.8)
            ax.set(title=f"{label}: {candidate}" + (" (in use)" if candidate == model["in_use"] else ""),
                   ylim=(-0.02, 1.02))
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("share called 'not a chest X-ray'")
    for ax in axes[-1]:
        ax.set_xlabel("factor x the 'unlike' threshold")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("Development set: photos should be caught (solid), changed chest X-rays should not (dashed)")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
