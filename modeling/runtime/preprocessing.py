"""Reading images and turning them into network input, written once for train, evaluate and app.

`read_image` accepts a path or bytes of any common format (PNG, JPEG, TIFF, BMP, GIF, DICOM)
and raises `ImageLoadError` with a plain sentence (never a path) for anything it cannot use.
Large images are reduced while decoding to about `DECODE_MAX_SIDE` pixels (JPEG draft mode,
integer block means), which bounds memory and is ample for a 224-px network and a 640-px
preview. `to_rgb` turns any PIL mode (L, LA, RGB, RGBA, P, I;16, I, F, ...) into 8-bit RGB.

High-bit-depth grey without a display window of its own (16-bit PNG or TIFF, DICOM without VOI
LUT or window) is windowed by one rule, `window_to_uint8` (its 0.5-99.5 percentiles), after the
same reduction: the same array gives the same picture, and so the same probability, in any
container. A DICOM that carries a window is shown through it; MONOCHROME1 is inverted. `resize_transform`, `normalize`
and `eval_transform` take a `ModelConfig` so that sizes and normalisation come from config.json.
Training augmentation runs on whole batches on the device: `modeling.training.augment`.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data.transforms import str_to_interp_mode
from torchvision.transforms import v2

from .config import ModelConfig
from .dicom import HeaderCheck, is_dicom, read_header

ImageSource = Union[str, Path, bytes]

MAX_PIXELS = 80_000_000  # larger than any radiograph; guards against decompression bombs
MIN_SIDE = 16  # smaller than this carries no diagnostic content
MAX_ASPECT = 4.0  # radiographs are roughly square; a 20000x500 strip is not one
DECODE_MAX_SIDE = 1024  # decoded images are reduced to no less than this many pixels on the long side
WINDOW_PERCENTILES = (0.5, 99.5)  # the window of high-bit-depth grey that carries none
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImageLoadError(ValueError):
    """The input is not an image we can read; the message says why in plain words."""


def read_image(source: ImageSource, max_side: int | None = DECODE_MAX_SIDE) -> Image.Image:
    """Open a file path or raw bytes as a decoded PIL image (DICOM included), reduced by an integer factor to
    no less than `max_side` pixels on its long side (None: full size)."""
    data = source if isinstance(source, bytes) else _read_bytes(Path(source))
    if len(data) == 0:
        raise ImageLoadError("The file is empty.")
    if is_dicom(data):
        return _read_dicom(data, max_side)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image.size)
            frames = getattr(image, "n_frames", 1)
            image.seek(0)  # first frame of an animated GIF / multi-page TIFF
            if image.format == "JPEG" and max_side:
                image.draft(image.mode, (max_side, max_side))  # the decoder scales by 1/2, 1/4 or 1/8 itself
            image.load()
            note = f"The file has {frames} frames; only the first was analysed." if frames > 1 else None
            image = _reduce(image, max_side)
            if note:
                image.info["note"] = note
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError("The image is too large to process safely (possible decompression bomb).") from None
    except UnidentifiedImageError:
        raise ImageLoadError("The file is not an image this tool can read (PNG, JPEG, TIFF, BMP, GIF or DICOM).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageLoadError(f"The image file is damaged or truncated ({error}).") from None
    return image


def _reduction(size: tuple[int, int], max_side: int | None) -> int:
    return max(1, max(size) // max_side) if max_side else 1


def reduce_array(values: np.ndarray, factor: int) -> np.ndarray:
    """Block means over `factor` x `factor` tiles (float32); the last partial row and column are dropped."""
    if factor <= 1:
        return np.asarray(values, dtype=np.float32)
    height, width = (values.shape[0] // factor) * factor, (values.shape[1] // factor) * factor
    blocks = values[:height, :width].reshape(height // factor, factor, width // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _reduce(image: Image.Image, max_side: int | None) -> Image.Image:
    factor = _reduction(image.size, max_side)
    if factor <= 1:
        return image
    if image.mode in HIGH_BIT_DEPTH_MODES:  # block means in float, windowed later by `to_rgb`
        return Image.fromarray(reduce_array(np.asarray(image), factor), mode="F")
    if image.mode not in ("L", "RGB", "RGBA", "LA", "I", "F"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    return image.reduce(factor)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageLoadError(f"The file {path.name} is no longer there; please upload it again.") from None
    except IsADirectoryError:
        raise ImageLoadError(f"{path.name} is a folder, not an image file.") from None


def _check_size(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            f"The image is too large to process safely ({width}x{height} pixels; "
            f"the limit is {MAX_PIXELS // 1_000_000} megapixels).")
    if min(width, height) < MIN_SIDE:
        raise ImageLoadError(f"The image is too small ({width}x{height} pixels; at least {MIN_SIDE} per side is needed).")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageLoadError(f"The image is {width}x{height} pixels, far from the roughly square shape of a chest "
                             f"X-ray (aspect ratio above {MAX_ASPECT:g}:1).")


def read_checked(source: ImageSource, max_side: int | None = DECODE_MAX_SIDE) -> tuple[Image.Image | None, HeaderCheck | None]:
    """(the decoded image, the DICOM header's check): a file its header refuses (`HeaderCheck.verdict`) is never
    decoded, and comes back as (None, check). Other formats have no check."""
    data = source if isinstance(source, bytes) else _read_bytes(Path(source))
    check = read_header(data)
    if check is not None and check.verdict is not None:
        return None, check
    return read_image(data, max_side), check


def _read_dicom(data: bytes, max_side: int | None = DECODE_MAX_SIDE) -> Image.Image:
    """DICOM to an 8-bit grey or RGB image: modality LUT, reduction, the file's VOI window or else `window_to_uint8`,
    MONOCHROME1 inverted; colour (YBR converted to RGB by pydicom) scaled to 8 bits. The pixel data is decoded once,
    by pydicom with its plugins (pylibjpeg's libjpeg, openjpeg and RLE; pyjpegls), which read every transfer syntax
    a PACS sends; a multi-frame file gives its first frame."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except Exception as error:  # pydicom raises many types for a damaged header
        raise ImageLoadError(f"The DICOM file could not be read ({error}).") from None
    if "PixelData" not in dataset:
        raise ImageLoadError("The DICOM file holds no image (no pixel data).")
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if not rows or not columns:
        raise ImageLoadError("The DICOM header gives no image size (Rows and Columns).")
    _check_size((columns, rows))
    try:
        pixels = _decode_first_frame(dataset)
    except Exception:  # noqa: BLE001 - each decoder plugin raises its own types
        syntax = getattr(dataset.file_meta, "TransferSyntaxUID", None)
        raise ImageLoadError(f"The DICOM pixel data ({syntax.name if syntax else 'no transfer syntax'}) could not be "
                             "decoded: it is damaged, or in an encoding that no installed decoder reads.") from None
    photometric = dataset.get("PhotometricInterpretation", "MONOCHROME2")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if pixels.ndim == 2:  # PALETTE COLOR: pydicom applies the palette
            pixels = pydicom.pixels.apply_color_lut(pixels, dataset)
        bits = int(dataset.get("BitsStored", 8))
        rgb = np.round(pixels.astype(np.float64) * (255 / (2 ** bits - 1))).astype(np.uint8) if bits != 8 \
            else np.asarray(pixels, dtype=np.uint8)
        return _reduce(Image.fromarray(rgb), max_side)
    values = reduce_array(apply_modality_lut(pixels, dataset), _reduction((columns, rows), max_side))
    if "VOILUTSequence" in dataset or "WindowCenter" in dataset:
        windowed = np.asarray(apply_voi_lut(values, dataset), dtype=np.float64)
        grey = window_to_uint8(windowed, percentiles=(0.0, 100.0))  # the file's own window, stretched to 8 bits
    else:
        grey = window_to_uint8(values)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, mode="L")


PILLOW_FIRST = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")  # JPEG Baseline and Extended


def _decode_first_frame(dataset) -> np.ndarray:
    """The first frame's pixels. Baseline and extended JPEG go to Pillow first: its libjpeg-turbo decodes them to the
    bit as dcmtk does, where pylibjpeg's libjpeg differs by up to 2 levels; 12-bit JPEG, which Pillow refuses, and
    every other syntax go to pydicom's plugins in their own order."""
    from pydicom.pixels import pixel_array
    index = None if _frames(dataset) == 1 else 0
    if str(getattr(dataset.file_meta, "TransferSyntaxUID", "")) in PILLOW_FIRST and dataset.get("BitsStored", 8) <= 8:
        with contextlib.suppress(Exception):
            return pixel_array(dataset, index=index, decoding_plugin="pillow")
    return pixel_array(dataset, index=index)


def _frames(dataset) -> int:
    try:
        return max(1, int(dataset.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def window_to_uint8(values: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> np.ndarray:
    """High-bit-depth grey -> uint8 through the window between two percentiles of its values."""
    low, high = np.percentile(values, percentiles)
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.clip(values, low, high) - low) / (high - low)
    return np.round(scaled * 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB. High bit-depth grey is windowed by `window_to_uint8`."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        return Image.fromarray(window_to_uint8(np.asarray(image, dtype=np.float32)), mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def load_rgb(source: ImageSource) -> Image.Image:
    return to_rgb(read_image(source))


def resize_transform(config: ModelConfig) -> v2.Compose:
    """RGB PIL image -> uint8 tensor (3, S, S), the whole image squashed to S x S (what is cached for training)."""
    return v2.Compose([
        v2.PILToTensor(),
        v2.Resize((config.image_size, config.image_size), interpolation=str_to_interp_mode(config.interpolation),
                  antialias=True),
    ])


def normalize(pixels: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """uint8 or [0, 1] float pixels (..., 3, H, W) -> the network's normalised float input."""
    if pixels.dtype == torch.uint8:
        pixels = pixels.float() / 255
    mean = torch.tensor(config.mean, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(config.std, device=pixels.device).view(3, 1, 1)
    return (pixels - mean) / std


def eval_transform(config: ModelConfig) -> v2.Compose:
    """RGB PIL image -> normalised float tensor (3, S, S): `resize_transform`, then `normalize`."""
    return v2.Compose([resize_transform(config), Normalize(config)])


class Normalize:
    """`normalize` as a picklable transform (dataloader workers). Kept over torchvision's ToDtype(scale=True) and
    Normalize, which multiply by 1/255 where this divides by 255 and so differ from training in the last bit."""

    def __init__(self, config: ModelConfig):
        self.config = config

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize(pixels, self.config)
