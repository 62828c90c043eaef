"""Image changes: mild, realistic ones for the robustness report (`evaluate.py --robustness`), and the stronger
ones users make to X-rays (`XRAY_CHANGES`), which the chest X-ray gate must not refuse.

Each takes and returns an RGB PIL image, before the model's own preprocessing.
"""
from __future__ import annotations

import io
from typing import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter


def rotate(degrees: float) -> Callable[[Image.Image], Image.Image]:
    return lambda image: image.rotate(degrees, resample=Image.BILINEAR, fillcolor=(0, 0, 0))


def brightness(factor: float) -> Callable[[Image.Image], Image.Image]:
    return lambda image: ImageEnhance.Brightness(image).enhance(factor)


def contrast(factor: float) -> Callable[[Image.Image], Image.Image]:
    return lambda image: ImageEnhance.Contrast(image).enhance(factor)


def blur(radius: float) -> Callable[[Image.Image], Image.Image]:
    return lambda image: image.filter(ImageFilter.GaussianBlur(radius))


def sharpen(radius: float, percent: int) -> Callable[[Image.Image], Image.Image]:
    """Unsharp masking, as some viewers and processing pipelines apply it."""
    return lambda image: image.filter(ImageFilter.UnsharpMask(radius=radius, percent=percent, threshold=0))


def central_crop(fraction: float) -> Callable[[Image.Image], Image.Image]:
    """The central `fraction` of each side: a tighter framing."""
    def crop(image: Image.Image) -> Image.Image:
        width, height = round(image.width * fraction), round(image.height * fraction)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return image.crop((left, top, left + width, top + height))
    return crop


def jpeg(quality: int) -> Callable[[Image.Image], Image.Image]:
    def compress(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return compress


def lower_resolution(factor: float) -> Callable[[Image.Image], Image.Image]:
    def shrink(image: Image.Image) -> Image.Image:
        small = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        return image.resize(small, Image.BILINEAR)
    return shrink


def letterbox(aspect: float) -> Callable[[Image.Image], Image.Image]:
    """Pad with black bars to width/height = `aspect`, as a viewer exporting a wide frame would."""
    def pad(image: Image.Image) -> Image.Image:
        width = max(image.width, round(image.height * aspect))
        height = max(image.height, round(image.width / aspect))
        canvas = Image.new("RGB", (width, height))
        canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
        return canvas
    return pad


PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "rotate +5°": rotate(5), "rotate -10°": rotate(-10),
    "brightness x0.8": brightness(0.8), "brightness x1.2": brightness(1.2),
    "contrast x0.8": contrast(0.8), "contrast x1.2": contrast(1.2),
    "gaussian blur r=1.5": blur(1.5), "unsharp mask r=2 150%": sharpen(2, 150), "JPEG quality 30": jpeg(30),
    "half resolution": lower_resolution(0.5), "letterbox 4:3": letterbox(4 / 3), "central crop 85%": central_crop(0.85),
}


def padded(scale: float):
    """Zoom out onto black on all sides (the training augmentation's padding, here stronger)."""
    def pad(image: Image.Image) -> Image.Image:
        canvas = Image.new("RGB", (round(image.width * scale), round(image.height * scale)))
        canvas.paste(image, ((canvas.width - image.width) // 2, (canvas.height - image.height) // 2))
        return canvas
    return pad


def burnt_in_text(image: Image.Image) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for line in range(4):
        draw.text((5, 5 + 12 * line), f"R   PORTABLE AP   2019-03-0{line}", fill=(255, 255, 255))
    return image


XRAY_CHANGES = {"letterbox 16:9": letterbox(16 / 9), "padded x1.4": padded(1.4), "rotate 15°": rotate(15),
                "blur r=3": blur(3), "brightness x0.6": brightness(0.6), "contrast x1.5": contrast(1.5),
                "burnt-in text": burnt_in_text}
