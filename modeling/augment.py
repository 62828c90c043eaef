"""Training augmentation on whole uint8 batches, on whatever device the batch is on.

Mild, anatomically plausible changes for radiographs: a crop keeping 70-100% of the image
(aspect 0.85-1.18), a rotation of up to 10 degrees and a shift of up to 5% (patient
positioning), and brightness/contrast changes of up to 25% (exposure). No horizontal flips:
the heart sits on the left. Crop, rotation and shift are one affine map per image, so the
whole batch is resampled by a single `grid_sample`; nothing is decoded or resized per image.

Randomness comes from a generator reseeded per (seed, epoch, process), so a resumed run
repeats an epoch's augmentation exactly and each process of a distributed run draws its own.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .preprocessing import normalize

CROP_AREA = (0.7, 1.0)
CROP_ASPECT = (0.85, 1.18)
MAX_ROTATION_DEGREES = 10.0
MAX_SHIFT = 0.05  # fraction of the image side
MAX_EXPOSURE_CHANGE = 0.25  # brightness and contrast factors in [0.75, 1.25]


class BatchAugment:
    """uint8 batch (B, 3, H, W) -> augmented, normalised float batch (B, 3, H, W), channels_last."""

    def __init__(self, config: ModelConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self.generator: torch.Generator | None = None

    def set_epoch(self, epoch: int, process_index: int = 0, device: torch.device | str = "cpu") -> None:
        self.generator = torch.Generator(device=device).manual_seed(
            (self.seed * 1_000_003 + epoch) * 1_009 + process_index)

    def _uniform(self, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, device=device, generator=self.generator)

    def affine_matrices(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, 2, 3) maps from output to input coordinates in [-1, 1] (affine_grid's convention)."""
        area = self._uniform(n, *CROP_AREA, device)
        aspect = torch.exp(self._uniform(n, math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1]), device))
        width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
        centre_x = self._uniform(n, -1, 1, device) * (1 - width) + self._uniform(n, -2, 2, device) * MAX_SHIFT
        centre_y = self._uniform(n, -1, 1, device) * (1 - height) + self._uniform(n, -2, 2, device) * MAX_SHIFT
        angle = torch.deg2rad(self._uniform(n, -MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, device))
        cos, sin = angle.cos(), angle.sin()
        return torch.stack([torch.stack([cos * width, -sin * height, centre_x], 1),
                            torch.stack([sin * width, cos * height, centre_y], 1)], 1)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            self.set_epoch(0, device=pixels.device)
        n, device = pixels.shape[0], pixels.device
        images = resample(pixels, self.affine_matrices(n, device))
        brightness = self._uniform(n, 1 - MAX_EXPOSURE_CHANGE, 1 + MAX_EXPOSURE_CHANGE, device).view(n, 1, 1, 1)
        contrast = self._uniform(n, 1 - MAX_EXPOSURE_CHANGE, 1 + MAX_EXPOSURE_CHANGE, device).view(n, 1, 1, 1)
        images = (images * brightness).clamp(0, 1)
        grey_mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = ((images - grey_mean) * contrast + grey_mean).clamp(0, 1)
        return normalize(images, self.config).contiguous(memory_format=torch.channels_last)


def warp(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Float (B, C, H, W), each image resampled bilinearly through its (2, 3) affine map; zeros outside."""
    grid = F.affine_grid(matrices.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resample(pixels: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float [0, 1], each image resampled through its (2, 3) affine map (black outside)."""
    return warp(pixels.float() / 255, matrices)


def view_matrix(zoom: float = 1.0, degrees: float = 0.0) -> torch.Tensor:
    """A fixed (2, 3) view: zoom > 1 magnifies the centre, `degrees` rotates (test-time augmentation)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    return torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]])


# the test-time views that `python -m modeling.calibration --tta` evaluates and, if chosen, stores in config.json
DEFAULT_TTA_VIEWS = [{"zoom": 1.1, "degrees": 0.0}, {"zoom": 1.0, "degrees": -5.0}, {"zoom": 1.0, "degrees": 5.0}]


def normalized_views(pixels: torch.Tensor, views: list[dict[str, float]], config: ModelConfig) -> torch.Tensor:
    """Normalised network input (B, 3, H, W) -> (B * (1 + len(views)), 3, H, W): the batch as is, then each
    view of it; what falls outside the image is black, as in `resample`."""
    if not views:
        return pixels
    black = normalize(torch.zeros(3, 1, 1, device=pixels.device), config).to(pixels.dtype)
    shifted = (pixels - black).float()
    batches = [pixels]
    for view in views:
        matrices = view_matrix(view["zoom"], view["degrees"]).expand(len(pixels), 2, 3)
        batches.append((warp(shifted, matrices) + black).to(pixels.dtype))
    return torch.cat(batches).contiguous(memory_format=torch.channels_last)
