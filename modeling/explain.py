"""Grad-CAM heatmaps: where in the image the network found evidence for a class.

Selvaraju et al. 2017. Gradients of the class logit with respect to the last feature stage
(timm's `feature_info[-1]`), averaged per channel, weight that stage's activations.
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from .model import PneumoniaClassifier


def last_feature_stage(model: PneumoniaClassifier) -> torch.nn.Module:
    """The module of the backbone's deepest feature map (layer4 for a ResNet)."""
    name = model.backbone.feature_info[-1]["module"]
    return model.backbone.get_submodule(name)


def grad_cam(model: PneumoniaClassifier, pixel_values: torch.Tensor,
             class_index: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """For one image (1, 3, H, W): (heatmap in [0, 1] at input resolution (H, W), class probabilities (C,),
    penultimate features (1, D) for the out-of-distribution check)."""
    stage = last_feature_stage(model)
    captured: dict[str, torch.Tensor] = {}

    def keep_activation(_module, _inputs, output):
        output.retain_grad()
        captured["activation"] = output

    handle = stage.register_forward_hook(keep_activation)
    try:
        with torch.enable_grad(), model.autocast(pixel_values.device.type):
            logits, features = model.forward_with_features(pixel_values.requires_grad_(False))
            logits = logits.float()
            model.zero_grad(set_to_none=True)
            logits[0, class_index].backward()
    finally:
        handle.remove()
    activation = captured["activation"].float()
    weights = captured["activation"].grad.float().mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam[0, 0].detach()
    cam = (cam - cam.min()) / (cam.max() - cam.min()) if cam.max() > cam.min() else torch.zeros_like(cam)
    probs = torch.softmax(logits.detach().float() / model.config.temperature, dim=-1)[0]
    return cam.numpy(), probs, features.detach().float()


def preview(image: Image.Image, max_side: int = 640) -> Image.Image:
    """An RGB copy for display, at most `max_side` pixels wide and high (a 3000 px X-ray is slow to send)."""
    shown = image.convert("RGB")
    shown.thumbnail((max_side, max_side))
    return shown


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45, max_side: int = 640) -> Image.Image:
    """The heatmap (jet colours) blended over the image, shown at most `max_side` pixels wide."""
    base = preview(image, max_side)
    heat = Image.fromarray(np.uint8(heatmap * 255)).resize(base.size, Image.BILINEAR)
    coloured = colormaps["jet"](np.asarray(heat) / 255.0)[..., :3]
    blended = (1 - alpha) * np.asarray(base, dtype=np.float32) / 255 + alpha * coloured
    return Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255))
