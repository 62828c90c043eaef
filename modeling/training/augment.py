"""Training augmentation on whole uint8 batches, on whatever device the batch is on.

Changes a radiograph goes through before it reaches a user, none anatomically implausible, in
this order, each drawn per image:
- the thorax (the "thorax" recipe): everything outside the thorax box set to black, or the image cropped
  to the box, so that what surrounds the thorax stops deciding; the boxes come from `modeling.training.lungs`, found
  once per training image (`modeling.training.data.with_thorax_boxes`);
- geometry: a crop (patient positioning, other framings), a rotation and a shift; for some images
  instead a zoom-out onto black, on one side only (a letterboxed export, up to 16:9) or on both
  (padding);
- framing: black bands over the borders, of random depth on each side independently (collimation,
  and a neck, shoulders or abdomen shown or not): what lies outside the thorax stops telling the
  classes apart;
- exposure: brightness and contrast, a gamma and a random grey-level window (the many ways a
  12-16-bit source is turned into 8 bits);
- sharpness, in both directions, so that "sharp" stops meaning "normal": a Gaussian blur, an
  unsharp mask (the edge enhancement many X-ray consoles apply), or a resampling down and up;
- burnt-in markers and text ("R", "L", "AP", "PORTABLE", dates) at random places, on both classes;
- sensor noise, and JPEG compression at a random quality.
No horizontal flips: the heart sits on the left. A grey batch (every channel alike) is augmented
on one channel and copied to the others. Crop, rotation, shift and padding are one affine
map per image, so the whole batch is resampled by a single `grid_sample`, at the epoch's training
size (progressive resizing: `output_size`); nothing is decoded or resized per image.

How much of each is a `Recipe`; `RECIPES` names the ones train.py offers (`--augment`), and the
training log records the chosen one's numbers. Randomness comes from a generator reseeded per
(seed, epoch, process), so a resumed run repeats an epoch's augmentation exactly and each process
of a distributed run draws its own.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.io import decode_jpeg, encode_jpeg

from ..runtime.config import ModelConfig
from ..runtime.geometry import warp
from ..runtime.preprocessing import normalize

MARKER_TEXTS = ("R", "L", "R", "L", "AP", "PA", "ERECT", "SUPINE", "PORTABLE", "12/03", "2019", "A", "7", "CR")


@dataclass(frozen=True)
class Recipe:
    """How strongly each change is drawn. Probabilities are per image; pixel sizes are at 224 px and scale
    with the training size."""
    crop_area: tuple[float, float] = (0.7, 1.0)  # share of the image a crop keeps
    crop_aspect: tuple[float, float] = (0.75, 1.33)
    max_rotation_degrees: float = 10.0
    max_shift: float = 0.05  # fraction of the image side
    pad_probability: float = 0.25  # zoom out onto black instead of cropping
    max_letterbox: float = 16 / 9  # a 16:9 frame around a square image
    max_pad: float = 1.3  # padding on both sides: the image fills 1/1.3 of each side
    frame_probability: float = 0.0  # black bands over the borders
    max_frame: tuple[float, float] = (0.25, 0.15)  # deepest band: top and bottom, left and right (image fraction)
    max_exposure_change: float = 0.25  # brightness and contrast factors in [0.75, 1.25]
    gamma: tuple[float, float] = (0.67, 1.5)
    window_low: tuple[float, float] = (-0.1, 0.15)  # grey levels 0 and 1 go to these
    window_high: tuple[float, float] = (0.85, 1.1)
    blur_probability: float = 0.25
    max_blur_sigma: float = 2.0
    sharpen_probability: float = 0.0  # an unsharp mask instead of a blur
    sharpen_amount: tuple[float, float] = (0.5, 2.0)
    resample_probability: float = 0.0  # down to a random 35-75% of the side and back up, instead
    marker_probability: float = 0.0  # one to three burnt-in markers or texts
    noise_probability: float = 0.0
    max_noise: float = 0.04  # Gaussian noise's standard deviation, grey levels in [0, 1]
    jpeg_probability: float = 0.0
    jpeg_quality: tuple[int, int] = (20, 90)
    thorax_black_probability: float = 0.0  # black outside the thorax box
    thorax_crop_probability: float = 0.0  # cropped to the thorax box, instead

    @property
    def uses_thorax(self) -> bool:
        return bool(self.thorax_black_probability or self.thorax_crop_probability)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The recipe in one sentence (for the model card)."""
        parts = [f"everything outside the thorax set to black for {self.thorax_black_probability:.0%} of the images "
                 f"and a crop to the thorax for {self.thorax_crop_probability:.0%}"] if self.uses_thorax else []
        parts += [f"a crop keeping {self.crop_area[0]:.0%}-{self.crop_area[1]:.0%} of the image (aspect "
                 f"{self.crop_aspect[0]}-{self.crop_aspect[1]}), a rotation of up to "
                 f"{self.max_rotation_degrees:g} degrees and a shift of up to {self.max_shift:.0%}; for "
                 f"{self.pad_probability:.0%} of the images instead a zoom-out onto black (a letterbox up to 16:9 or "
                 "padding on both sides)"]
        if self.frame_probability:
            parts.append(f"black bands over the borders for {self.frame_probability:.0%} (up to {self.max_frame[0]:.0%} "
                         f"top and bottom, {self.max_frame[1]:.0%} at the sides)")
        parts.append(f"brightness and contrast of up to {self.max_exposure_change:.0%}, a gamma of "
                     f"{self.gamma[0]}-{self.gamma[1]} and a random grey-level window")
        sharpness = [f"a Gaussian blur (sigma up to {self.max_blur_sigma:g} px at 224 px) for {self.blur_probability:.0%} "
                     "of the images"]
        if self.sharpen_probability:
            sharpness.append(f"an unsharp mask (amount {self.sharpen_amount[0]:g}-{self.sharpen_amount[1]:g}) for "
                             f"{self.sharpen_probability:.0%}")
        if self.resample_probability:
            sharpness.append(f"a resampling down to 35-75% and back for {self.resample_probability:.0%}")
        parts.append(", ".join(sharpness))
        if self.marker_probability:
            parts.append(f"burnt-in markers and text at random places for {self.marker_probability:.0%}")
        if self.noise_probability:
            parts.append(f"Gaussian noise (sd up to {self.max_noise:g}) for {self.noise_probability:.0%}")
        if self.jpeg_probability:
            parts.append(f"JPEG at quality {self.jpeg_quality[0]}-{self.jpeg_quality[1]} for {self.jpeg_probability:.0%}")
        return "; ".join(parts) + "; no flips"


ACQUISITION = Recipe()
# what lies outside the thorax and global sharpness stop telling the classes apart (docs/shortcuts.md)
SHORTCUT_BREAKING = replace(ACQUISITION, crop_area=(0.55, 1.0), frame_probability=0.5, blur_probability=0.2,
                            sharpen_probability=0.2, resample_probability=0.15, marker_probability=0.5,
                            noise_probability=0.3, jpeg_probability=0.25)
# and the thorax alone decides: the changes the shortcut scores measure, learnt as invariances (not as an inference
# step, which would rest on lung fields that are found in only three validation images of four)
THORAX = replace(SHORTCUT_BREAKING, thorax_black_probability=0.25, thorax_crop_probability=0.25)
FRAMING_ONLY = replace(ACQUISITION, crop_area=(0.55, 1.0), frame_probability=0.5, marker_probability=0.5)
RECIPES = {"acquisition": ACQUISITION, "framing": FRAMING_ONLY, "shortcut-breaking": SHORTCUT_BREAKING,
           "thorax": THORAX}
DEFAULT_RECIPE = "shortcut-breaking"


def describe(name: str = DEFAULT_RECIPE) -> str:
    return RECIPES[name].describe()


@lru_cache(maxsize=None)
def marker_stamps(height: int) -> tuple[torch.Tensor, ...]:
    """The marker texts rendered once as [0, 1] masks of about `height` px (bold, as consoles burn them in)."""
    font = ImageFont.load_default(size=height)
    stamps = []
    for text in MARKER_TEXTS:
        left, top, right, bottom = font.getbbox(text, stroke_width=max(1, height // 10))
        canvas = Image.new("L", (right - left + 2, bottom - top + 2))
        ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font, stroke_width=max(1, height // 10),
                                    stroke_fill=255)
        stamps.append(torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255))
    return tuple(stamps)


class BatchAugment:
    """uint8 batch (B, 3, H, W) -> augmented, normalised float batch (B, 3, S, S), channels_last."""

    def __init__(self, config: ModelConfig, seed: int = 0, recipe: Recipe | str = DEFAULT_RECIPE):
        self.config = config
        self.seed = seed
        self.recipe = RECIPES[recipe] if isinstance(recipe, str) else recipe
        self.set_epoch(0)  # seeded from the start: the same draws whatever ran before in the process

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
        r = self.recipe
        area = self._uniform(n, *r.crop_area, device)
        aspect = torch.exp(self._uniform(n, math.log(r.crop_aspect[0]), math.log(r.crop_aspect[1]), device))
        width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
        # some zoom out instead: half of them letterboxed on one side, half padded on both
        padded = self._chance(n, r.pad_probability, device)
        letterbox = self._uniform(n, 1.0, r.max_letterbox, device)
        horizontal = self._chance(n, 0.5, device)
        one_side = self._chance(n, 0.5, device)
        pad_x, pad_y = self._uniform(n, 1.0, r.max_pad, device), self._uniform(n, 1.0, r.max_pad, device)
        pad_x = torch.where(one_side, torch.where(horizontal, letterbox, torch.ones_like(letterbox)), pad_x)
        pad_y = torch.where(one_side, torch.where(horizontal, torch.ones_like(letterbox), letterbox), pad_y)
        width, height = torch.where(padded, pad_x, width), torch.where(padded, pad_y, height)
        room_x, room_y = (1 - width).clamp(min=0), (1 - height).clamp(min=0)
        centre_x = self._uniform(n, -1, 1, device) * room_x + self._uniform(n, -2, 2, device) * r.max_shift
        centre_y = self._uniform(n, -1, 1, device) * room_y + self._uniform(n, -2, 2, device) * r.max_shift
        angle = torch.deg2rad(self._uniform(n, -r.max_rotation_degrees, r.max_rotation_degrees, device))
        cos, sin = angle.cos(), angle.sin()
        return torch.stack([torch.stack([cos * width, -sin * height, centre_x], 1),
                            torch.stack([sin * width, cos * height, centre_y], 1)], 1)

    def frame(self, images: torch.Tensor) -> torch.Tensor:
        """Black bands over the borders of a random share of the batch, each side's depth drawn on its own."""
        r = self.recipe
        n, size, device = len(images), images.shape[-1], images.device
        framed = self._chance(n, r.frame_probability, device).view(n, 1)
        depths = [self._uniform(n, 0, r.max_frame[i // 2], device).view(n, 1) * framed for i in range(4)]
        top, bottom, left, right = depths
        position = (torch.arange(size, device=device, dtype=images.dtype) + 0.5) / size
        rows = (position >= top) & (position <= 1 - bottom)  # (n, size)
        columns = (position >= left) & (position <= 1 - right)
        return images * (rows[:, None, :, None] & columns[:, None, None, :])

    def exposure(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] float batch -> the same under random brightness, contrast, gamma and grey-level window."""
        r = self.recipe
        n, device = len(images), images.device
        def per_image(low: float, high: float) -> torch.Tensor:
            return self._uniform(n, low, high, device).view(n, 1, 1, 1)
        brightness = per_image(1 - r.max_exposure_change, 1 + r.max_exposure_change)
        contrast = per_image(1 - r.max_exposure_change, 1 + r.max_exposure_change)
        gamma = torch.exp(per_image(math.log(r.gamma[0]), math.log(r.gamma[1])))
        low, high = per_image(*r.window_low), per_image(*r.window_high)
        images = (images * brightness).clamp(0, 1)
        grey_mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = ((images - grey_mean) * contrast + grey_mean).clamp(0, 1)
        images = images.clamp(min=1e-6) ** gamma
        return (low + (high - low) * images).clamp(0, 1)

    def _gaussian(self, images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Each image blurred with its own sigma (px; 0 leaves it as is), as one grouped separable convolution."""
        n, channels = images.shape[:2]
        radius = max(1, math.ceil(3 * float(sigma.max())))
        offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
        kernel = torch.exp(-0.5 * (offsets / sigma.clamp(min=1e-3).view(n, 1)) ** 2)
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # (n * C, taps)
        flat = images.reshape(1, n * channels, *images.shape[-2:])
        flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(-1, 1, 1, 2 * radius + 1),
                        groups=n * channels)
        flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(-1, 1, 2 * radius + 1, 1),
                        groups=n * channels)
        return flat.view_as(images)

    def sharpness(self, images: torch.Tensor) -> torch.Tensor:
        """Per image one of: as is, a Gaussian blur, an unsharp mask, or a resampling down and back up."""
        r = self.recipe
        n, size, device = len(images), images.shape[-1], images.device
        choice = torch.rand(n, device=device, generator=self.generator)
        blurred = choice < r.blur_probability
        sharpened = (choice >= r.blur_probability) & (choice < r.blur_probability + r.sharpen_probability)
        resampled = ((choice >= r.blur_probability + r.sharpen_probability)
                     & (choice < r.blur_probability + r.sharpen_probability + r.resample_probability))
        scale = size / 224
        sigma = self._uniform(n, 0.3, r.max_blur_sigma * scale, device)
        # an unsharp mask boosts detail of 1-2 px at 224 px, the scale at which lung texture differs most
        sigma = torch.where(blurred, sigma, self._uniform(n, 1.0 * scale, 2.0 * scale, device).clamp(min=0.5))
        amount = self._uniform(n, *r.sharpen_amount, device).view(n, 1, 1, 1)
        factor = self._uniform(n, 0.35, 0.75, device)
        if blurred.any() or sharpened.any():
            smooth = self._gaussian(images, torch.where(blurred | sharpened, sigma, torch.zeros_like(sigma)))
            unsharp = (images + amount * (images - smooth)).clamp(0, 1)
            images = torch.where(blurred.view(n, 1, 1, 1), smooth, torch.where(sharpened.view(n, 1, 1, 1), unsharp, images))
        for index in resampled.nonzero().flatten().tolist():
            small = max(8, round(size * float(factor[index])))
            low = F.interpolate(images[index:index + 1], size=(small, small), mode="bilinear", antialias=True,
                                align_corners=False)
            images[index] = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0].clamp(0, 1)
        return images

    def markers(self, images: torch.Tensor) -> torch.Tensor:
        """One to three burnt-in markers or texts, white or black, at random places on a share of the batch."""
        r = self.recipe
        n, size, device = len(images), images.shape[-1], images.device
        marked = self._chance(n, r.marker_probability, device).tolist()
        draws = torch.rand(n, 3, 6, generator=self.generator, device=device).cpu()  # count, stamp, height, x, y, ink
        if any(marked):
            images = images.clone()
        for index in (i for i in range(n) if marked[i]):
            for k in range(1 + int(draws[index, 0, 0] * 3)):
                height = max(6, round(size * (0.04 + 0.06 * float(draws[index, k, 2]))))
                stamps = marker_stamps(height)
                stamp = stamps[int(draws[index, k, 1] * len(stamps))].to(device, images.dtype)
                h, w = min(stamp.shape[0], size), min(stamp.shape[1], size)
                # in the top or bottom 30% of the image, where consoles burn them in, at any x
                band = float(draws[index, k, 4]) * 0.6
                y = int((band if band < 0.3 else band + 0.4) * (size - h + 1))
                x = int(draws[index, k, 3] * (size - w + 1))
                ink = 1.0 if draws[index, k, 5] < 0.8 else 0.0
                region = images[index, :, y:y + h, x:x + w]
                images[index, :, y:y + h, x:x + w] = region * (1 - stamp[:h, :w]) + ink * stamp[:h, :w]
        return images

    def noise_and_jpeg(self, images: torch.Tensor) -> torch.Tensor:
        r = self.recipe
        n, device = len(images), images.device
        sd = self._uniform(n, 0, r.max_noise, device) * self._chance(n, r.noise_probability, device)
        noise = torch.randn(images.shape, device=device, generator=self.generator, dtype=images.dtype)
        images = (images + sd.view(n, 1, 1, 1) * noise).clamp(0, 1)
        compressed = self._chance(n, r.jpeg_probability, device).tolist()
        quality = self._uniform(n, *r.jpeg_quality, device).round().int().tolist()
        if any(compressed):
            images = images.clone()
            for index in (i for i in range(n) if compressed[i]):
                pixels = (images[index] * 255).round().to(torch.uint8).cpu()
                decoded = decode_jpeg(encode_jpeg(pixels, quality=quality[index]))
                images[index] = decoded.to(device, images.dtype) / 255
        return images

    def thorax(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Black outside each image's thorax box (top, bottom, left, right in pixels), or cropped to it and
        squashed back to the side, as `modeling.analysis.shortcuts` does, each for its share of the images."""
        n, _, height, width = images.shape
        draw = torch.rand(n, generator=self.generator, device=images.device).cpu()
        black = draw < self.recipe.thorax_black_probability
        crop = ~black & (draw < self.recipe.thorax_black_probability + self.recipe.thorax_crop_probability)
        images = images.clone()
        for index, (top, bottom, left, right) in enumerate(boxes.tolist()):
            if black[index]:
                inside = images[index, :, top:bottom, left:right].clone()
                images[index] = 0
                images[index, :, top:bottom, left:right] = inside
            elif crop[index]:
                images[index] = F.interpolate(images[index:index + 1, :, top:bottom, left:right], size=(height, width),
                                              mode="bilinear", antialias=True, align_corners=False)[0]
        return images

    def __call__(self, pixels: torch.Tensor, output_size: int | None = None,
                 thorax_boxes: torch.Tensor | None = None) -> torch.Tensor:
        n, device = pixels.shape[0], pixels.device
        if self.generator.device != device:  # never told the batch's device (set_epoch): draw there, from epoch 0
            self.set_epoch(0, device=device)
        channels = pixels.shape[1]
        # radiographs are grey: when every channel is the same, augment one and copy it (a third of the work)
        grey = channels > 1 and bool((pixels[:, :1] == pixels[:, 1:]).all())
        images = (pixels[:, :1] if grey else pixels).float() / 255
        if self.recipe.uses_thorax:
            if thorax_boxes is None:
                raise ValueError("this recipe blacks out or crops to the thorax: pass each image's thorax_boxes")
            images = self.thorax(images, thorax_boxes)
        size = output_size or images.shape[-1]
        if size < images.shape[-1]:  # progressive resizing: antialiased first, so that the warp does not alias
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = warp(images, self.affine_matrices(n, device))
        images = self.sharpness(self.exposure(self.frame(images)))
        images = self.noise_and_jpeg(self.markers(images))
        if grey:
            images = images.expand(n, channels, size, size)
        return normalize(images, self.config).contiguous(memory_format=torch.channels_last)
