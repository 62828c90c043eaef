"""Running a model over data: batched prediction shared by train (validation), evaluate and the app."""
from __future__ import annotations

from typing import Sequence

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


class Predictor:
    """A model with its own preprocessing and precision, as config.json describes them: the one
    inference path of the app, the benchmarks and library users."""

    def __init__(self, model: PneumoniaClassifier):
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.config = model.config
        self.transform = eval_transform(model.config)

    def tensor(self, image: Image.Image) -> torch.Tensor:
        """Any PIL image -> normalised (1, 3, S, S) network input."""
        return self.transform(to_rgb(image)).unsqueeze(0).to(memory_format=torch.channels_last)

    def probabilities(self, images: Sequence[Image.Image], batch_size: int = 16) -> np.ndarray:
        """Calibrated class probabilities, shape (N, C)."""
        outputs = [self.model.predict_proba(torch.cat([self.tensor(image) for image in images[i:i + batch_size]]))
                   for i in range(0, len(images), batch_size)]
        return torch.cat(outputs).numpy() if outputs else np.zeros((0, self.config.num_classes))
