"""Assemble images that are not chest X-rays, to measure the out-of-distribution warning.

    python -m scripts.non_xray OUT_DIR

Sources, all shipped inside Python packages (no download): the sample images of scikit-image
(photos, microscopy, histology, retina fundus, a CT phantom, text pages), matplotlib and
scikit-learn; matplotlib's MRI brain slice (another body part); each of those also in greyscale
(X-rays are grey, so grey photos are the harder case); and generated blank, noise, gradient,
screenshot-like text, chart and shape images. Every file name says where it came from.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..runtime.files import folder_written_whole


def _package_images() -> dict[str, Image.Image]:
    import matplotlib
    import skimage
    from sklearn.datasets import load_sample_images

    images: dict[str, Image.Image] = {}
    skimage_dir = Path(skimage.__file__).parent / "data"
    for path in sorted(skimage_dir.iterdir()):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".gif"):
            try:
                with Image.open(path) as image:
                    image.seek(0)
                    images[f"skimage-{path.stem}"] = image.convert("RGB")
            except OSError:
                continue  # a format PIL does not read (one multi-page TIFF)
    sample_dir = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        with Image.open(sample_dir / name) as image:
            images[f"matplotlib-{Path(name).stem}"] = image.convert("RGB")
    with gzip.open(sample_dir / "s1045.ima.gz") as f:  # 256x256 16-bit MRI of a head
        mri = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float64)
    images["matplotlib-mri-head"] = Image.fromarray(np.uint8(255 * mri / mri.max())).convert("RGB")
    for name, array in zip(("china", "flower"), load_sample_images().images):
        images[f"sklearn-{name}"] = Image.fromarray(array)
    return images


def _generated_images(rng: np.random.Generator) -> dict[str, Image.Image]:
    images: dict[str, Image.Image] = {}
    for value in (0, 128, 255):
        images[f"generated-blank-{value}"] = Image.new("RGB", (512, 512), (value, value, value))
    for i in range(6):
        images[f"generated-uniform-noise-{i}"] = Image.fromarray(rng.integers(0, 256, (384, 384, 3), dtype=np.uint8))
        grey = np.clip(rng.normal(128, 20 + 15 * i, (384, 384)), 0, 255).astype(np.uint8)
        images[f"generated-gaussian-noise-{i}"] = Image.fromarray(grey).convert("RGB")
    ramp = np.linspace(0, 255, 512)
    for i, gradient in enumerate((np.tile(ramp, (512, 1)), np.tile(ramp, (512, 1)).T,
                                  np.add.outer(ramp, ramp) / 2, np.hypot(*np.meshgrid(ramp - 128, ramp - 128)))):
        images[f"generated-gradient-{i}"] = Image.fromarray(np.uint8(np.clip(gradient, 0, 255))).convert("RGB")
    words = "patient report radiology pneumonia normal lung view frontal image dataset model result".split()
    for i in range(8):
        dark = i % 2 == 1
        image = Image.new("RGB", (800, 600), (30, 30, 30) if dark else (250, 250, 250))
        draw = ImageDraw.Draw(image)
        draw.rectangle([0, 0, 800, 40], fill=(60, 90, 160))
        for line in range(22):
            text = " ".join(rng.choice(words, size=rng.integers(4, 10)))
            draw.text((20, 55 + 24 * line), text, fill=(220, 220, 220) if dark else (20, 20, 20))
        images[f"generated-screenshot-text-{i}"] = image
    for i in range(8):
        images[f"generated-chart-{i}"] = _chart(rng, kind=i % 4)
    for i in range(8):
        image = Image.new("RGB", (512, 512), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = rng.integers(0, 460, 2)
            size = rng.integers(20, 200)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([int(x), int(y), int(x + size), int(y + size)], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        images[f"generated-shapes-{i}"] = image
    return images


def _chart(rng: np.random.Generator, kind: int) -> Image.Image:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    x = np.arange(20)
    if kind == 0:
        ax.plot(x, rng.normal(size=(20, 3)).cumsum(axis=0))
    elif kind == 1:
        ax.bar(x, rng.random(20))
    elif kind == 2:
        ax.scatter(*rng.normal(size=(2, 200)))
    else:
        ax.imshow(rng.random((16, 16)), cmap="viridis")
    ax.set_title("Quarterly figures")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return Image.open(buffer).convert("RGB")


CROPS_PER_PHOTO = 4


def development_photos(seed: int = 0) -> dict[str, Image.Image]:
    """The development set of photos, kept apart from the evaluation set and from every training source:
    Gradio's sample photos (at least 128 px a side), whole and as random crops keeping 40-80% of each side."""
    import gradio
    folders = [Path(gradio.__file__).parent / "media_assets" / "images", Path(gradio.__file__).parent / "test_data"]
    photos: dict[str, Image.Image] = {}
    for path in sorted(p for folder in folders for p in folder.glob("*.jp*g")):
        with Image.open(path) as image:
            if min(image.size) >= 128 and not path.stem.endswith("-copy"):
                photos[path.stem] = image.convert("RGB")
    rng = np.random.default_rng(seed)
    for name, image in list(photos.items()):
        for i in range(CROPS_PER_PHOTO):
            w, h = (int(side * rng.uniform(0.4, 0.8)) for side in image.size)
            x, y = rng.integers(0, image.width - w + 1), rng.integers(0, image.height - h + 1)
            photos[f"{name}-crop{i}"] = image.crop((int(x), int(y), int(x + w), int(y + h)))
    return photos


def assemble(out_dir: Path, seed: int = 0) -> list[Path]:
    """Write the set as PNG files into `out_dir`, which appears whole or not at all; returns their paths."""
    images = _package_images()
    images.update({f"{name}-grey": image.convert("L").convert("RGB") for name, image in list(images.items())})
    images.update(_generated_images(np.random.default_rng(seed)))
    with folder_written_whole(out_dir) as folder:
        for name, image in sorted(images.items()):
            image.save(folder / f"{name}.png")
    return [out_dir / f"{name}.png" for name in sorted(images)]
