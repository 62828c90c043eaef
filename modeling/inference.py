"""Running a model over data: batched prediction shared by train (validation), evaluate and the app."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import attach_transform, label_mapping, label_names, load_data, saved_split_indices
from .model import PneumoniaClassifier
from .preprocessing import eval_transform, normalize, to_rgb


def inference_accelerator(model: PneumoniaClassifier) -> Accelerator:
    """An Accelerator for devices and processes only: `predict_loader` then runs in the precision config.json
    asks for (so evaluate and the demo agree), and one process can predict in several (accelerate's state
    is a per-process singleton, its mixed precision fixed at the first Accelerator)."""
    return Accelerator(mixed_precision="no", cpu=not torch.accelerator.is_available())


@torch.no_grad()
def predict_loader(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, desc: str = "predicting",
                   with_features: bool = False) -> tuple[np.ndarray, ...]:
    """(labels as model class indices, logits (N, C), mean cross-entropy[, penultimate features (N, D)])
    over a prepared loader, gathered from all processes. The precision is the accelerator's where it sets one
    (training), otherwise config.json's."""
    model.eval()
    network = accelerator.unwrap_model(model)
    forward = network.inference_forward()
    labels, logits, losses, features = [], [], [], []
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not accelerator.is_local_main_process):
        pixels = batch["pixel_values"]
        if pixels.dtype == torch.uint8:  # DecodedImages batches: normalised here, on the device
            pixels = normalize(pixels, network.config)
        pixels = pixels.to(memory_format=torch.channels_last)
        with accelerator.autocast() if accelerator.mixed_precision != "no" else network.autocast(pixels.device.type):
            batch_logits, batch_features = network.forward_views(pixels, forward)
        batch_logits = batch_logits.float()
        loss = torch.nn.functional.cross_entropy(batch_logits, batch["label"], reduction="none")
        gathered = accelerator.gather_for_metrics((batch["label"], batch_logits, loss))
        for store, value in zip((labels, logits, losses), gathered):
            store.append(value.cpu())
        if with_features:
            features.append(accelerator.gather_for_metrics(batch_features.float()).cpu())
    result = (torch.cat(labels).numpy(), torch.cat(logits).numpy(), float(torch.cat(losses).mean()))
    return result + (torch.cat(features).numpy(),) if with_features else result


def predict_saved_split(model: PneumoniaClassifier, data: str, split_file: Path, side: str,
                        with_features: bool = False) -> tuple[np.ndarray, ...]:
    """`predict_loader` over one side ("train" or "validation") of the split a training run saved."""
    train = load_data(data)["train"]
    subset = train.select(saved_split_indices(train, split_file, side))
    to_model = label_mapping(label_names(train), model.config.label_names)
    accelerator = inference_accelerator(model)
    loader = accelerator.prepare(DataLoader(attach_transform(subset, eval_transform(model.config), to_model),
                                            batch_size=32))
    return predict_loader(model, loader, accelerator, desc=side, with_features=with_features)


class Predictor:
    """A model with its own preprocessing and precision, as config.json describes them: the one
    inference path of the app, the benchmarks and library users."""

    def __init__(self, model: PneumoniaClassifier, compile: bool = False):
        """`compile=True`: torch.compile with freezing (batch norm folded into the convolutions, weights
        pre-packed for the CPU's matrix units); the first call of each batch size compiles (about a minute
        on 2 cores), later calls are faster. An int8 model (config.json's precision) is always compiled, a
        few seconds per batch size. Gradients (Grad-CAM) always use the eager model."""
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.config = model.config
        self.transform = eval_transform(model.config)
        self.forward = model.inference_forward()
        if compile and model.config.precision != "int8":
            self.forward = torch.compile(self.forward, options={"freezing": True})
        # int8 graphs are compiled per batch size and gain little from batching on a CPU: one image at a time
        # keeps to the one graph the app compiles at start
        self.batch_size = 1 if model.config.precision == "int8" else 16

    def tensor(self, image: Image.Image) -> torch.Tensor:
        """Any PIL image -> normalised (1, 3, S, S) network input."""
        return self.transform(to_rgb(image)).unsqueeze(0).to(memory_format=torch.channels_last)

    def analyse(self, images: Sequence[Image.Image], batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated class probabilities (N, C), looks like a chest X-ray (N,) bool)."""
        batch_size = batch_size or self.batch_size
        probs, in_distribution = [], []
        for start in range(0, len(images), batch_size):
            batch_probs, features = self.model.predict(
                torch.cat([self.tensor(image) for image in images[start:start + batch_size]]), forward=self.forward)
            probs.append(batch_probs.numpy())
            in_distribution.append(self.model.looks_like_training_data(features))
        if not probs:
            return np.zeros((0, self.config.num_classes)), np.zeros(0, dtype=bool)
        return np.concatenate(probs), np.concatenate(in_distribution)

    def probabilities(self, images: Sequence[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """Calibrated class probabilities, shape (N, C)."""
        return self.analyse(images, batch_size)[0]
