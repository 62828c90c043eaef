"""Lung fields and the thorax box of a frontal chest X-ray, by classical image processing (scikit-image).

Used to measure where a network looks (`modeling.analysis.shortcuts`), never by the network itself.
On the grey image squashed to the model's input size, within its content (black borders of letterboxes and
padding cut off, `content_box`):
1. smooth it (Gaussian, sigma 1% of the side);
2. call dark what lies below Otsu's threshold, computed inside the central two thirds of the image (where
   the body is), so that black borders and letterboxes do not set it;
3. erode the dark mask (a disk of 6% of the side), which cuts the thin bridges between the lungs and the
   air around the body, and drop what still touches the border (that air, black bands); what remains
   grows back within the dark mask;
4. keep the two largest remaining regions on either side of the midline (the lungs), each at least 2% of the
   image, and replace each by its convex hull grown by `FIELD_MARGIN`, so that an opacity inside a lung
   (pneumonia) stays inside its field.
Where no lung is found on a side, or one under `MIRROR_BELOW` of the other's area, the larger one's mirror
image is added; where none is found at
all, the fields are the two halves of the standard thorax box (`FALLBACK_BOX`), and `LungFields.found` is
False. The thorax box is the fields' bounding box grown by `BOX_MARGIN` (more at the bottom, where the lungs
reach below the diaphragm's dome), and it reaches down at least as far as the standard box: a lung base
whitened by consolidation is often missed by step 2. Checked by eye
on contact sheets of validation images: `python -m scripts.shortcut_scores --contact-sheet`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import filters, measure, segmentation

# (top, bottom, left, right) as fractions of the side: 12% off the top and bottom, 8% off each side
FALLBACK_BOX = (0.12, 0.88, 0.08, 0.92)
FIELD_MARGIN = 0.03  # the hulls grown by this share of the side (Grad-CAM's cells are 1/7 of it)
BOX_MARGIN = (0.04, 0.08, 0.04)  # top, bottom, sides: more below, where the lungs reach behind the diaphragm
MIN_LUNG_AREA = 0.02  # of the image
BLACK_LEVEL = 0.04  # grey levels at or below this, in [0, 1], are a border's black
SEED_EROSION = 0.06  # of the side
MIRROR_BELOW = 0.4  # a lung under this share of the other's area is completed by the other's mirror image


@dataclass
class LungFields:
    mask: np.ndarray  # bool (H, W): inside a lung field
    box: tuple[int, int, int, int]  # the thorax box in pixels: top, bottom, left, right (bottom and right exclusive)
    found: bool  # False: no lung was found and the fields are the fallback box's halves


def _fallback(shape: tuple[int, int]) -> LungFields:
    height, width = shape
    top, bottom, left, right = (round(FALLBACK_BOX[0] * height), round(FALLBACK_BOX[1] * height),
                                round(FALLBACK_BOX[2] * width), round(FALLBACK_BOX[3] * width))
    mask = np.zeros(shape, bool)
    middle = width // 2
    mask[top:bottom, left:middle - width // 40] = True
    mask[top:bottom, middle + width // 40:right] = True
    return LungFields(mask, (top, bottom, left, right), False)


def content_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns that are not black borders (letterbox, padding): top, bottom, left, right."""
    lit = image > BLACK_LEVEL
    rows, columns = np.nonzero(lit.mean(1) > 0.05)[0], np.nonzero(lit.mean(0) > 0.05)[0]
    if len(rows) < 0.3 * image.shape[0] or len(columns) < 0.3 * image.shape[1]:
        return 0, image.shape[0], 0, image.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1


def lung_fields(grey: np.ndarray) -> LungFields:
    """Lung fields of one grey image (H, W), uint8 or float in [0, 1]."""
    image = np.asarray(grey, dtype=np.float64)
    if image.max() > 1.0:
        image = image / 255.0
    top, bottom, left, right = content_box(image)
    inside = _lung_fields_of_content(image[top:bottom, left:right])
    mask = np.zeros(image.shape, bool)
    mask[top:bottom, left:right] = inside.mask
    box = inside.box
    return LungFields(mask, (box[0] + top, box[1] + top, box[2] + left, box[3] + left), inside.found)


def _lung_fields_of_content(image: np.ndarray) -> LungFields:
    height, width = image.shape
    side = min(height, width)
    smooth = filters.gaussian(image, sigma=max(1.0, 0.01 * side))
    inner = (slice(height // 6, height - height // 6), slice(width // 6, width - width // 6))
    if np.ptp(smooth[inner]) < 1e-3:
        return _fallback(image.shape)
    dark = smooth < filters.threshold_otsu(smooth[inner])
    # erosion cuts the thin bridges from the lungs to the air around the body; what still touches the border
    # is that air (the padding: beyond the image is air too), and the lungs grow back within the dark mask
    radius = max(1, round(SEED_EROSION * side))
    # (erosion and dilation by a disk, through Euclidean distance transforms: linear in the pixels)
    seeds = segmentation.clear_border(ndimage.distance_transform_edt(np.pad(dark, 1, constant_values=True))[1:-1, 1:-1]
                                      > radius)
    if not seeds.any():
        return _fallback(image.shape)
    labels = measure.label((ndimage.distance_transform_edt(~seeds) <= radius) & dark)
    regions = [r for r in measure.regionprops(labels) if r.area >= MIN_LUNG_AREA * height * width]
    middle = width / 2
    sides = {}
    for region in sorted(regions, key=lambda r: r.area, reverse=True):
        name = "left" if region.centroid[1] < middle else "right"
        sides.setdefault(name, region)
    if not sides:
        return _fallback(image.shape)
    hulls = []
    for region in sides.values():
        hull = np.zeros(image.shape, bool)
        top, left, bottom, right = region.bbox
        hull[top:bottom, left:right] = region.image_convex
        hulls.append(hull)
    hulls.sort(key=np.sum, reverse=True)
    mask = np.logical_or.reduce(hulls)
    if len(hulls) == 1 or hulls[1].sum() < MIRROR_BELOW * hulls[0].sum():
        # one lung found, or a sliver of the other (white with consolidation, say): add the mirror of the larger
        mask |= hulls[0][:, ::-1]
    mask = ndimage.distance_transform_edt(~ndimage.binary_fill_holes(mask)) <= max(1, round(FIELD_MARGIN * side))
    rows, columns = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    above, below, beside = (round(m * side) for m in BOX_MARGIN)
    # never above the standard box's bottom: a base whitened by consolidation is missed more often than not
    box = (max(0, rows[0] - above), min(height, max(rows[-1] + 1 + below, round(FALLBACK_BOX[1] * height))),
           max(0, columns[0] - beside), min(width, columns[-1] + 1 + beside))
    return LungFields(mask, tuple(int(v) for v in box), True)
