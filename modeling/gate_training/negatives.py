"""What the chest X-ray gate learns is not an X-ray: images from Debian packages, and generated ones.

Sources (`NEGATIVE_PACKAGES`): the desktop wallpapers and backgrounds of GNOME, MATE, Plasma, UKUI,
Sway, Lomiri and Debian's own artwork (photographs, paintings, abstract art); MyPaint's paper
textures; Tux Paint's stamps (objects, animals and people cut out, set here on plain or noisy
backgrounds); and the figures of the OpenCV and GIMP manuals (photos, screenshots, diagrams, plots,
documents). Every file is read from the installed package (`apt-get install` them first); each
package's licences are read from its Debian copyright file and recorded with the gate. Generated
here: rendered text pages, forms and tables, charts, and patterns.

Never a source: the sample images of scikit-image, matplotlib and scikit-learn, which make up the
evaluation set (`modeling.gate_training.non_xray`), and Gradio's sample photos, the development set. `fingerprint`
and `near_duplicates` let the gate's training drop anything that looks like an evaluation image, and
let a test check, from the fingerprints shipped beside the gate, that none came through.
"""
from __future__ import annotations

import hashlib
import io
import re
import textwrap
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

NEGATIVE_PACKAGES = ("gnome-backgrounds", "mate-backgrounds", "plasma-workspace-wallpapers", "ukui-wallpapers",
                     "sway-backgrounds", "lomiri-wallpapers", "desktop-base", "mypaint-data-extras",
                     "tuxpaint-stamps-default", "opencv-doc", "gimp-help-en")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
DPKG_INFO = Path("/var/lib/dpkg/info")
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
TEXT_SOURCES = Path("/usr/share/common-licenses")
MIN_SIDE = 48  # icons and bullets smaller than this say nothing
MAX_SIDE = 512  # sources are reduced to this on the long side when read
THUMB = 16  # fingerprints: a 16 x 16 grey thumbnail


class MissingSources(RuntimeError):
    """A negative source package is not installed."""


def install_command() -> str:
    return "apt-get install " + " ".join(NEGATIVE_PACKAGES)


def package_files(package: str) -> list[Path]:
    """The image files a Debian package installed, sorted (its dpkg file list)."""
    listing = DPKG_INFO / f"{package}.list"
    if not listing.exists():
        raise MissingSources(f"The Debian package {package} is not installed; install the gate's sources with: "
                             f"{install_command()}")
    return sorted(Path(line) for line in listing.read_text().splitlines()
                  if line.lower().endswith(IMAGE_SUFFIXES) and Path(line).is_file())


def package_licences(package: str) -> list[str]:
    """The licence names in a package's Debian copyright file."""
    copyright_file = Path("/usr/share/doc") / package / "copyright"
    if not copyright_file.exists():
        return ["see the package's copyright file"]
    text = copyright_file.read_text(errors="replace")
    found = re.findall(r"^License:\s*(\S.*)$", text, re.MULTILINE)  # machine-readable copyright files
    found += [re.sub(r"( License)?\.?$", "", name) for name in  # older free-form ones
              re.findall(r"Licensed under (?:the )?(.+?)\s*$", text, re.MULTILINE)]
    return sorted({name.strip() for name in found}) or ["see the package's copyright file"]


def read_source(path: Path, rng: np.random.Generator) -> Image.Image | None:
    """An RGB image reduced to MAX_SIDE, cut-outs set on a random plain or noisy background; None when unreadable
    or too small."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))
            image.load()
            if min(image.size) < MIN_SIDE:
                return None
            image.thumbnail((MAX_SIDE, MAX_SIDE))
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                return Image.alpha_composite(_background(rgba.size, rng), rgba).convert("RGB")
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    colour = rng.integers(0, 256, 3) if rng.random() < 0.6 else np.full(3, rng.choice([0, 255]))
    pixels = np.broadcast_to(colour, (size[1], size[0], 3)).astype(np.float32)
    if rng.random() < 0.3:
        pixels = pixels + rng.normal(0, rng.uniform(5, 30), pixels.shape)
    return Image.fromarray(np.uint8(np.clip(pixels, 0, 255))).convert("RGBA")


def package_images(package: str, rng: np.random.Generator) -> Iterator[tuple[str, Image.Image]]:
    for path in package_files(package):
        image = read_source(path, rng)
        if image is not None:
            yield str(path), image


# --- generated negatives


def _font(size: int, bold: bool = False, mono: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSansMono" if mono else ("DejaVuSerif" if size % 3 == 0 else "DejaVuSans")
    path = FONT_DIR / f"{name}{'-Bold' if bold else ''}.ttf"
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size)


def _paragraphs(rng: np.random.Generator) -> list[str]:
    texts = sorted(p for p in TEXT_SOURCES.iterdir() if p.is_file()) if TEXT_SOURCES.is_dir() else []
    if not texts:
        return ["Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."] * 40
    text = texts[int(rng.integers(len(texts)))].read_text(errors="replace")
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def document(rng: np.random.Generator) -> Image.Image:
    """A rendered page: prose in one or two columns, headings, and sometimes a table or a form."""
    width = int(rng.integers(600, 1000))
    height = int(width * rng.uniform(1.2, 1.5)) if rng.random() < 0.7 else int(width * rng.uniform(0.55, 0.8))
    dark = rng.random() < 0.15
    paper = tuple(int(v) for v in (rng.integers(15, 45, 3) if dark else rng.integers(225, 256, 3)))
    ink = (225, 225, 225) if dark else tuple(int(v) for v in rng.integers(0, 60, 3))
    page = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(page)
    size = int(rng.integers(11, 22))
    font, bold = _font(size), _font(int(size * 1.5), bold=True)
    margin, y = int(width * rng.uniform(0.05, 0.12)), int(height * rng.uniform(0.04, 0.1))
    columns = 2 if rng.random() < 0.3 else 1
    column_width = (width - 2 * margin) // columns
    chars = max(10, int(column_width / (size * 0.55)))
    paragraphs = _paragraphs(rng)
    start = int(rng.integers(max(1, len(paragraphs))))
    for column in range(columns):
        x, y_col = margin + column * column_width, y
        for paragraph in paragraphs[start:] + paragraphs[:start]:
            if y_col > height - margin:
                break
            if rng.random() < 0.2:
                draw.text((x, y_col), paragraph[:40], fill=ink, font=bold)
                y_col += int(size * 2.2)
                continue
            if rng.random() < 0.15:  # a table or a form
                rows, cols = int(rng.integers(3, 8)), int(rng.integers(2, 5))
                cell_h, cell_w = int(size * 1.8), (column_width - 10) // cols
                for r in range(rows):
                    for c in range(cols):
                        box = [x + c * cell_w, y_col + r * cell_h, x + (c + 1) * cell_w, y_col + (r + 1) * cell_h]
                        draw.rectangle(box, outline=ink, width=1)
                        if rng.random() < 0.7:
                            draw.text((box[0] + 4, box[1] + 3), paragraph[(r * cols + c) * 7:][:10], fill=ink, font=font)
                y_col += rows * cell_h + size
                continue
            for line in textwrap.wrap(paragraph, chars)[:12]:
                draw.text((x, y_col), line, fill=ink, font=font)
                y_col += int(size * 1.4)
            y_col += size
    return page


def chart(rng: np.random.Generator) -> Image.Image:
    """A chart of a kind the evaluation set does not draw: pie, histogram, area, steps, box plot, contour, error bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kind = int(rng.integers(7))
    fig, ax = plt.subplots(figsize=(rng.uniform(4, 8), rng.uniform(3, 6)), dpi=int(rng.integers(60, 110)))
    data = rng.normal(size=(50, 4)).cumsum(axis=0)
    if kind == 0:
        ax.pie(rng.random(int(rng.integers(3, 8))))
    elif kind == 1:
        ax.hist(rng.normal(size=(500, 2)), bins=int(rng.integers(10, 40)))
    elif kind == 2:
        ax.stackplot(np.arange(50), np.abs(data.T))
    elif kind == 3:
        ax.step(np.arange(50), data)
    elif kind == 4:
        ax.boxplot(rng.normal(size=(100, 5)))
    elif kind == 5:
        grid = np.linspace(-3, 3, 60)
        ax.contourf(grid, grid, np.sin(np.add.outer(grid * rng.uniform(0.5, 2), grid)), cmap=str(rng.choice(
            ["magma", "Greys", "coolwarm", "cividis"])))
    else:
        ax.errorbar(np.arange(12), rng.random(12), yerr=rng.random(12) / 5, fmt="o-")
    ax.set_title(str(rng.choice(["Results", "Monthly totals", "Throughput", "Survey", "Sales by region"])))
    if rng.random() < 0.3:
        ax.set_facecolor("black")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return Image.open(buffer).convert("RGB")


def pattern(rng: np.random.Generator) -> Image.Image:
    """A pattern: smooth noise, a grating, a checkerboard, a radial or angled ramp, or an almost-flat field."""
    side = int(rng.integers(192, 512))
    y, x = np.mgrid[0:side, 0:side] / side
    kind = int(rng.integers(5))
    if kind == 0:  # smooth noise: a coarse random field upsampled
        coarse = rng.random((int(rng.integers(3, 24)),) * 2)
        field = np.asarray(Image.fromarray(np.uint8(coarse * 255)).resize((side, side), Image.BICUBIC)) / 255
    elif kind == 1:
        angle, frequency = rng.uniform(0, np.pi), rng.uniform(2, 40)
        field = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (x * np.cos(angle) + y * np.sin(angle)))
    elif kind == 2:
        cells = int(rng.integers(2, 30))
        field = ((np.floor(x * cells) + np.floor(y * cells)) % 2).astype(float)
    elif kind == 3:
        cx, cy = rng.random(2)
        field = np.hypot(x - cx, y - cy) if rng.random() < 0.5 else (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1))
        field = (field - field.min()) / (np.ptp(field) + 1e-9)
    else:
        field = np.full((side, side), rng.random()) + rng.normal(0, rng.uniform(0.01, 0.2), (side, side))
    field = np.clip(field, 0, 1)
    if rng.random() < 0.5:
        low, high = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        pixels = low + field[..., None] * (high.astype(float) - low)
    else:
        pixels = np.repeat(field[..., None] * 255, 3, axis=2)
    return Image.fromarray(np.uint8(np.clip(pixels, 0, 255)))


GENERATORS = {"documents": document, "charts": chart, "patterns": pattern}


# --- fingerprints: is a training image one of the evaluation set's?


def fingerprint(image: Image.Image) -> dict[str, str]:
    """sha256 of the RGB pixels, and the 16 x 16 grey thumbnail (hex), for near-duplicate checks."""
    rgb = image.convert("RGB")
    thumb = np.asarray(ImageOps.grayscale(rgb).resize((THUMB, THUMB), Image.BILINEAR, reducing_gap=2.0), np.uint8)
    return {"sha256": hashlib.sha256(rgb.tobytes() + repr(rgb.size).encode()).hexdigest(), "thumb": thumb.tobytes().hex()}


def _thumbs(fingerprints: list[dict[str, str]]) -> np.ndarray:
    return np.stack([np.frombuffer(bytes.fromhex(f["thumb"]), np.uint8) for f in fingerprints]).astype(np.float64)


def near_duplicates(candidates: list[dict[str, str]], references: list[dict[str, str]],
                    correlation: float = 0.97, min_spread: float = 4.0) -> list[int]:
    """Indices of `candidates` that are a reference image: the same pixels, or a thumbnail that correlates above
    `correlation` with a reference's (the same picture resized, recompressed or shifted in grey level). Flat
    thumbnails (spread below `min_spread` grey levels) have no shape to compare, only their pixels."""
    if not candidates or not references:
        return []
    same = {f["sha256"] for f in references}
    a, b = _thumbs(candidates), _thumbs(references)
    a_spread, b_spread = a.std(axis=1), b.std(axis=1)
    a = (a - a.mean(axis=1, keepdims=True)) / np.maximum(a_spread, 1e-9)[:, None]
    b = (b - b.mean(axis=1, keepdims=True)) / np.maximum(b_spread, 1e-9)[:, None]
    similar = (a @ b.T / a.shape[1]) > correlation
    similar &= (a_spread[:, None] >= min_spread) & (b_spread[None, :] >= min_spread)
    return [i for i, f in enumerate(candidates) if f["sha256"] in same or similar[i].any()]
