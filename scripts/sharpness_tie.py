"""How well global sharpness alone tells NORMAL from PNEUMONIA on validation: docs/sharpness_tie.json, which
docs/shortcuts.md shows (python -m scripts.render_docs).

    python -m scripts.sharpness_tie --data ../shared/data/chest_xray

On the validation side of the bundle's split.json, the ROC-AUC of the variance of the Laplacian over the central
144x144 px of the 224-px image, as the images are and under each augmentation recipe (epoch 0, seed 0): 0.5 means
sharpness says nothing about the label.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from modeling.runtime.config import ModelConfig
from modeling.runtime.files import write_json_atomic
from modeling.runtime.preprocessing import load_rgb, resize_transform
from modeling.training.augment import RECIPES, BatchAugment
from modeling.training.data import label_names, load_data, saved_split

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "sharpness_tie.json"
BUNDLE = ROOT / "weights" / "pneumonia-resnet50"
LAPLACIAN = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float32).view(1, 1, 3, 3)


def sharpness(pixels: torch.Tensor) -> np.ndarray:
    """Variance of the Laplacian of the central 144x144 px, grey levels 0-255, per image of a [0, 1] batch."""
    grey = pixels.mean(1, keepdim=True)[..., 40:184, 40:184] * 255
    return torch.nn.functional.conv2d(grey, LAPLACIAN).flatten(1).var(1).numpy()


def sharpness_tie(data: str) -> dict[str, float]:
    """ROC-AUC of sharpness as a NORMAL score, as the images are and under each recipe that does not need the
    thorax boxes (sharpness is shortcut-breaking's under those)."""
    config = ModelConfig(image_size=224)
    subset = saved_split(load_data(data), BUNDLE / "split.json", "validation")
    positive = np.array([label_names(subset)[label] == "PNEUMONIA" for label in subset["label"]])
    pixels = torch.stack([resize_transform(config)(load_rgb(r["bytes"] or r["path"])) for r in subset["image"]])
    result = {"as they are": float(roc_auc_score(~positive, sharpness(pixels.float() / 255)))}
    mean, std = torch.tensor(config.mean).view(3, 1, 1), torch.tensor(config.std).view(3, 1, 1)
    for name, recipe in RECIPES.items():
        if recipe.uses_thorax:
            continue
        augment = BatchAugment(config, seed=0, recipe=name)
        augment.set_epoch(0)
        augmented = torch.cat([augment(batch) for batch in pixels.split(64)]) * std + mean
        result[name] = float(roc_auc_score(~positive, sharpness(augmented.clamp(0, 1))))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "scripts.sharpness_tie", *(sys.argv[1:] if argv is None else argv)])
    write_json_atomic(OUTPUT, {"command": command, "images": "the validation side of the bundle's split.json",
                               "roc_auc": sharpness_tie(args.data)})
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
