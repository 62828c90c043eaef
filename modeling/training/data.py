"""Data: Hugging Face `datasets` loading, image checks, patient-grouped validation, balanced sampling.

`--data` is either a local imagefolder (`DIR/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg`) or a Hub
dataset id such as `hf-vision/chest-xray-pneumonia`. Images stay undecoded in the dataset
(`Image(decode=False)`) and are decoded by `modeling.runtime.preprocessing`: per image in the
dataloader for evaluation (`attach_transform`), or once for training (`decode_once`, cached by
`datasets` on disk, then read back as uint8 batches by `DecodedImages`).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Features, Value, load_dataset
from datasets import Image as ImageFeature
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import Sampler
from tqdm.auto import tqdm

from ..runtime.config import ModelConfig
from ..runtime.files import looks_like_path, write_json_atomic
from ..runtime.preprocessing import ImageLoadError, read_image, resize_transform, to_rgb

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
MIN_VALIDATION_IMAGES = 200  # an official validation split smaller than this is too small to select on


class DataLoadError(RuntimeError):
    """The data could not be loaded; the message is one sentence saying what to do."""


def load_data(data: str, cache_dir: str | None = None) -> DatasetDict:
    """All splits of a local imagefolder or a Hub dataset, with images left undecoded."""
    if os.path.isdir(data):
        splits = load_dataset("imagefolder", data_dir=data, cache_dir=cache_dir)
    elif looks_like_path(data):
        raise DataLoadError(f"--data {data} is not a folder; pass an imagefolder or a Hugging Face dataset id.")
    else:
        try:
            splits = load_dataset(data, cache_dir=cache_dir)
        except Exception as error:  # noqa: BLE001 - offline and auth failures come as many types
            raise DataLoadError(
                f"Could not load the dataset {data!r} from the Hugging Face Hub ({type(error).__name__}); "
                "connect to the internet or pass a local folder to --data.") from None
    return DatasetDict({name: _normalise_columns(split) for name, split in splits.items()})


def _normalise_columns(split: Dataset) -> Dataset:
    image_column = next(name for name, feature in split.features.items() if isinstance(feature, ImageFeature))
    if image_column != "image":
        split = split.rename_column(image_column, "image")
    return split.cast_column("image", ImageFeature(decode=False))


def label_names(split: Dataset) -> list[str]:
    return list(split.features["label"].names)


def image_name(record: dict[str, Any], index: int) -> str:
    """The file name of an undecoded image record (its index when the dataset kept no path)."""
    path = record.get("path")
    return os.path.basename(path) if path else f"image-{index:06d}"


def patient_id(filename: str) -> str:
    """Kermany file names carry the patient: person1000_virus_1681 -> person1000, IM-0115-0001 -> IM-0115."""
    stem = Path(filename).stem
    match = re.match(r"(person\d+)_", stem)
    if match:
        return match.group(1)
    match = re.match(r"(.+)-\d+$", stem)
    return match.group(1) if match else stem


@dataclass
class ScanReport:
    """What a data check found: how many images were usable, and which were not and why."""
    split: str
    total: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)

    @property
    def usable(self) -> int:
        return self.total - len(self.unreadable)

    def summary(self) -> str:
        text = f"{self.split}: {self.usable} usable images of {self.total}"
        if self.unreadable:
            text += f"; skipped {len(self.unreadable)} unreadable ({', '.join(n for n, _ in self.unreadable[:5])}"
            text += ", ...)" if len(self.unreadable) > 5 else ")"
        if self.ignored_files:
            text += f"; ignored {len(self.ignored_files)} non-image files"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "total": self.total, "usable": self.usable,
                "unreadable": [{"file": n, "reason": r} for n, r in self.unreadable],
                "ignored_files": self.ignored_files}


def drop_unreadable(split: Dataset, split_name: str, data_dir: str | None = None,
                    show_progress: bool = True) -> tuple[Dataset, ScanReport]:
    """Decode every image once; return the split without the ones that fail, and a report."""
    report = ScanReport(split_name, total=len(split))
    keep = []
    images = split["image"]
    for index, record in enumerate(tqdm(images, desc=f"checking {split_name} images", unit="img",
                                        disable=not show_progress, leave=False)):
        try:
            to_rgb(read_image(record["bytes"] or record["path"]))
            keep.append(index)
        except ImageLoadError as error:
            report.unreadable.append((image_name(record, index), str(error)))
    if data_dir and os.path.isdir(os.path.join(data_dir, split_name)):
        report.ignored_files = sorted(
            str(path.relative_to(data_dir)) for path in Path(data_dir, split_name).rglob("*")
            if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS and not path.name.startswith("."))
    return (split.select(keep) if len(keep) < len(split) else split), report


def grouped_validation_split(names: Sequence[str], labels: Sequence[int], val_fraction: float,
                             seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, validation): stratified by label, grouped by patient, seeded."""
    n_splits = max(2, round(1 / val_fraction))
    groups = [patient_id(name) for name in names]
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(labels)), labels, groups))
    return sorted(train_idx.tolist()), sorted(val_idx.tolist())


def make_train_val(splits: DatasetDict, val_fraction: float, seed: int, split_file: Path,
                   reuse_split: str | None = None) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """Train and validation sets: the dataset's own validation split if big enough, else a
    patient-grouped split of train. The split is saved (file names) to `split_file` for checks and reuse."""
    train = splits["train"]
    names = [image_name(record, i) for i, record in enumerate(train["image"])]
    if "validation" in splits and len(splits["validation"]) >= MIN_VALIDATION_IMAGES and not reuse_split:
        validation = splits["validation"]
        info = {"source": "dataset validation split", "validation": [image_name(r, i) for i, r in enumerate(validation["image"])]}
        info["train"] = names
    else:
        if reuse_split:
            saved = json.loads(Path(reuse_split).read_text())
            position = {name: i for i, name in enumerate(names)}
            val_idx = sorted(position[n] for n in saved["validation"] if n in position)
            val_set = set(val_idx)
            train_idx = [i for i in range(len(names)) if i not in val_set]
            info = {**saved, "source": f"reused from {reuse_split}"}
        else:
            train_idx, val_idx = grouped_validation_split(names, train["label"], val_fraction, seed)
            info = {"source": "patient-grouped stratified split of train", "seed": seed,
                    "val_fraction": val_fraction}
            if any(name.startswith("image-") for name in names):
                info["warning"] = ("the dataset keeps no file names, so patients are unknown and this split "
                                   "is not grouped by patient")
        info["train"] = [names[i] for i in train_idx]
        info["validation"] = [names[i] for i in val_idx]
        validation = train.select(val_idx)
        train = train.select(train_idx)
    write_json_atomic(split_file, info)
    return train, validation, info


def saved_split_indices(train: Dataset, split_file: Path, side: str) -> list[int]:
    """Indices in `train` of one side ("train" or "validation") of the split a training run saved."""
    keep = set(json.loads(Path(split_file).read_text())[side])
    return [i for i, record in enumerate(train["image"]) if image_name(record, i) in keep]


def saved_split(splits: DatasetDict, split_file: Path, side: str) -> Dataset:
    """One side ("train" or "validation") of the split a training run saved (split.json): carved from the
    data's train split, or the data's own validation split where the run validated on that."""
    source = json.loads(Path(split_file).read_text()).get("source")
    if side == "validation" and source == "dataset validation split" and "validation" in splits:
        return splits["validation"]
    return splits["train"].select(saved_split_indices(splits["train"], split_file, side))


def attach_transform(split: Dataset, transform: Callable[[Any], torch.Tensor],
                     label_map: Sequence[int]) -> Dataset:
    """A view of `split` yielding {"pixel_values", "label"} tensors, decoded on the fly."""
    def decode_batch(batch: dict[str, list]) -> dict[str, Any]:
        pixels = [transform(to_rgb(read_image(r["bytes"] or r["path"]))) for r in batch["image"]]
        return {"pixel_values": pixels, "label": [label_map[label] for label in batch["label"]]}
    return split.with_transform(decode_batch)


def _decode_and_resize(batch: dict[str, list], transform: Callable, label_map: Sequence[int]) -> dict[str, list]:
    pixels = [transform(to_rgb(read_image(r["bytes"] or r["path"]))).numpy().tobytes() for r in batch["image"]]
    return {"pixels": pixels, "label": [label_map[label] for label in batch["label"]]}


def decode_once(split: Dataset, config: ModelConfig, label_map: Sequence[int], num_proc: int | None = None) -> Dataset:
    """Every image decoded and squashed to the model's input size once, as raw uint8 bytes (3 x S x S).

    `datasets` caches the result on disk under the split's fingerprint, so later runs (and the
    other processes of a distributed run) read it back instead of decoding again.
    """
    features = Features({"pixels": Value("binary"), "label": Value("int64")})
    return split.map(_decode_and_resize, batched=True, batch_size=64, features=features,
                     remove_columns=split.column_names, num_proc=num_proc,
                     fn_kwargs={"transform": resize_transform(config), "label_map": list(label_map)},
                     desc=f"Decoding and resizing images to {config.image_size}px (once)")


def _thorax_boxes(batch: dict[str, list], image_size: int) -> dict[str, list]:
    from .lungs import lung_fields  # scikit-image, for the recipes that need it

    grey = [np.frombuffer(pixels, dtype=np.uint8).reshape(3, image_size, image_size).mean(0) / 255
            for pixels in batch["pixels"]]
    return {"thorax_box": [list(lung_fields(image).box) for image in grey]}


def with_thorax_boxes(decoded: Dataset, image_size: int, num_proc: int | None = None) -> Dataset:
    """`decode_once`'s output with each image's thorax box (top, bottom, left, right, as `modeling.training.lungs` finds it
    on the squashed image: where the shortcut scores look), found once and cached on disk like the pixels."""
    return decoded.map(_thorax_boxes, batched=True, batch_size=64, num_proc=num_proc,
                       fn_kwargs={"image_size": image_size}, desc="Finding the thorax in each image (once)")


class DecodedImages(torch.utils.data.Dataset):
    """Random access to `decode_once`'s output; a list of indices gives a whole batch at once:
    {"pixel_values": uint8 (B, 3, S, S), "label": int64 (B,)}. Use with `collate_fn=first`."""

    def __init__(self, decoded: Dataset, image_size: int):
        self.decoded = decoded
        self.shape = (3, image_size, image_size)

    def __len__(self) -> int:
        return len(self.decoded)

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        rows = self.decoded[indices]
        pixels = np.frombuffer(b"".join(rows["pixels"]), dtype=np.uint8).reshape(len(indices), *self.shape)
        batch = {"pixel_values": torch.from_numpy(pixels.copy()), "label": torch.tensor(rows["label"])}
        if "thorax_box" in rows:
            batch["thorax_box"] = torch.tensor(rows["thorax_box"])
        return [batch]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([index])[0]
        return {"pixel_values": batch["pixel_values"][0], "label": batch["label"][0]}


def first(batch: list) -> Any:
    """collate_fn for datasets whose `__getitems__` already returns the whole batch."""
    return batch[0]


def label_mapping(dataset_labels: Sequence[str], model_labels: Sequence[str]) -> list[int]:
    """Dataset label index -> model label index, matched by name (case-insensitive)."""
    lookup = {name.upper(): i for i, name in enumerate(model_labels)}
    try:
        return [lookup[name.upper()] for name in dataset_labels]
    except KeyError as error:
        raise ValueError(f"dataset label {error.args[0]!r} is not one of the model's labels {list(model_labels)}") from None


class BalancedSampler(Sampler[int]):
    """Draws `num_samples` indices per epoch with replacement, each class equally likely.

    The draw depends only on (seed, epoch), never on global RNG state, so every process of a
    distributed run draws the same sequence and `accelerate` hands each process its own share
    of the batches; resuming at an epoch reproduces that epoch's draw exactly.
    """

    def __init__(self, labels: Sequence[int], seed: int = 0, num_samples: int | None = None):
        labels_array = np.asarray(labels)
        counts = np.bincount(labels_array)
        self.weights = torch.as_tensor(1.0 / counts[labels_array], dtype=torch.double)
        self.num_samples = num_samples or len(labels_array)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples
