"""Running a model over data: batched prediction shared by train (validation), evaluate and the app."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .model import PneumoniaClassifier
from .preprocessing import eval_transform, to_rgb


@torch.no_grad()
def predict_loader(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
                   desc: str = "predicting") -> tuple[np.ndarray, np.ndarray, float]:
    """(labels as model class indices, logits (N, C), mean cross-entropy) over a prepared loader,
    gathered from all processes."""
    model.eval()
    labels, logits, losses = [], [], []
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not accelerator.is_local_main_process):
        pixels = batch["pixel_values"].to(memory_format=torch.channels_last)
        with accelerator.autocast():
            batch_logits = model(pixels).float()
        loss = torch.nn.functional.cross_entropy(batch_logits, batch["label"], reduction="none")
        gathered = accelerator.gather_for_metrics((batch["label"], batch_logits, loss))
        for store, value in zip((labels, logits, losses), gathered):
            store.append(value.cpu())
    return torch.cat(labels).numpy(), torch.cat(logits).numpy(), float(torch.cat(losses).mean())


@torch.no_grad()
def predict_images(model: PneumoniaClassifier, images: Iterable[Image.Image], batch_size: int = 16) -> np.ndarray:
    """Class probabilities (N, C) for PIL images of any mode, through the one preprocessing path."""
    transform = eval_transform(model.config)
    device = next(model.parameters()).device
    tensors = [transform(to_rgb(image)) for image in images]
    outputs = []
    for start in range(0, len(tensors), batch_size):
        batch = torch.stack(tensors[start:start + batch_size]).to(device, memory_format=torch.channels_last)
        outputs.append(model.predict_proba(batch).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, model.config.num_classes))
