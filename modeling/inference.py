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
def predict_loader(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, positive_index: int,
                   temperature: float = 1.0, desc: str = "predicting") -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, positive-class probabilities, mean cross-entropy) over a prepared loader, all processes gathered."""
    model.eval()
    labels, probs, losses = [], [], []
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not accelerator.is_local_main_process):
        pixels = batch["pixel_values"].to(memory_format=torch.channels_last)
        with accelerator.autocast():
            logits = model(pixels).float()
        loss = torch.nn.functional.cross_entropy(logits, batch["label"], reduction="none")
        prob = torch.softmax(logits / temperature, dim=-1)[:, positive_index]
        gathered = accelerator.gather_for_metrics((batch["label"], prob, loss))
        labels.append(gathered[0].cpu())
        probs.append(gathered[1].cpu())
        losses.append(gathered[2].cpu())
    labels_np = (torch.cat(labels) == positive_index).numpy().astype(int)
    return labels_np, torch.cat(probs).numpy(), float(torch.cat(losses).mean())


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
