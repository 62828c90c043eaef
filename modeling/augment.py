"""Training augmentation on whole uint8 batches, on whatever device the batch is on.

Changes a radiograph goes through before it reaches a user, none anatomically implausible:
- geometry: a crop keeping 70-100% of the image (aspect 0.75-1.33), a rotation of up to 10
  degrees and a shift of up to 5% (patient positioning); for a quarter of the images instead a
  zoom-out onto black, on one side only (a letterboxed export, up to 16:9) or on both (padding);
- exposure: brightness and contrast of up to 25%, a gamma of 0.67-1.5 and a random grey-level
  window (the many ways a 12-16-bit source is turned into 8 bits);
- sharpness: a Gaussian blur (sigma up to 2 px at 224 px) for a quarter of the images.
No horizontal flips: the heart sits on the left. Crop, rotation, shift and padding are one
affine map per image, so the whole batch is resampled by a single `grid_sample`, at the epoch's
training size (progressive resizing: `output_size`); nothing is decoded or resized per image.

Randomness comes from a generator reseeded per (seed, epoch, process), so a resumed run
repeats an epoch's augmentation exactly and each process of a distributed run draws its own.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .geometry import warp
from .preprocessing import normalize

CROP_AREA = (0.7, 1.0)
CROP_ASPECT = (0.75, 1.33)
MAX_ROTATION_DEGREES = 10.0
MAX_SHIFT = 0.05  # fraction of the image side
PAD_PROBABILITY = 0.25  # zoom out onto black instead of cropping
MAX_LETTERBOX = 16 / 9  # a 16:9 frame around a square image
MAX_PAD = 1.3  # padding on both sides: the image fills 1/1.3 of each side
MAX_EXPOSURE_CHANGE = 0.25  # brightness and contrast factors in [0.75, 1.25]
GAMMA = (0.67, 1.5)
WINDOW_LOW, WINDOW_HIGH = (-0.1, 0.15), (0.85, 1.1)  # grey levels 0 and 1 go to these
BLUR_PROBABILITY = 0.25
MAX_BLUR_SIGMA = 2.0  # pixels at 224 px, scaled with the training size


def describe() -> str:
    """The augmentation in one sentence, from the constants above (for the model card)."""
    return (f"a crop keeping {CROP_AREA[0]:.0%}-{CROP_AREA[1]:.0%} of the image (aspect {CROP_ASPECT[0]}-{CROP_ASPECT[1]}), "
            f"a rotation of up to {MAX_ROTATION_DEGREES:g} degrees and a shift of up to {MAX_SHIFT:.0%}; for "
            f"{PAD_PROBABILITY:.0%} of the images instead a zoom-out onto black (a letterbox up to 16:9 or padding on both "
            f"sides); brightness and contrast of up to {MAX_EXPOSURE_CHANGE:.0%}, a gamma of {GAMMA[0]}-{GAMMA[1]} and a random "
            f"grey-level window; a Gaussian blur (sigma up to {MAX_BLUR_SIGMA:g} px at 224 px) for {BLUR_PROBABILITY:.0%} of "
            "the images; no flips")


class BatchAugment:
    """uint8 batch (B, 3, H, W) -> augmented, normalised float batch (B, 3, S, S), channels_last."""

    def __init__(self, config: ModelConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self.generator: torch.Generator | None = None

    def set_epoch(self, epoch: int, process_index: int = 0, device: torch.device | str = "cpu") -> None:
        self.generator = torch.Generator(device=device).manual_seed(
            (self.seed * 1_000_003 + epoch) * 1_009 + process_index)

    def _uniform(self, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, device=device, generator=self.generator)

    def _chance(self, n: int, probability: float, device: torch.device) -> torch.Tensor:
        return torch.rand(n, device=device, generator=self.generator) < probability

    def affine_matrices(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, 2, 3) maps from output to input coordinates in [-1, 1] (affine_grid's convention).
        Scales below 1 crop, above 1 zoom out (what falls outside the image is black)."""
        area = self._uniform(n, *CROP_AREA, device)
        aspect = torch.exp(self._uniform(n, math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1]), device))
        width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
        # a quarter zoom out instead: half of them letterboxed on one side, half padded on both
        padded = self._chance(n, PAD_PROBABILITY, device)
        letterbox = self._uniform(n, 1.0, MAX_LETTERBOX, device)
        horizontal = self._chance(n, 0.5, device)
        one_side = self._chance(n, 0.5, device)
        pad_x, pad_y = self._uniform(n, 1.0, MAX_PAD, device), self._uniform(n, 1.0, MAX_PAD, device)
        pad_x = torch.where(one_side, torch.where(horizontal, letterbox, torch.ones_like(letterbox)), pad_x)
        pad_y = torch.where(one_side, torch.where(horizontal, torch.ones_like(letterbox), letterbox), pad_y)
        width, height = torch.where(padded, pad_x, width), torch.where(padded, pad_y, height)
        room_x, room_y = (1 - width).clamp(min=0), (1 - height).clamp(min=0)
        centre_x = self._uniform(n, -1, 1, device) * room_x + self._uniform(n, -2, 2, device) * MAX_SHIFT
        centre_y = self._uniform(n, -1, 1, device) * room_y + self._uniform(n, -2, 2, device) * MAX_SHIFT
        angle = torch.deg2rad(self._uniform(n, -MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, device))
        cos, sin = angle.cos(), angle.sin()
        return torch.stack([torch.stack([cos * width, -sin * height, centre_x], 1),
                            torch.stack([sin * width, cos * height, centre_y], 1)], 1)

    def exposure(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] float batch -> the same under random brightness, contrast, gamma and grey-level window."""
        n, device = len(images), images.device
        def per_image(low: float, high: float) -> torch.Tensor:
            return self._uniform(n, low, high, device).view(n, 1, 1, 1)
        brightness = per_image(1 - MAX_EXPOSURE_CHANGE, 1 + MAX_EXPOSURE_CHANGE)
        contrast = per_image(1 - MAX_EXPOSURE_CHANGE, 1 + MAX_EXPOSURE_CHANGE)
        gamma = torch.exp(per_image(math.log(GAMMA[0]), math.log(GAMMA[1])))
        low, high = per_image(*WINDOW_LOW), per_image(*WINDOW_HIGH)
        images = (images * brightness).clamp(0, 1)
        grey_mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = ((images - grey_mean) * contrast + grey_mean).clamp(0, 1)
        images = images.clamp(min=1e-6) ** gamma
        return (low + (high - low) * images).clamp(0, 1)

    def blur(self, images: torch.Tensor) -> torch.Tensor:
        """A Gaussian blur of random strength on a random quarter of the batch (one grouped convolution)."""
        n, channels, size = images.shape[0], images.shape[1], images.shape[-1]
        sigma = self._uniform(n, 0.3, MAX_BLUR_SIGMA * size / 224, images.device)
        sigma = torch.where(self._chance(n, BLUR_PROBABILITY, images.device), sigma, torch.zeros_like(sigma))
        radius = max(1, math.ceil(3 * MAX_BLUR_SIGMA * size / 224))
        offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
        kernel = torch.exp(-0.5 * (offsets / sigma.clamp(min=1e-3).view(n, 1)) ** 2)
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # (n * C, taps)
        flat = images.reshape(1, n * channels, *images.shape[-2:])
        flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(-1, 1, 1, 2 * radius + 1),
                        groups=n * channels)
        flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(-1, 1, 2 * radius + 1, 1),
                        groups=n * channels)
        return flat.view_as(images)

    def __call__(self, pixels: torch.Tensor, output_size: int | None = None) -> torch.Tensor:
        if self.generator is None:
            self.set_epoch(0, device=pixels.device)
        n, device = pixels.shape[0], pixels.device
        images = pixels.float() / 255
        size = output_size or images.shape[-1]
        if size < images.shape[-1]:  # progressive resizing: antialiased first, so that the warp does not alias
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = warp(images, self.affine_matrices(n, device))
        images = self.blur(self.exposure(images))
        return normalize(images, self.config).contiguous(memory_format=torch.channels_last)
