"""Shortcut scores: does the network decide from the lungs, or from what surrounds them?

Validation carved from train saturates and cannot tell which network holds on new data. These scores,
computed on validation images, measure two things that change between hospitals and collection periods:
- (a) where the PNEUMONIA-class Grad-CAM sits: its share inside the lung fields (`modeling.training.lungs`), on
  NORMAL and on PNEUMONIA images separately, and inside the thorax box (which also holds the heart, and the lung
  behind it and behind the diaphragm domes, that the lung fields leave out);
- (b) how far P(pneumonia) moves when everything outside the thorax box is set to black, and when the image
  is cropped to the thorax box: mean |dP| and the share of decisions that flip at the model's threshold.

    python -m scripts.shortcut_scores --model runs/candidate --data ../shared/data/chest_xray --output-dir runs/candidate/shortcuts
    python -m scripts.shortcut_scores --model weights/pneumonia-resnet50 --data ... --output-dir ... --contact-sheet

Writes shortcuts.json and shortcuts.png (Grad-CAM of six NORMAL and six PNEUMONIA validation images with their
lung fields); --contact-sheet also writes lung_fields.png, the fields and thorax boxes of 48 images, to check
the localisation by eye. A model folder runs as it is deployed (precision, views, temperature, threshold), or in
--precision with the image alone; a training run's network runs in float32 (or --precision), the image alone, at
threshold 0.5. shortcuts.json also keeps the validation ROC-AUC and what the training log says (command, seed, hours).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from ..runtime.config import ModelConfig
from ..runtime.display import overlay
from ..runtime.inference import Predictor
from ..runtime.preprocessing import read_image, resize_transform, to_rgb
from ..training.data import label_mapping, label_names, load_data, saved_split
from ..training.lungs import LungFields, lung_fields
from ..training.run_log import LOG_NAME, read_training_log, stage_of

SHOWN_PER_CLASS = 6


def fields_of(image: Image.Image, config: ModelConfig) -> LungFields:
    """Lung fields of an RGB image as the network sees it (`resize_transform`: where Grad-CAM lives)."""
    return lung_fields(resize_transform(config)(image).float().mean(0).numpy() / 255)


def _box_in_image(fields: LungFields, image: Image.Image) -> tuple[int, int, int, int]:
    """The thorax box (found on the squashed image) in the image's own pixels: left, top, right, bottom."""
    size = fields.mask.shape[0]
    top, bottom, left, right = fields.box
    return (round(left * image.width / size), round(top * image.height / size),
            round(right * image.width / size), round(bottom * image.height / size))


def outside_thorax_black(image: Image.Image, fields: LungFields) -> Image.Image:
    left, top, right, bottom = _box_in_image(fields, image)
    black = Image.new("RGB", image.size)
    black.paste(image.crop((left, top, right, bottom)), (left, top))
    return black


def cropped_to_thorax(image: Image.Image, fields: LungFields) -> Image.Image:
    return image.crop(_box_in_image(fields, image))


def gradcam_share_in(heatmap: np.ndarray, mask: np.ndarray) -> float | None:
    """The share of a Grad-CAM map's mass inside a mask: the lung fields, or the thorax box (None for an empty map)."""
    total = float(heatmap.sum())
    return float((heatmap * mask).sum()) / total if total > 0 else None


def thorax_box_mask(fields: LungFields) -> np.ndarray:
    """The thorax box as a mask of the fields' shape: the lungs, the heart and mediastinum between them, and the lung
    bases behind the heart and the diaphragm domes, which the lung fields (the aerated, dark lung) leave out."""
    top, bottom, left, right = fields.box
    mask = np.zeros(fields.mask.shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def lung_fields_as_gradcam(mask: np.ndarray, grid: int) -> np.ndarray:
    """The map a network that looked at the lung fields and nowhere else would give: the fields averaged over the
    last feature map's grid, then made a heatmap as Grad-CAM makes one (`modeling.runtime.explain`). Its share inside the
    fields is the most a map at that grid can reach: the yardstick of `gradcam_share_in`."""
    import torch
    cells = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], grid)
    heatmap = torch.nn.functional.interpolate(cells, size=mask.shape, mode="bilinear", align_corners=False)[0, 0]
    low, high = heatmap.min(), heatmap.max()
    return ((heatmap - low) / (high - low) if high > low else torch.zeros_like(heatmap)).numpy()


def feature_map_side(predictor: Predictor) -> int:
    """The side of the last feature map, the grid Grad-CAM is computed on (7 for a ResNet at 224 px)."""
    import torch
    side = predictor.config.image_size
    with torch.no_grad():
        return predictor.model.forward_with_feature_map(torch.zeros(1, 3, side, side, device=predictor.device))[2].shape[-1]


def _change(before: np.ndarray, after: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, float]:
    flipped = (before >= threshold) != (after >= threshold)
    return {"mean_abs_dp": float(np.abs(after - before).mean()), "flipped": float(flipped.mean()),
            "flipped_normal": float(flipped[~positive].mean()), "flipped_pneumonia": float(flipped[positive].mean()),
            "mean_dp_normal": float((after - before)[~positive].mean()),
            "mean_dp_pneumonia": float((after - before)[positive].mean())}


def shortcut_scores(predictor: Predictor, images: Sequence[Image.Image], positive: np.ndarray,
                    gradcam: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scores, per-image details for the picture) of the predictor on RGB images with labels `positive`."""
    config = predictor.config
    positive = np.asarray(positive, bool)
    fields = [fields_of(image, config) for image in tqdm(images, desc="lung fields", leave=False)]
    p = config.positive_index
    before = predictor.probabilities(images)[:, p]
    black = predictor.probabilities([outside_thorax_black(i, f) for i, f in zip(images, fields)])[:, p]
    cropped = predictor.probabilities([cropped_to_thorax(i, f) for i, f in zip(images, fields)])[:, p]
    scores: dict[str, Any] = {
        "images": len(images), "normal": int((~positive).sum()), "pneumonia": int(positive.sum()),
        "roc_auc": float(roc_auc_score(positive, before)),
        "threshold": config.threshold, "views": 1 + len(predictor.views), "precision": predictor.precision,
        "lung_fields_found": float(np.mean([f.found for f in fields])),
        "lung_field_area": float(np.mean([f.mask.mean() for f in fields])),
        "outside_thorax_black": _change(before, black, positive, config.threshold),
        "cropped_to_thorax": _change(before, cropped, positive, config.threshold),
    }
    shares: list[float | None] = []
    thorax_shares: list[float | None] = []
    heatmaps: list[np.ndarray | None] = []
    if gradcam:
        for image, field in tqdm(list(zip(images, fields)), desc="Grad-CAM", leave=False):
            heatmap = predictor.grad_cam(image)
            heatmaps.append(heatmap)
            shares.append(gradcam_share_in(heatmap, field.mask))
            thorax_shares.append(gradcam_share_in(heatmap, thorax_box_mask(field)))
        for name, side in (("normal", ~positive), ("pneumonia", positive)):
            for where, values in (("lungs", shares), ("thorax", thorax_shares)):
                kept = [s for s, keep in zip(values, side) if keep and s is not None]
                scores[f"gradcam_in_{where}_{name}"] = float(np.mean(kept)) if kept else None
        grid = feature_map_side(predictor)
        scores["gradcam_grid"] = grid
        reachable = [gradcam_share_in(lung_fields_as_gradcam(f.mask, grid), f.mask) for f in fields]
        reachable = [share for share in reachable if share is not None]
        scores["gradcam_in_lungs_reachable"] = float(np.mean(reachable)) if reachable else None
    details = {"fields": fields, "probabilities": before, "shares": shares, "heatmaps": heatmaps}
    return scores, details


def _outline(image: Image.Image, fields: LungFields, size: int) -> Image.Image:
    """The image at `size` px with its lung fields (green) and thorax box (red) drawn on it."""
    from skimage.segmentation import find_boundaries
    shown = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR)).copy()
    mask = np.asarray(Image.fromarray(fields.mask).resize((size, size), Image.NEAREST))
    shown[find_boundaries(mask)] = (0, 255, 0)
    picture = Image.fromarray(shown)
    top, bottom, left, right = (round(v * size / fields.mask.shape[0]) for v in fields.box)
    ImageDraw.Draw(picture).rectangle((left, top, right - 1, bottom - 1), outline=(255, 0, 0) if fields.found
                                      else (255, 200, 0))
    return picture


def gradcam_figure(images: Sequence[Image.Image], positive: np.ndarray, details: dict[str, Any], title: str,
                   path: Path) -> None:
    """Grad-CAM (PNEUMONIA class) of the first six NORMAL and six PNEUMONIA images, lung fields outlined."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    chosen = [np.flatnonzero(~positive)[:SHOWN_PER_CLASS], np.flatnonzero(positive)[:SHOWN_PER_CLASS]]
    fig, axes = plt.subplots(2, SHOWN_PER_CLASS, figsize=(2.4 * SHOWN_PER_CLASS, 5.6))
    for row, indices in enumerate(chosen):
        for ax, index in zip(axes[row], indices):
            shown = overlay(images[index], details["heatmaps"][index], max_side=224)
            ax.imshow(_outline(shown, details["fields"][index], 224))
            share = details["shares"][index]
            ax.set_title(f"{'PNEUMONIA' if row else 'NORMAL'}  P={details['probabilities'][index]:.2f}\n"
                         f"in lungs {share:.0%}" if share is not None else "no evidence", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def contact_sheet(images: Sequence[Image.Image], config: ModelConfig, path: Path, columns: int = 8,
                  side: int = 160) -> None:
    """Lung fields (green) and thorax box (red; amber where none was found and the standard box is used)."""
    tiles = [_outline(image, fields_of(image, config), side) for image in images]
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * side, rows * side))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, ((index % columns) * side, (index // columns) * side))
    sheet.save(path)


def training_summary(folder: Path) -> dict[str, Any] | None:
    """What the shortcut table says of how a network was trained, from the training log in its folder (None if none)."""
    if not (folder / LOG_NAME).exists():
        return None
    log = read_training_log(folder)
    return {**stage_of(log), "seed": log["args"].get("seed"), "final_epoch": log["history"][-1] if log["history"] else None}


def validation_images(split_file: Path, data: str, label_order: Sequence[str], positive_label: str
                      ) -> tuple[list[Image.Image], np.ndarray]:
    """The validation side of a split.json, decoded, with labels (True: positive)."""
    subset = saved_split(load_data(data), split_file, "validation")
    to_model = label_mapping(label_names(subset), label_order)
    images = [to_rgb(read_image(r["bytes"] or r["path"])) for r in tqdm(subset["image"], desc="reading", leave=False)]
    positive = np.array([label_order[to_model[label]] == positive_label for label in subset["label"]])
    return images, positive
