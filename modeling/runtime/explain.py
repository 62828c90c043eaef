"""Grad-CAM heatmaps: where in the image the network found evidence for a class.

Selvaraju et al. 2017. The gradient of the class logit with respect to the last feature stage's
map, averaged per channel, weights that map. The map comes out of the forward pass itself
(`forward_with_feature_map`) and `torch.autograd.grad` differentiates against it alone: no module
hooks, no parameter gradients, no `zero_grad`, nothing written to the shared model, so any number
of requests can run it at once.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from .model import PneumoniaClassifier


def grad_cam(model: PneumoniaClassifier, pixel_values: torch.Tensor, class_index: int,
             precision: contextlib.AbstractContextManager | None = None
             ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """For one image (1, 3, H, W), in the `precision` context given (an autocast, say): (heatmap in [0, 1] at
    input resolution (H, W), logits (C,), OOD features (1, D))."""
    with torch.enable_grad(), precision or contextlib.nullcontext():
        logits, features, feature_map = model.forward_with_feature_map(pixel_values.detach())
        (gradient,) = torch.autograd.grad(logits[0, class_index].float(), feature_map)
    weights = gradient.float().mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * feature_map.detach().float()).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam[0, 0].cpu()
    cam = (cam - cam.min()) / (cam.max() - cam.min()) if cam.max() > cam.min() else torch.zeros_like(cam)
    return cam.numpy(), logits.detach().float()[0].cpu(), features.detach().float().cpu()
