import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from modeling.runtime.config import ModelConfig
from modeling.runtime.preprocessing import load_rgb, resize_transform
from modeling.training.data import (
    BalancedSampler,
    DecodedImages,
    decode_once,
    drop_unreadable,
    first,
    grouped_validation_split,
    image_name,
    load_data,
    patient_id,
    saved_split,
)
from tests.helpers import FULL_KERMANY, KERMANY, copy_subset, needs_full_data


@pytest.mark.parametrize("name, patient", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person1000_virus_1681.jpeg", "person1000"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
])
def test_patient_id_from_kermany_file_names(name, patient):
    assert patient_id(name) == patient


@needs_full_data
def test_validation_split_of_full_train_is_patient_grouped_and_stratified():
    names, labels = [], []
    for label, folder in enumerate(("NORMAL", "PNEUMONIA")):
        files = sorted(p.name for p in (FULL_KERMANY / "train" / folder).iterdir())
        names += files
        labels += [label] * len(files)
    train_idx, val_idx = grouped_validation_split(names, labels, val_fraction=0.15, seed=42)
    assert set(train_idx).isdisjoint(val_idx) and len(train_idx) + len(val_idx) == len(names)
    train_patients = {patient_id(names[i]) for i in train_idx}
    val_patients = {patient_id(names[i]) for i in val_idx}
    assert train_patients.isdisjoint(val_patients)
    assert 0.12 < len(val_idx) / len(names) < 0.18
    val_share = np.mean([labels[i] for i in val_idx])
    assert abs(val_share - np.mean(labels)) < 0.03  # same class balance as train
    assert grouped_validation_split(names, labels, 0.15, seed=42)[1] == val_idx  # seeded


def test_corrupt_truncated_and_non_image_files_are_skipped_and_counted(tmp_path):
    data = copy_subset(tmp_path, {"train": 6})
    good = next((data / "train" / "NORMAL").iterdir()).read_bytes()
    (data / "train" / "NORMAL" / "truncated.jpeg").write_bytes(good[: len(good) // 3])
    (data / "train" / "PNEUMONIA" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    (data / "train" / "PNEUMONIA" / "actually-text.jpg").write_text("this is not an image")
    (data / "train" / "PNEUMONIA" / "readme.txt").write_text("notes")
    split = load_data(str(data))["train"]
    kept, report = drop_unreadable(split, "train", data_dir=str(data), show_progress=False)
    assert report.total == 15 and report.usable == 12 and len(kept) == 12
    assert sorted(name for name, _ in report.unreadable) == ["actually-text.jpg", "corrupt.png", "truncated.jpeg"]
    assert report.ignored_files == ["train/PNEUMONIA/readme.txt"]
    assert "skipped 3 unreadable" in report.summary()
    json.dumps(report.to_dict())


def test_balanced_sampler_draws_classes_equally_and_reproducibly():
    labels = [0] * 100 + [1] * 900
    sampler = BalancedSampler(labels, seed=3)
    sampler.set_epoch(0)
    draw = list(sampler)
    share = Counter(labels[i] for i in draw)[0] / len(draw)
    assert 0.45 < share < 0.55
    assert list(sampler) == draw  # depends on (seed, epoch) only
    sampler.set_epoch(1)
    assert list(sampler) != draw


def test_images_decoded_once_come_back_as_uint8_batches_equal_to_the_resize(tmp_path):
    data = copy_subset(tmp_path / "data", {"train": 5})
    train = load_data(str(data))["train"]
    config = ModelConfig(image_size=48)
    label_map = [1, 0]  # dataset NORMAL=0, PNEUMONIA=1 -> a model that lists them the other way round
    decoded = decode_once(train, config, label_map)
    loader = DataLoader(DecodedImages(decoded, config.image_size), batch_size=4, collate_fn=first)
    batches = list(loader)
    pixels = torch.cat([b["pixel_values"] for b in batches])
    labels = torch.cat([b["label"] for b in batches])
    assert pixels.dtype == torch.uint8 and pixels.shape == (10, 3, 48, 48)
    for i, record in enumerate(train):
        source = record["image"]["bytes"] or record["image"]["path"]
        assert torch.equal(pixels[i], resize_transform(config)(load_rgb(source)))
        assert labels[i] == label_map[record["label"]]
    again = decode_once(train, config, label_map)  # read back from the datasets cache
    assert again.cache_files == decoded.cache_files


def test_saved_split_is_carved_from_train_or_is_the_datasets_own_validation(tmp_path):
    """Every reader of split.json (finalize, evaluate --split validation, the docs figures) gets the images the
    run validated on: a part of train, or the data's own validation split where the run used that."""
    data = copy_subset(tmp_path / "data", {"train": 3})
    for label in ("NORMAL", "PNEUMONIA"):  # a validation split of the data's own, from the shipped test images
        (data / "validation" / label).mkdir(parents=True)
        for source in sorted((KERMANY / "test" / label).iterdir())[:2]:
            (data / "validation" / label / source.name).write_bytes(source.read_bytes())
    splits = load_data(str(data))
    train_names = [image_name(r, i) for i, r in enumerate(splits["train"]["image"])]
    own_names = [image_name(r, i) for i, r in enumerate(splits["validation"]["image"])]

    def names(split):
        return sorted(image_name(r, i) for i, r in enumerate(split["image"]))

    carved = tmp_path / "carved.json"
    carved.write_text(json.dumps({"source": "patient-grouped stratified split of train",
                                  "train": train_names[2:], "validation": train_names[:2]}))
    assert names(saved_split(splits, carved, "validation")) == sorted(train_names[:2])
    assert names(saved_split(splits, carved, "train")) == sorted(train_names[2:])

    own = tmp_path / "own.json"
    own.write_text(json.dumps({"source": "dataset validation split", "train": train_names, "validation": own_names}))
    assert names(saved_split(splits, own, "validation")) == sorted(own_names) and len(own_names) == 4
    assert names(saved_split(splits, own, "train")) == sorted(train_names)
