"""docs/shortcuts.md from the shortcut scores runs wrote (python -m scripts.shortcut_scores), plus the sharpness tie.

    python -m scripts.shortcut_report --data ../shared/data/chest_xray

Reads docs/shortcuts/*.json (copied from the runs' output folders, with the runs' training logs beside them) and
measures, on the validation side of the bundle's split.json, how well global sharpness alone (the variance of
the Laplacian over the central 144x144 px of the 224-px image) tells the classes apart, as the images are and
under each augmentation recipe: ROC-AUC 0.5 means not at all.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from modeling.runtime.config import ModelConfig
from modeling.runtime.preprocessing import load_rgb, resize_transform
from modeling.training.augment import RECIPES, BatchAugment
from modeling.training.data import label_names, load_data, saved_split

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "docs"
SCORES = HERE / "shortcuts"
BUNDLE = ROOT / "weights" / "pneumonia-resnet50"
LAPLACIAN = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float32).view(1, 1, 3, 3)


def sharpness(pixels: torch.Tensor) -> np.ndarray:
    """Variance of the Laplacian of the central 144x144 px, grey levels 0-255, per image of a [0, 1] batch."""
    grey = pixels.mean(1, keepdim=True)[..., 40:184, 40:184] * 255
    return torch.nn.functional.conv2d(grey, LAPLACIAN).flatten(1).var(1).numpy()


def sharpness_tie(data: str) -> dict[str, float]:
    config = ModelConfig(image_size=224)
    subset = saved_split(load_data(data), BUNDLE / "split.json", "validation")
    positive = np.array([label_names(subset)[label] == "PNEUMONIA" for label in subset["label"]])
    pixels = torch.stack([resize_transform(config)(load_rgb(r["bytes"] or r["path"])) for r in subset["image"]])
    result = {"as they are": roc_auc_score(~positive, sharpness(pixels.float() / 255))}
    mean, std = torch.tensor(config.mean).view(3, 1, 1), torch.tensor(config.std).view(3, 1, 1)
    for name, recipe in RECIPES.items():
        if recipe.uses_thorax:  # sharpness as shortcut-breaking's; the thorax boxes it also needs do not change it
            continue
        augment = BatchAugment(config, seed=0, recipe=name)
        augment.set_epoch(0)
        augmented = torch.cat([augment(batch) for batch in pixels.split(64)]) * std + mean
        result[name] = roc_auc_score(~positive, sharpness(augmented.clamp(0, 1)))
    return result


# the table's order: the bundle before this work, the proxies that chose the recipe, then the bundles; anything else after
ORDER = ("bundle-before", "proxy-", "bundle")


def _rank(stem: str) -> tuple[int, str]:
    return next((i for i, prefix in enumerate(ORDER) if stem == prefix or stem.startswith(prefix)), len(ORDER)), stem


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def row(stem: str, scores: dict, training: dict | None) -> str:
    """One table row; `training`: the summary older score files kept beside them (.training.json)."""
    black, crop = scores["outside_thorax_black"], scores["cropped_to_thorax"]
    roc_auc = scores.get("roc_auc", training["final_ema"]["val_roc_auc"] if training else None)
    views = f"{scores['views']} view{'s' if scores['views'] > 1 else ''}"
    reachable = (f"{scores['gradcam_in_lungs_reachable']:.0%} ({scores['gradcam_grid']}x{scores['gradcam_grid']})"
                 if scores.get("gradcam_in_lungs_reachable") is not None else "-")
    thorax = (f"{_share(scores['gradcam_in_thorax_normal'])} / {_share(scores['gradcam_in_thorax_pneumonia'])}"
              if "gradcam_in_thorax_pneumonia" in scores else "-")
    return (f"| {scores.get('title', stem)} ({scores['precision']}, {views}) | "
            f"{'-' if roc_auc is None else f'{roc_auc:.4f}'} | {_share(scores.get('gradcam_in_lungs_normal'))} | "
            f"{_share(scores.get('gradcam_in_lungs_pneumonia'))} | {reachable} | {thorax} | "
            f"{black['flipped']:.1%} ({black['flipped_normal']:.1%} / {black['flipped_pneumonia']:.1%}) | "
            f"{black['mean_abs_dp']:.3f} | {crop['flipped']:.1%} | {crop['mean_abs_dp']:.3f} |")


def commands_of(scores: dict, training: dict | None) -> list[str]:
    """The training commands behind a row: its run's, or an older file's summary's."""
    summaries = scores.get("training")
    summaries = summaries if isinstance(summaries, list) else [summaries] if summaries else []
    return [t["command"] for t in summaries if t and t.get("command")] or ([training["command"]] if training else [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    args = parser.parse_args(argv)
    lines = ["# Shortcut scores", "", "Generated by `python -m scripts.shortcut_report --data ../shared/data/chest_xray` from the files in `docs/shortcuts/`.", "",
             "What validation can say about new data (`python -m scripts.shortcut_scores`): the share of the PNEUMONIA-class "
             "Grad-CAM inside the lung fields (`modeling/training/lungs.py`), and the share of decisions that flip, and the mean "
             "|dP|, when everything outside the thorax box is set to black or the image is cropped to it. "
             "Flips are given in all, and for NORMAL / PNEUMONIA images.", "",
             "| model | val ROC-AUC | Grad-CAM in lungs, NORMAL | PNEUMONIA | reachable (grid) | Grad-CAM in thorax box "
             "(NORMAL / PNEUMONIA) | black outside: flips (NORMAL / PNEUMONIA) | mean abs dP | cropped: flips | "
             "mean abs dP |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    commands: list[str] = []
    pictures: list[str] = []
    for path in sorted((p for p in SCORES.glob("*.json") if not p.name.endswith(".training.json")),
                       key=lambda p: _rank(p.stem)):
        scores = json.loads(path.read_text())
        training_file = path.with_name(path.stem + ".training.json")
        training = json.loads(training_file.read_text()) if training_file.exists() else None
        lines.append(row(path.stem, scores, training))
        if path.with_suffix(".png").exists() and path.stem != "bundle-before":
            pictures += [f"{scores.get('title', path.stem)}:", "", f"![{path.stem} Grad-CAM](shortcuts/{path.stem}.png)", ""]
        commands += [command for command in commands_of(scores, training) if command not in commands]
    lines += ["", "\"Reachable\": the share a map of the lung fields themselves would put inside them at the grid "
              "Grad-CAM is computed on (a ResNet's last stage: the input side / 32), once averaged over that grid and "
              "upsampled as Grad-CAM is: the most a network can reach on this measure (files written before it was "
              "measured say -). \"In thorax box\": the share inside the thorax box, which holds the lung fields and "
              "also the heart and mediastinum, and the lung behind the heart and the diaphragm domes, which the lung "
              "fields (the aerated lung, found by its darkness) leave out: lower-lobe pneumonia lies there.",
              "", "The training commands behind the rows (the proxies: ResNet18 from scratch, 128 px, 12 epochs, one "
              "seed, the final moving average):", ""]
    lines += [f"    {command}" for command in commands]
    tie = sharpness_tie(args.data)
    lines += ["", "## The sharpness tie", "",
              "ROC-AUC of global sharpness alone (variance of the Laplacian, central 144x144 px at 224 px) as a "
              "NORMAL-vs-PNEUMONIA score on the validation images, as they are and under each augmentation recipe "
              "(epoch 0, seed 0). 0.5: sharpness says nothing about the label.", "",
              "| images | ROC-AUC |", "| --- | --- |"] + [f"| {name} | {auc:.3f} |" for name, auc in tie.items()]
    lines += ["", "Grad-CAM of the bundled model (`bundle-before` above), on six NORMAL and six PNEUMONIA validation images "
              "(lung fields green, thorax box red, amber where no lung was found):", "",
              "![bundle Grad-CAM](shortcuts/bundle-before.png)", "",
              *(["The same picture for the other rows:", "", *pictures] if pictures else []),
              "Lung fields and thorax boxes of 24 NORMAL and 24 PNEUMONIA validation images, to check the "
              "localisation by eye:", "", "![lung fields](shortcuts/lung_fields.png)", ""]
    (HERE / "shortcuts.md").write_text("\n".join(lines))
    print(f"wrote {HERE / 'shortcuts.md'}")


if __name__ == "__main__":
    main()
