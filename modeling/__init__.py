"""Pneumonia detection from chest X-rays: a timm backbone with a two-class head.

    from modeling import Predictor, load_rgb
    predictor = Predictor.from_pretrained("weights/pneumonia-resnet50")   # or a Hub id
    analysis = predictor.analyse([load_rgb("xray.png")])

Names are imported on first use, so that `modeling.runtime` can run before torch is loaded.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": ".config", "ModelConfig": ".config",
    "ModelLoadError": ".files", "PneumoniaClassifier": ".model", "Predictor": ".inference",
    "ImageLoadError": ".preprocessing", "eval_transform": ".preprocessing", "load_rgb": ".preprocessing",
    "normalize": ".preprocessing", "read_image": ".preprocessing", "to_rgb": ".preprocessing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'modeling' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
