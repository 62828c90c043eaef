"""The heatmap overlay: its colours are matplotlib's "jet", without the runtime loading matplotlib."""
import numpy as np
from matplotlib import colormaps
from PIL import Image

from modeling.runtime.display import JET, overlay


def test_the_colour_map_is_matplotlibs_jet():
    levels = np.arange(256) / 255.0
    assert np.abs(JET - colormaps["jet"](levels)[:, :3]).max() < 1e-6


def test_the_overlay_is_the_image_blended_with_the_heatmaps_colours():
    image = Image.fromarray(np.full((64, 64), 100, np.uint8))
    heatmap = np.zeros((8, 8), np.float32)
    heatmap[:4] = 1.0  # hot on top, cold below
    shown = np.asarray(overlay(image, heatmap, alpha=0.5)).astype(int)
    top, bottom = shown[2, 32], shown[-2, 32]
    assert top[0] > top[2] and bottom[2] > bottom[0]  # dark red above, dark blue below
    expected = np.uint8(np.clip(0.5 * 100 / 255 + 0.5 * JET[0], 0, 1) * 255)
    assert np.abs(bottom - expected).max() <= 1
