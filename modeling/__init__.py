"""Pneumonia detection from chest X-rays: a timm backbone with a two-class head.

    from modeling import Predictor, load_rgb
    predictor = Predictor.from_pretrained("weights/pneumonia-resnet50")   # or a Hub id
    analysis = predictor.analyse([load_rgb("xray.png")])

Names are imported on first use, so that `modeling.runtime.host` can run before torch is loaded.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": ".runtime.config", "ModelConfig": ".runtime.config",
    "ModelLoadError": ".runtime.files", "PneumoniaClassifier": ".runtime.model", "Predictor": ".runtime.inference",
    "ImageLoadError": ".runtime.preprocessing", "eval_transform": ".runtime.preprocessing", "load_rgb": ".runtime.preprocessing",
    "normalize": ".runtime.preprocessing", "read_image": ".runtime.preprocessing", "to_rgb": ".runtime.preprocessing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'modeling' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
