"""Test-time views: the image as is plus fixed zooms and rotations, their logits averaged."""
from __future__ import annotations

import torch

from .config import ModelConfig
from .geometry import view_matrix, warp
from .preprocessing import normalize

# the views that `python -m scripts.finalize --tta default` stores in config.json
DEFAULT_TTA_VIEWS = [{"zoom": 1.1, "degrees": 0.0}, {"zoom": 1.0, "degrees": -5.0}, {"zoom": 1.0, "degrees": 5.0}]

def normalized_views(pixels: torch.Tensor, views: list[dict[str, float]], config: ModelConfig) -> torch.Tensor:
    """Normalised network input (B, 3, H, W) -> (B * (1 + len(views)), 3, H, W): the batch as is, then each
    view of it; what falls outside the image is black."""
    if not views:
        return pixels
    black = normalize(torch.zeros(3, 1, 1, device=pixels.device), config).to(pixels.dtype)
    shifted = (pixels - black).float()
    batches = [pixels]
    for view in views:
        matrices = view_matrix(view["zoom"], view["degrees"]).expand(len(pixels), 2, 3)
        batches.append((warp(shifted, matrices) + black).to(pixels.dtype))
    return torch.cat(batches).contiguous(memory_format=torch.channels_last)
