"""Train the chest X-ray gate (`modeling.runtime.gate`) with outlier exposure, from scratch, on the CPU in minutes.

    apt-get install gnome-backgrounds mate-backgrounds ...   # the sources (modeling.gate_training.negatives.install_command)
    python -m scripts.train_xray_gate --data ../shared/data/chest_xray \
        --split-file weights/pneumonia-resnet50/split.json --output-dir runs/xray-gate

Positives: the training side of the split's X-rays. Negatives: `modeling.gate_training.negatives`, each source
image whole and as crops, half of them in greyscale (a grey photo is the hard case). Both classes go
through one augmentation (`GATE_RECIPE`: letterboxes, padding, rotations, exposure and grey-level
windows, blur and sharpening, burnt-in text, noise, JPEG; and grey levels inverted, as a viewer shows
an X-ray whose MONOCHROME1/2 tag is wrong), so none of those changes tells the classes apart. Anything that looks like an image of the evaluation set (`modeling.gate_training.non_xray`) is
dropped from the negatives first. One tenth of the negative sources, and the validation side of the
split, are held out for the report.

The threshold is a rule fixed before training: "not a chest X-ray" below logit 0 (P = 0.5, the two
classes were sampled equally), lowered where needed so that at most 0.2% of the validation X-rays under
the augmentation are refused: a refused X-ray is the costly error. The weights are the last epoch's,
rounded to bf16 as they are saved, before the threshold is set. The output folder (written whole)
holds the gate, the fingerprints of every negative source image, and `gate_report.json`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..runtime.config import ModelConfig
from ..runtime.gate import GATE_SIZE, XrayGate
from ..runtime.preprocessing import resize_transform
from ..training.augment import SHORTCUT_BREAKING, BatchAugment
from ..training.data import decode_once, label_mapping, label_names, saved_split
from .negatives import (
    GENERATORS,
    NEGATIVE_PACKAGES,
    fingerprint,
    near_duplicates,
    package_images,
    package_licences,
)

STORE_SIZE = 128  # images are kept at this size; the augmentation's crops and warps output GATE_SIZE
CROPS_PER_SOURCE = 2  # besides the whole image
GENERATED_COUNTS = {"documents": 300, "charts": 150, "patterns": 300}
HELD_OUT_SHARE = 0.1
REFUSED_XRAYS_AT_MOST = 0.002
# the pneumonia network's shortcut-breaking changes, stronger: users' uploads are framed and exposed every which way
GREY_SHARE, INVERTED_SHARE = 0.5, 0.15  # negatives in greyscale; images of either class inverted
GATE_RECIPE = replace(SHORTCUT_BREAKING, max_rotation_degrees=20.0, pad_probability=0.35, max_pad=1.6,
                      max_exposure_change=0.4, max_blur_sigma=3.0, crop_area=(0.45, 1.0))
STORE = ModelConfig(image_size=STORE_SIZE)
# BatchAugment normalises with a config's mean and std: these keep its output in [0, 1], what the gate reads
GATE_INPUT = ModelConfig(image_size=GATE_SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def stored(image) -> np.ndarray:
    """PIL RGB image -> uint8 (3, STORE_SIZE, STORE_SIZE), squashed the way the pneumonia network's input is."""
    return resize_transform(STORE)(image).numpy()


def crops(image, rng: np.random.Generator, count: int) -> list:
    """Random crops keeping 30-90% of each side (what a phone photo of a part of a scene looks like)."""
    out = []
    for _ in range(count):
        w, h = (max(16, int(side * rng.uniform(0.3, 0.9))) for side in image.size)
        x, y = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
        out.append(image.crop((x, y, x + w, y + h)))
    return out


def gather_negatives(rng: np.random.Generator, evaluation: list[dict[str, str]]) -> tuple[list[dict], dict]:
    """Every negative source image, once: [{"source", "name", "image", "fingerprint"}], and per source the count
    read, dropped as an evaluation look-alike or as a copy of an earlier image, and the licences."""
    images, summary = [], {}
    for package in NEGATIVE_PACKAGES:
        read = [{"source": package, "name": name, "image": image} for name, image in
                tqdm(package_images(package, rng), desc=f"reading {package}", leave=False)]
        summary[package] = {"licences": package_licences(package), "read": len(read)}
        images += read
    for kind, make in GENERATORS.items():
        images += [{"source": f"generated {kind}", "name": f"{kind}-{i}", "image": make(rng)}
                   for i in tqdm(range(GENERATED_COUNTS[kind]), desc=f"generating {kind}", leave=False)]
        summary[f"generated {kind}"] = {"licences": ["this project's"], "read": GENERATED_COUNTS[kind]}
    for item in images:
        item["fingerprint"] = fingerprint(item["image"])
    fingerprints = [item["fingerprint"] for item in images]
    like_evaluation = set(near_duplicates(fingerprints, evaluation))
    copies = set()  # the same wallpaper at several resolutions, the same figure in two manuals
    seen: list[dict[str, str]] = []
    for i, f in enumerate(fingerprints):
        if i not in like_evaluation:
            if seen and near_duplicates([f], seen, correlation=0.99):
                copies.add(i)
            else:
                seen.append(f)
    kept = [item for i, item in enumerate(images) if i not in like_evaluation and i not in copies]
    for source, entry in summary.items():
        entry["like_an_evaluation_image"] = sum(images[i]["source"] == source for i in like_evaluation)
        entry["copies"] = sum(images[i]["source"] == source for i in copies)
        entry["kept"] = sum(item["source"] == source for item in kept)
    return kept, summary


def negative_pool(items: list[dict], rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 3, S, S): each source image whole and as CROPS_PER_SOURCE crops."""
    return np.stack([stored(view) for item in items for view in [item["image"], *crops(item["image"], rng,
                                                                                        CROPS_PER_SOURCE)]])


def xray_pixels(splits, split_file: Path, side: str) -> np.ndarray:
    """uint8 (N, 3, S, S) of one side of the split, decoded once (the datasets cache keeps it)."""
    split = saved_split(splits, split_file, side)
    names = label_names(split)
    decoded = decode_once(split, STORE, label_mapping(names, names))
    return np.frombuffer(b"".join(decoded["pixels"]), np.uint8).reshape(len(decoded), 3, STORE_SIZE, STORE_SIZE).copy()


def greyscale(pixels: torch.Tensor, generator: torch.Generator, share: float = GREY_SHARE) -> torch.Tensor:
    """`share` of uint8 images (N, 3, S, S) in greyscale (X-rays are grey, a grey photo is the hard case)."""
    n = len(pixels)
    grey = torch.rand(n, generator=generator) < share
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    luminance = (pixels.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return torch.where(grey.view(n, 1, 1, 1), luminance.expand_as(pixels), pixels)


def augmented(pixels: torch.Tensor, augment: BatchAugment, generator: torch.Generator) -> torch.Tensor:
    """uint8 images of either class -> the gate's input in [0, 1]: `INVERTED_SHARE` inverted, then `augment`."""
    n = len(pixels)
    invert = torch.rand(n, generator=generator) < INVERTED_SHARE
    return augment(torch.where(invert.view(n, 1, 1, 1), 255 - pixels, pixels), output_size=GATE_SIZE)


@torch.no_grad()
def gate_logits(gate: XrayGate, pixels: np.ndarray, augment: BatchAugment | None = None,
                generator: torch.Generator | None = None, batch_size: int = 256) -> np.ndarray:
    """Logits of uint8 images (N, 3, S, S), as they are (squashed to the gate's size) or `augmented`."""
    out = []
    for start in range(0, len(pixels), batch_size):
        batch = torch.from_numpy(pixels[start:start + batch_size])
        x = augmented(batch, augment, generator) if augment else batch.float() / 255
        out.append(gate(x).float())
    return torch.cat(out).numpy()


def to_bf16_and_back(gate: XrayGate) -> None:
    """What the saved file holds (modeling.runtime.gate saves bf16): the threshold is set on exactly these weights."""
    with torch.no_grad():
        for tensor in gate.backbone.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.bfloat16).float())
