"""Pneumonia detection from chest X-rays: a timm backbone with a two-class head.

    from modeling import PneumoniaClassifier
    model = PneumoniaClassifier.from_pretrained("weights/pneumonia-resnet50")
"""
from .config import ConfigError, ModelConfig
from .model import ModelLoadError, PneumoniaClassifier
from .preprocessing import ImageLoadError, eval_transform, load_rgb, normalize, read_image, to_rgb

__all__ = ["ConfigError", "ImageLoadError", "ModelConfig", "ModelLoadError", "PneumoniaClassifier",
           "eval_transform", "load_rgb", "normalize", "read_image", "to_rgb"]
