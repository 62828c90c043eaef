"""Affine resampling of image batches, shared by training augmentation and test-time views."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def warp(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Float (B, C, H, W), each image resampled bilinearly through its (2, 3) affine map; zeros outside."""
    grid = F.affine_grid(matrices.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def view_matrix(zoom: float = 1.0, degrees: float = 0.0) -> torch.Tensor:
    """A fixed (2, 3) view: zoom > 1 magnifies the centre, `degrees` rotates (test-time augmentation)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    return torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]])
