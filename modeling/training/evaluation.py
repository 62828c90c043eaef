"""Predicting a dataset split with a `Predictor`: the sides of the train/validation split a run saved.

Kept apart from `modeling.runtime.inference`, so that loading a model for the demo or a library call does not
import `datasets`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from datasets import Dataset
from PIL import Image
from torch.utils.data import DataLoader

from ..runtime.inference import Predictor
from ..runtime.preprocessing import ImageLoadError, read_image
from .data import attach_transform, label_mapping, label_names, load_data, saved_split


def predict_split(predictor: Predictor, data: str, split_file: Path, side: str, with_features: bool = False,
                  views: bool = True, batch_size: int = 32,
                  change: Callable[[Image.Image], Image.Image] | None = None) -> tuple[np.ndarray, ...]:
    """`Predictor.predict_loader` over one side ("train" or "validation") of the split a training run saved, each
    image first changed by `change` where one is given (`modeling.training.robustness`)."""
    return predict_subset(predictor, saved_split(load_data(data), split_file, side), side, with_features, views,
                          batch_size, change)


def predict_subset(predictor: Predictor, subset: Dataset, desc: str, with_features: bool = False, views: bool = True,
                   batch_size: int = 32,
                   change: Callable[[Image.Image], Image.Image] | None = None) -> tuple[np.ndarray, ...]:
    """As predict_split, on a side already loaded (`modeling.training.data.saved_split`), for callers that predict it often."""
    to_model = label_mapping(label_names(subset), predictor.config.label_names)
    transform = predictor.transform if change is None else (lambda image: predictor.transform(change(image)))
    loader = DataLoader(attach_transform(subset, transform, to_model), batch_size=batch_size)
    return predictor.predict_loader(loader, desc=desc, with_features=with_features, views=views)


def read_folder(folder: Path) -> tuple[list[str], list, list[str]]:
    """(names, images, names refused by the reader: too small, too elongated, unreadable)."""
    names, images, refused = [], [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            images.append(read_image(path))
            names.append(path.name)
        except ImageLoadError:
            refused.append(path.name)
    return names, images, refused
