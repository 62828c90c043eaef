import io

import numpy as np
import pytest
import torch
from PIL import Image

from modeling.runtime.config import ModelConfig
from modeling.runtime.geometry import view_matrix, warp
from modeling.runtime.preprocessing import (
    ImageLoadError,
    eval_transform,
    load_rgb,
    normalize,
    read_image,
    resize_transform,
    to_rgb,
)
from modeling.runtime.views import DEFAULT_TTA_VIEWS, normalized_views
from modeling.training.augment import BatchAugment
from tests.helpers import FORMATS, KERMANY

CONFIG = ModelConfig(image_size=64)


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16", "I", "F", "1", "CMYK"])
@pytest.mark.parametrize("size", [(31, 17), (300, 1000)])
def test_any_mode_and_size_becomes_normalised_rgb_tensor(mode, size):
    gradient = np.linspace(0, 1, size[0] * size[1]).reshape(size[1], size[0])
    base = Image.fromarray((gradient * 65535).astype(np.uint16)) if mode.startswith("I") else \
        Image.fromarray((gradient * 255).astype(np.uint8))
    image = base.convert(mode) if mode not in ("I;16",) else base
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == size
    tensor = eval_transform(CONFIG)(rgb)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
    assert torch.isfinite(tensor).all()


def test_sixteen_bit_keeps_its_contrast():
    ramp = (np.tile(np.linspace(0, 4095, 256), (32, 1))).astype(np.uint16)  # 12-bit data in a 16-bit file
    rgb = to_rgb(Image.fromarray(ramp))
    values = np.asarray(rgb)[..., 0]
    assert values.min() == 0 and values.max() == 255  # windowed, not crushed to black


def _kermany_batch(count: int = 6) -> torch.Tensor:
    paths = sorted((KERMANY / "train" / "PNEUMONIA").iterdir())[:count]
    return torch.stack([resize_transform(CONFIG)(load_rgb(path)) for path in paths])


def test_batch_augment_gives_network_input_that_varies_per_image_epoch_and_process():
    pixels = _kermany_batch()
    augment = BatchAugment(CONFIG, seed=1)
    augment.set_epoch(0)
    first = augment(pixels)
    assert first.shape == (6, 3, 64, 64) and first.dtype == torch.float32
    assert first.is_contiguous(memory_format=torch.channels_last)
    low, high = normalize(torch.tensor([0, 255], dtype=torch.uint8).view(1, 2, 1).expand(3, 2, 1), CONFIG)[:, :, 0].T
    assert (first >= low.view(3, 1, 1) - 1e-5).all() and (first <= high.view(3, 1, 1) + 1e-5).all()
    augment.set_epoch(0)
    assert torch.equal(augment(pixels), first)  # a resumed epoch repeats its augmentation exactly
    augment.set_epoch(1)
    assert not torch.allclose(augment(pixels), first)
    augment.set_epoch(0, process_index=1)
    assert not torch.allclose(augment(pixels), first)


def test_batch_augment_geometry_is_mild_and_never_mirrors():
    augment = BatchAugment(CONFIG, seed=0)
    augment.set_epoch(0)
    matrices = augment.affine_matrices(4000, torch.device("cpu"))
    linear = matrices[:, :, :2]
    area = torch.linalg.det(linear)
    assert (area > 0).all()  # no reflection: the heart stays on the left
    cropped, padded = area <= 1.0 + 1e-6, area > 1.0 + 1e-6
    assert area[cropped].min() >= augment.recipe.crop_area[0] - 1e-6  # a crop keeps 55-100% of the image
    assert area[cropped].min() < augment.recipe.crop_area[0] + 0.02
    assert 0.15 < padded.float().mean() < 0.3  # about a quarter zoom out onto black (letterbox or padding)
    assert area.max() <= 16 / 9 + 1e-4  # at most a 16:9 letterbox, or 1.3x padding on both sides
    angle = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert angle.abs().max() <= 10 + 1e-4 and angle.abs().max() > 8  # rotations up to 10 degrees are drawn
    assert matrices[:, :, 2].abs().max() <= 1.0  # the crop's centre stays inside the image


def test_batch_augment_trains_at_a_smaller_size_for_progressive_resizing():
    pixels = _kermany_batch(4)
    augment = BatchAugment(CONFIG, seed=0)
    augment.set_epoch(0)
    small = augment(pixels, output_size=32)
    assert small.shape == (4, 3, 32, 32) and small.is_contiguous(memory_format=torch.channels_last)
    assert small.std() > 0.2  # an image, not a flat field


def test_cached_training_pixels_normalise_exactly_like_evaluation():
    image = load_rgb(next((KERMANY / "test" / "NORMAL").iterdir()))
    cached = resize_transform(CONFIG)(image)
    assert cached.dtype == torch.uint8 and cached.shape == (3, 64, 64)
    torch.testing.assert_close(normalize(cached, CONFIG), eval_transform(CONFIG)(image))


def test_dicom_monochrome1_is_inverted():
    # The two samples store identical pixel values; only the tag differs. MONOCHROME1 means
    # "0 is white", so a correct reader shows that file as the negative of the MONOCHROME2 one.
    import pydicom
    stored_1 = pydicom.dcmread(FORMATS / "monochrome1-sample.dcm").pixel_array
    stored_2 = pydicom.dcmread(FORMATS / "rsna-pneumonia-sample.dcm").pixel_array
    assert np.array_equal(stored_1, stored_2)
    shown_2 = np.asarray(read_image(FORMATS / "rsna-pneumonia-sample.dcm"), dtype=np.int16)
    shown_1 = np.asarray(read_image(FORMATS / "monochrome1-sample.dcm"), dtype=np.int16)
    assert shown_2.shape == shown_1.shape == (1024, 1024)
    assert np.array_equal(shown_1, 255 - shown_2)
    assert shown_2.std() > 20  # a real image, not a flat field


@pytest.mark.parametrize("payload, message", [
    (b"", "empty"),
    (b"%PDF-1.4 this is not an image", "not an image"),
])
def test_bad_bytes_are_refused_in_plain_words(payload, message):
    with pytest.raises(ImageLoadError, match=message):
        read_image(payload)


def test_truncated_image_is_refused():
    data = (KERMANY / "test" / "NORMAL").iterdir().__next__().read_bytes()
    with pytest.raises(ImageLoadError, match="damaged or truncated"):
        read_image(data[: len(data) // 2])


def test_decompression_bomb_and_tiny_images_are_refused():
    bomb = _png_bytes(Image.new("L", (12000, 12000)))  # 144 MP of zeros compresses to a few hundred kB
    with pytest.raises(ImageLoadError, match="too large"):
        read_image(bomb)
    with pytest.raises(ImageLoadError, match="too small"):
        read_image(_png_bytes(Image.new("L", (1, 1))))


def test_animated_gif_uses_first_frame():
    frames = [Image.new("L", (40, 40), color) for color in (10, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    rgb = to_rgb(read_image(buffer.getvalue()))
    assert rgb.size == (40, 40) and np.asarray(rgb).mean() < 50


def test_test_time_views_of_normalised_input_equal_resampling_the_image_with_black_borders():
    pixels = _kermany_batch(3)
    views = normalized_views(normalize(pixels, CONFIG), DEFAULT_TTA_VIEWS, CONFIG)
    assert views.shape == (3 * (1 + len(DEFAULT_TTA_VIEWS)), 3, 64, 64)
    torch.testing.assert_close(views[:3], normalize(pixels, CONFIG))  # the image as is comes first
    for i, view in enumerate(DEFAULT_TTA_VIEWS, 1):
        expected = normalize(warp(pixels.float() / 255, view_matrix(view["zoom"], view["degrees"]).expand(3, 2, 3)), CONFIG)
        torch.testing.assert_close(views[3 * i:3 * (i + 1)], expected, atol=1e-5, rtol=0)
    rotated = views[3 * 2]  # rotation by -5 degrees leaves black corners
    black = normalize(torch.zeros(3, 1, 1, dtype=torch.uint8), CONFIG)
    torch.testing.assert_close(rotated[:, 0, 0], black[:, 0, 0], atol=1e-5, rtol=0)


def test_shortcut_breaking_augmentation_frames_marks_and_sharpens_both_classes():
    """Black bands, burnt-in markers and sharpening are drawn per image whatever its label, so that neither
    what lies outside the thorax nor global sharpness tells the classes apart."""
    pixels = _kermany_batch(6).repeat(4, 1, 1, 1)
    plain = BatchAugment(CONFIG, seed=2, recipe="acquisition")
    full = BatchAugment(CONFIG, seed=2, recipe="shortcut-breaking")
    framed = full.frame(torch.ones(400, 1, 64, 64))
    black_rows = (framed[:, 0] == 0).all(dim=2)  # (n, rows): rows blacked out whole
    share_framed = (framed == 0).flatten(1).any(1).float().mean()
    assert 0.4 < share_framed < 0.6  # half the images get bands
    assert black_rows[:, :16].sum(1).max() <= 0.25 * 64 + 1 and black_rows.any()  # at most a quarter at the top
    marked = full.markers(torch.full((200, 1, 64, 64), 0.5))
    assert 0.4 < (marked != 0.5).flatten(1).any(1).float().mean() < 0.6
    path = sorted((KERMANY / "train" / "PNEUMONIA").iterdir())[0]
    full_size = resize_transform(ModelConfig(image_size=224))(load_rgb(path))[:1].float() / 255
    sharp = full.sharpness(torch.stack([full_size] * 300))
    laplacian = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float32).view(1, 1, 3, 3)
    detail = torch.nn.functional.conv2d(sharp, laplacian).flatten(1).var(1)
    original = detail.median()  # most images are left as they are
    assert (detail > 1.5 * original).float().mean() > 0.1  # some sharpened
    assert (detail < 0.67 * original).float().mean() > 0.2  # some blurred or resampled
    plain.set_epoch(0)
    assert plain(pixels).shape == full(pixels).shape == (24, 3, 64, 64)
