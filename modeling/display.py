"""What people see: an X-ray reduced for display, and a Grad-CAM heatmap blended over it."""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image


def preview(image: Image.Image, max_side: int = 640) -> Image.Image:
    """An RGB copy for display, at most `max_side` pixels wide and high (a 3000 px X-ray is slow to send)."""
    shown = image.convert("RGB")
    shown.thumbnail((max_side, max_side))
    return shown


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45, max_side: int = 640) -> Image.Image:
    """The heatmap (jet colours) blended over the image, shown at most `max_side` pixels wide."""
    base = preview(image, max_side)
    heat = Image.fromarray(np.uint8(heatmap * 255)).resize(base.size, Image.BILINEAR)
    coloured = colormaps["jet"](np.asarray(heat) / 255.0)[..., :3]
    blended = (1 - alpha) * np.asarray(base, dtype=np.float32) / 255 + alpha * coloured
    return Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255))
