"""What people see: an X-ray reduced for display, and a Grad-CAM heatmap blended over it."""
from __future__ import annotations

import numpy as np
from PIL import Image

# matplotlib's "jet" as its segment data defines it (x, value per channel), interpolated over 256 entries as
# matplotlib's lookup table is: written out so that the runtime does not load matplotlib (tests/test_display.py)
JET_SEGMENTS = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}
JET = np.stack([np.interp(np.linspace(0, 1, 256), *zip(*JET_SEGMENTS[c])) for c in ("red", "green", "blue")], axis=1)


def preview(image: Image.Image, max_side: int = 640) -> Image.Image:
    """An RGB copy for display, at most `max_side` pixels wide and high (a 3000 px X-ray is slow to send)."""
    shown = image.convert("RGB")
    shown.thumbnail((max_side, max_side))
    return shown


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45, max_side: int = 640) -> Image.Image:
    """The heatmap (jet colours) blended over the image, shown at most `max_side` pixels wide."""
    base = preview(image, max_side)
    heat = Image.fromarray(np.uint8(heatmap * 255)).resize(base.size, Image.BILINEAR)
    coloured = JET[np.asarray(heat)]
    blended = (1 - alpha) * np.asarray(base, dtype=np.float32) / 255 + alpha * coloured
    return Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255))
