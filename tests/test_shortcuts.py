"""Lung fields by classical image processing, and the shortcut scores built on them, on real X-rays."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from modeling.analysis.shortcuts import (
    cropped_to_thorax,
    fields_of,
    gradcam_share_in,
    lung_fields_as_gradcam,
    outside_thorax_black,
    thorax_box_mask,
)
from modeling.runtime.config import ModelConfig
from modeling.runtime.inference import runtime_precision
from modeling.runtime.preprocessing import load_rgb
from modeling.training.lungs import FALLBACK_BOX, lung_fields
from scripts.shortcut_scores import main
from tests.helpers import KERMANY

NORMAL = sorted((KERMANY / "train" / "NORMAL").iterdir())
PNEUMONIA = sorted((KERMANY / "train" / "PNEUMONIA").iterdir())


def _grey(path, size=224):
    return np.asarray(load_rgb(path).convert("L").resize((size, size), Image.BILINEAR))


def test_lung_fields_of_normal_x_rays_are_two_lungs_inside_the_thorax_box():
    fields = [lung_fields(_grey(path)) for path in NORMAL]
    found = [f for f in fields if f.found]
    assert len(found) >= 0.8 * len(fields)
    for f in found:
        area = f.mask.mean()
        assert 0.08 < area < 0.45  # two lungs, not the whole image nor a speck
        left, right = f.mask[:, :112].sum(), f.mask[:, 112:].sum()
        assert min(left, right) > 0.25 * max(left, right)  # a field on either side of the midline
        top, bottom, x0, x1 = f.box
        rows, columns = np.nonzero(f.mask.any(1))[0], np.nonzero(f.mask.any(0))[0]
        assert top <= rows[0] and bottom > rows[-1] and x0 <= columns[0] and x1 > columns[-1]
        assert f.mask[:5].sum() == 0  # nothing at the top edge (the neck)


def test_lung_fields_ignore_black_borders_and_fall_back_on_a_flat_image():
    path = NORMAL[0]
    plain = lung_fields(_grey(path, 160))
    padded = np.zeros((224, 224), np.uint8)
    padded[32:192, 32:192] = _grey(path, 160)  # the same image, letterboxed on all sides
    framed = lung_fields(padded)
    assert plain.found and framed.found
    inner = framed.mask[32:192, 32:192]
    assert framed.mask.sum() == inner.sum()  # no field on the black border
    overlap = (inner & plain.mask).sum() / (inner | plain.mask).sum()
    assert overlap > 0.7
    flat = lung_fields(np.full((224, 224), 128, np.uint8))
    assert not flat.found
    top, bottom, left, right = flat.box
    assert (top, bottom, left, right) == tuple(round(v * 224) for v in FALLBACK_BOX)


def test_thorax_interventions_keep_the_box_and_change_only_what_lies_outside():
    image = load_rgb(PNEUMONIA[0]).resize((300, 250))
    fields = fields_of(image, ModelConfig(image_size=224))
    top, bottom, left, right = fields.box
    box = (round(left * 300 / 224), round(top * 250 / 224), round(right * 300 / 224), round(bottom * 250 / 224))
    black = np.asarray(outside_thorax_black(image, fields))
    original = np.asarray(image)
    assert black.shape == original.shape
    assert np.array_equal(black[box[1]:box[3], box[0]:box[2]], original[box[1]:box[3], box[0]:box[2]])
    outside = np.ones(black.shape[:2], bool)
    outside[box[1]:box[3], box[0]:box[2]] = False
    assert outside.any() and black[outside].max() == 0
    cropped = cropped_to_thorax(image, fields)
    assert cropped.size == (box[2] - box[0], box[3] - box[1])


def test_gradcam_share_in_is_the_heatmaps_mass_inside_the_fields():
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True
    heatmap = np.zeros((8, 8))
    heatmap[:, 2:6] = 1.0
    assert gradcam_share_in(heatmap, mask) == pytest.approx(0.5)
    assert gradcam_share_in(heatmap * mask, mask) == pytest.approx(1.0)
    assert gradcam_share_in(np.zeros((8, 8)), mask) is None


def test_the_thorax_box_holds_the_lung_fields_and_the_heart_between_them():
    fields = fields_of(load_rgb(NORMAL[0]), ModelConfig(image_size=224))
    box = thorax_box_mask(fields)
    assert fields.found and box[fields.mask].all()
    top, bottom, left, right = fields.box
    assert box.sum() == (bottom - top) * (right - left) and not box[fields.mask.shape[0] // 2, :left].any()
    middle = (left + right) // 2  # the mediastinum: inside the box, outside the fields
    assert box[(top + bottom) // 2, middle] and not fields.mask[(top + bottom) // 2, middle]


def test_a_map_of_the_lung_fields_themselves_reaches_less_inside_them_at_a_coarser_grid():
    fields = fields_of(load_rgb(NORMAL[0]), ModelConfig(image_size=224))
    reachable = {grid: gradcam_share_in(lung_fields_as_gradcam(fields.mask, grid), fields.mask)
                 for grid in (7, 14, 224)}
    assert reachable[224] == pytest.approx(1.0)  # at full resolution the fields themselves are all inside
    assert fields.mask.mean() < reachable[7] < reachable[14] < 1.0  # coarser grids spill over the edges


@pytest.mark.slow
def test_shortcut_scores_of_a_trained_model_on_its_validation_side(tiny_model_dir, small_data, tmp_path):
    main(["--model", str(tiny_model_dir), "--data", str(small_data), "--output-dir", str(tmp_path / "model"),
          "--contact-sheet"])  # `python -m scripts.shortcut_scores ...`, by the command's own main in this process
    scores = json.loads((tmp_path / "model" / "shortcuts.json").read_text())
    split = json.loads((tiny_model_dir / "split.json").read_text())
    assert scores["images"] == len(split["validation"]) == scores["normal"] + scores["pneumonia"]
    for change in ("outside_thorax_black", "cropped_to_thorax"):
        values = scores[change]
        assert 0 <= values["flipped"] <= 1 and values["mean_abs_dp"] >= 0
        assert values["mean_abs_dp"] >= abs(values["mean_dp_normal"]) * scores["normal"] / scores["images"] - 1e-9
    assert 0 <= scores["gradcam_in_lungs_pneumonia"] <= 1 and scores["views"] == 1
    for label in ("normal", "pneumonia"):  # the thorax box holds the lung fields
        assert scores[f"gradcam_in_lungs_{label}"] <= scores[f"gradcam_in_thorax_{label}"] + 1e-9 <= 1 + 1e-9
    assert scores["gradcam_grid"] == 2 and "gradcam_in_lungs_reachable" in scores  # test_resnet: 64 px / 32
    assert scores["training"]["command"].startswith("python train.py") and scores["training"]["hours"] > 0
    # a training run's folder: its network, bf16, the image alone
    main(["--model", str(tiny_model_dir.parent), "--data", str(small_data), "--output-dir", str(tmp_path / "run"),
          "--no-gradcam"])
    of_run = json.loads((tmp_path / "run" / "shortcuts.json").read_text())
    bf16 = runtime_precision("bfloat16", torch.device("cpu"))  # bf16 where this CPU runs it fast
    assert (of_run["precision"], of_run["views"], of_run["threshold"]) == (bf16, 1, 0.5)
    assert of_run["training"]["seed"] == 42 and of_run["images"] == scores["images"]
    for picture in ("shortcuts.png", "lung_fields.png"):
        assert (tmp_path / "model" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
