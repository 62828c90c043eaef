"""From trained weights to a deployable model folder, in one pass fitted for what will be deployed.

    python -m scripts.finalize RUN_DIR --data DIR_OR_ID [--output-dir DIR] [--precision int8|bfloat16|float32]
                                [--tta default|none|auto] [--threshold-rule sensitivity|youden|prior]
                                [--target-sensitivity 0.95] [--weights-dtype float32|bfloat16]
                                [--ood-gate as-is|augmented] [--xray-gate GATE_DIR]
    python -m scripts.finalize MODEL_DIR --add-xray-gate GATE_DIR

RUN_DIR is a training run's folder: its network in RUN_DIR/trained/ (or RUN_DIR itself, when it is
a model folder), split.json and the training log. The deployable folder (default RUN_DIR/model/) is
built in a hidden sibling and renamed into place when complete. In the deployed precision and
test-time views, on the training split that the run saved:
1. the weights are written in --weights-dtype (bf16 halves every download), and everything below
   is fitted on exactly those weights; `--tta auto` then deploys the views (the image alone, or
   with the default views) whose log-loss after temperature scaling, on validation as it is and under
   each change of `modeling.training.robustness`, is lower on average, in float32;
2. int8 only: activation ranges measured on training images, each with the views
   (`int8-calibration.safetensors`);
3. temperature and threshold fitted on validation (the threshold by --threshold-rule; every rule's
   bootstrap spread is recorded beside it);
4. the out-of-distribution detector fitted on train features, scaled on validation (`ood.safetensors`);
   `--ood-gate augmented` fits it on each training image as is and once under the training
   augmentation, and judges "not a chest X-ray" at the thumbnail too (a candidate that
   `scripts/ood_development.py` compares with the default; the README says why it is not the default);
5. `--xray-gate`: the chest X-ray gate that `modeling.gate_training.train` wrote to GATE_DIR, checked to have
   learnt this split, is copied in and its threshold goes into config.json. It reads the input image
   only, so `--add-xray-gate` puts one into a finalized folder (rewritten whole) and leaves every other
   file as it was.
6. the network's own float32 answers on the example X-rays (`reference_outputs.safetensors`), against which
   loading checks the precision that runs (`modeling.runtime.reference`).
Each artifact records what it was fitted for, and config.json is written last. train.py
runs this at its end with its own defaults.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..runtime.artifacts import deployment, file_metadata, split_fingerprint_of
from ..runtime.config import ModelConfig
from ..runtime.files import (
    CONFIG_NAME,
    DEPLOYED_DIR,
    SPLIT_NAME,
    WEIGHTS_NAME,
    ModelLoadError,
    file_sha256,
    folder_written_whole,
    source_network_folder,
)
from ..runtime.gate import GATE_FILE, GATE_REPORT_FILE, GATE_SOURCES_FILE, XrayGate
from ..runtime.gate import load_deployed as load_xray_gate
from ..runtime.inference import Predictor, deployment_device
from ..runtime.model import PneumoniaClassifier
from ..runtime.ood import NOT_AN_XRAY_FACTOR, OOD_FILE, fit_detector
from ..runtime.preprocessing import normalize
from ..runtime.probability import log_loss, positive_probs
from ..runtime.quantize import CALIBRATION_NAME, calibrate, save_calibration
from ..runtime.reference import REFERENCE_NAME, example_images, write_reference
from ..runtime.views import DEFAULT_TTA_VIEWS, normalized_views
from .augment import BatchAugment
from .calibration import THRESHOLD_RULES, calibrated_log_loss, operating_point
from .data import DecodedImages, decode_once, first, label_mapping, label_names, load_data, saved_split
from .evaluation import predict_split, predict_subset
from .robustness import PERTURBATIONS
from .run_log import recipe_of

RUN_FILES = (SPLIT_NAME, "training_log.json", "data_report.json")  # the run's record, copied into the model folder
# float32 unless asked: int8 and bf16 kernels are the CPU's, and the same int8 model answers otherwise on an AVX2-only
# CPU than on one with VNNI (modeling.runtime.reference); a bundle's figures must hold on every CPU
DEFAULT_PRECISION = "float32"
WEIGHTS_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
VIEW_CHOICES = {"default": list(DEFAULT_TTA_VIEWS), "none": []}
OOD_GATES = {"as-is": "the training X-rays as they are; 'not a chest X-ray' judged at the network's mid-level stages",
             "augmented": "the training X-rays as they are and once under the training augmentation; 'not a chest "
                          "X-ray' judged at the network's mid-level stages and the thumbnail"}


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The deployment options, shared with train.py (which finalizes its run at the end)."""
    parser.add_argument(f"--{prefix}precision", choices=["int8", "bfloat16", "float32"], default=None,
                        help="inference precision to deploy and fit for (default float32, the one path whose answers are the "
                             "same on every CPU; int8 and bfloat16 run where their kernels reproduce it, checked at load)")
    parser.add_argument(f"--{prefix}tta", choices=list(VIEW_CHOICES) + ["auto"], default="default",
                        help=f"test-time views: the image as is plus {DEFAULT_TTA_VIEWS} (default), the image alone "
                             "(none), or whichever of the two has the lower calibrated validation log-loss, on average over "
                             "the images as they are and changed as in the robustness report (auto)")
    parser.add_argument(f"--{prefix}threshold-rule", choices=list(THRESHOLD_RULES), default="sensitivity",
                        help="; ".join(f"{name}: {meaning}" for name, (_, meaning) in THRESHOLD_RULES.items()))
    parser.add_argument(f"--{prefix}target-sensitivity", type=float, default=0.95,
                        help="for --threshold-rule sensitivity")
    parser.add_argument(f"--{prefix}weights-dtype", choices=list(WEIGHTS_DTYPES), default="float32",
                        help="how the weights are stored (bfloat16 halves the download; they run as float32)")
    parser.add_argument(f"--{prefix}ood-quantile", type=float, default=0.995,
                        help="validation quantile at which an X-ray counts as unlike the training X-rays")
    parser.add_argument(f"--{prefix}ood-gate", choices=list(OOD_GATES), default="as-is",
                        help="; ".join(f"{name}: {meaning}" for name, meaning in OOD_GATES.items()))
    parser.add_argument(f"--{prefix}int8-images", type=int, default=256, help="training images to calibrate int8 on")
    parser.add_argument(f"--{prefix}xray-gate", type=Path, default=None, metavar="GATE_DIR",
                        help="a chest X-ray gate trained on this split (python -m scripts.train_xray_gate): it alone "
                             "decides 'not a chest X-ray'")


def install_xray_gate(gate_dir: Path, folder: Path) -> tuple[dict[str, Any], XrayGate]:
    """Copy the gate of `gate_dir` and its record into the model folder being written; returns config.json's
    `xray_gate` settings and the gate as loaded from the folder. Refused (ModelLoadError) unless the gate learnt
    the folder's own split."""
    gate_dir = Path(gate_dir)
    try:
        report = json.loads((gate_dir / GATE_REPORT_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise ModelLoadError(f"{gate_dir.name} holds no readable {GATE_REPORT_FILE}; it is not a folder that "
                             "python -m scripts.train_xray_gate wrote.") from None
    for name in (GATE_FILE, GATE_SOURCES_FILE, GATE_REPORT_FILE):
        shutil.copy2(gate_dir / name, folder / name)
    settings = {"file": GATE_FILE, "sha256": file_sha256(folder / GATE_FILE), "threshold": float(report["threshold"]),
                "threshold_rule": report["threshold_rule"], "architecture": report["architecture"],
                "input_size": report["input_size"], "sources": GATE_SOURCES_FILE, "report": GATE_REPORT_FILE,
                "trained_by": report["command"]}
    return settings, load_xray_gate(folder, settings, split_fingerprint_of(folder / SPLIT_NAME))


def add_xray_gate(model_dir: Path, gate_dir: Path, log=print) -> None:
    """Rewrite the finalized folder `model_dir` whole with the gate of `gate_dir` in it; every other file, config.json's
    other fields included, stays as it was (the gate reads the input image, not the network)."""
    model_dir = Path(model_dir)
    config = ModelConfig.load(model_dir / CONFIG_NAME)
    with folder_written_whole(model_dir) as folder:
        shutil.copytree(model_dir, folder, dirs_exist_ok=True)
        settings, _ = install_xray_gate(gate_dir, folder)
        replace(config, xray_gate=settings).save(folder / CONFIG_NAME)
    log(f"{model_dir}: chest X-ray gate {settings['architecture']} at {settings['input_size']} px, "
        f"'not a chest X-ray' below logit {settings['threshold']:.3f}")


def _decoded_training_side(config: ModelConfig, data: str, split_file: Path, images: int | None = None) -> Dataset:
    """The training side of the saved split (`images` of it, drawn with seed 0), decoded once at the input size."""
    train = saved_split(load_data(data), split_file, "train")
    if images is not None:
        train = train.select(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:images].tolist())
    return decode_once(train, config, label_mapping(label_names(train), config.label_names))


def int8_calibration(network: PneumoniaClassifier, views: list[dict[str, float]], data: str, split_file: Path,
                      images: int, batch_size: int = 32) -> tuple[dict[str, torch.Tensor], int]:
    """Activation ranges on `images` training-side images of the saved split, each with the test-time `views`."""
    config = network.config
    decoded = _decoded_training_side(config, data, split_file, images)
    loader = DataLoader(DecodedImages(decoded, config.image_size), batch_size=min(batch_size, len(decoded)),
                        collate_fn=first, drop_last=True)
    batches = (normalized_views(normalize(batch["pixel_values"], config), views, config) for batch in loader)
    return calibrate(network.cpu().eval(), batches), len(loader) * loader.batch_size


def ood_train_features(predictor: Predictor, data: str, split_file: Path, augmented: bool, recipe: str,
                       seed: int = 0, batch_size: int = 32) -> np.ndarray:
    """OOD features of the training side of the saved split: every image as is, then (`augmented`) every image once
    under the run's training augmentation (`BatchAugment` with its `recipe`, epoch 0 of `seed`). The features are
    those of the image alone; the views do not enter."""
    if not augmented:
        return predict_split(predictor, data, split_file, "train", with_features=True, views=False)[3]
    config = predictor.config
    decoded = _decoded_training_side(config, data, split_file)
    loader = DataLoader(DecodedImages(decoded, config.image_size), batch_size=batch_size, collate_fn=first)
    augment = BatchAugment(config, seed=seed, recipe=recipe)
    augment.set_epoch(0, device=predictor.device)
    as_is, changed = [], []
    for batch in tqdm(loader, desc="train, as is and augmented", unit="batch", leave=False):
        pixels = batch["pixel_values"].to(predictor.device)
        as_is.append(predictor.logits_and_features(pixels, views=False)[1].cpu().numpy())
        changed.append(predictor.logits_and_features(augment(pixels), views=False)[1].cpu().numpy())
    return np.concatenate(as_is + changed)


def view_scores(network: PneumoniaClassifier, data: str, split_file: Path,
                choices: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Each view choice's calibrated log-loss on the validation images as they are and under each change of
    `modeling.training.robustness`, and their mean: the temperature is fitted on the images as they are, as deployment fits
    it, and applied to the changed ones; predicted in float32, so that the scores are the network's own."""
    validation = saved_split(load_data(data), split_file, "validation")
    scores: dict[str, Any] = {}
    for name, views in choices.items():
        predictor = Predictor(network, precision="float32", views=views)
        labels, logits, _ = predict_subset(predictor, validation, "validation")
        loss, temperature = calibrated_log_loss(logits, labels, network.config.positive_index)
        per_change = {"as is": loss}
        for change_name, change in PERTURBATIONS.items():
            labels, logits, _ = predict_subset(predictor, validation, change_name, change=change)
            positive = labels == network.config.positive_index
            per_change[change_name] = log_loss(positive, positive_probs(logits, temperature,
                                                                         network.config.positive_index))
        scores[name] = {"mean": float(np.mean(list(per_change.values()))), "per_change": per_change}
    return scores


def choose_views(network: PneumoniaClassifier, data: str, split_file: Path) -> tuple[str, dict[str, Any]]:
    """`--tta auto`: the entry of VIEW_CHOICES whose calibrated log-loss (`view_scores`), averaged over the validation
    images as they are and under each change (new data is framed, sharpened and exposed otherwise), is the lower;
    views cost a forward pass each, so a tie goes to the fewer. Returns (the choice, each candidate's scores)."""
    scores = view_scores(network, data, split_file, dict(sorted(VIEW_CHOICES.items(), key=lambda item: len(item[1]))))
    return min(scores, key=lambda name: scores[name]["mean"]), scores


def finalize(run_dir: Path, data: str, output_dir: Path | None = None, precision: str | None = None,
             tta: str = "default", threshold_rule: str = "sensitivity", target_sensitivity: float = 0.95,
             weights_dtype: str = "float32", ood_quantile: float = 0.995, ood_gate: str = "as-is",
             int8_images: int = 256, xray_gate: Path | None = None, command: str | None = None,
             log=print) -> dict[str, Any]:
    """Write the deployable model folder `output_dir` (default: RUN_DIR/model) from the run's trained network;
    returns config.json's `validation` record. The folder is built in a hidden sibling and renamed into place, so
    that a finalize stopped at any moment leaves the previous complete folder, or none. `command`: the command line
    to record as how the folder was made."""
    run_dir = Path(run_dir)
    out = Path(output_dir) if output_dir else run_dir / DEPLOYED_DIR
    precision = precision or DEFAULT_PRECISION
    started = time.time()
    trained = PneumoniaClassifier.from_pretrained(source_network_folder(run_dir))
    if not (run_dir / SPLIT_NAME).exists():
        raise ModelLoadError(f"{run_dir} has no {SPLIT_NAME}: finalize fits on the split its training run saved.")
    with folder_written_whole(out) as folder:
        for name in RUN_FILES:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, folder / name)
        split_file = folder / SPLIT_NAME

        # 1. the weights as they will be deployed; everything below is fitted on exactly these (possibly rounded)
        trained.save_weights(folder, weights_dtype=WEIGHTS_DTYPES[weights_dtype])
        network = PneumoniaClassifier.from_weights(trained.config, folder / WEIGHTS_NAME)
        views, views_choice = list(VIEW_CHOICES.get(tta, [])), None
        if tta == "auto":
            tta, scores = choose_views(network, data, split_file)
            views = list(VIEW_CHOICES[tta])
            views_choice = {"rule": "auto: the lower calibrated log-loss averaged over validation as it is and under "
                                    "each change of modeling.training.robustness, in float32; a tie goes to the fewer views",
                            "calibrated_log_loss": {name: score["mean"] for name, score in scores.items()},
                            "per_change": {name: score["per_change"] for name, score in scores.items()}, "chosen": tta}
            log("views: " + ", ".join(f"{name} {score['mean']:.4f}" for name, score in scores.items()) + f" -> {tta}")
        fitted_for = deployment(replace(network.config, precision=precision, tta_views=views), folder)

        # 2. int8: activation ranges
        calibration, quantization = None, {}
        if precision == "int8":
            calibration, count = int8_calibration(network, views, data, split_file, int8_images)
            save_calibration(calibration, folder / CALIBRATION_NAME, file_metadata(fitted_for))
            quantization = {"file": CALIBRATION_NAME, "calibration_images": count,
                            "method": "static PTQ, torchao PT2E X86InductorQuantizer (default config)",
                            "source": "training side of split.json, with the test-time views", "fitted_for": fitted_for}
            log(f"int8 calibration on {count} training images ({1 + len(views)} view(s) each)")

        # 3. temperature and threshold, in the deployed precision and views
        predictor = Predictor(network, int8_calibration=calibration, device=deployment_device(precision),
                              precision=precision, views=views)
        labels, logits, _, val_features = predict_split(predictor, data, split_file, "validation", with_features=True)
        point = operating_point(logits, labels, network.config.positive_index, threshold_rule, target_sensitivity)
        temperature, threshold = point.pop("temperature"), point.pop("threshold")
        validation = {**point, "fitted_for": fitted_for, **({"views_choice": views_choice} if views_choice else {}),
                      "finalized_by": command or f"modeling.training.finalize.finalize({str(run_dir)!r}, {data!r}, ...)"}
        log(f"{1 + len(views)} view(s), {precision}: temperature {temperature:.4f} (validation ECE "
            f"{point['ece_before']:.4f} -> {point['ece_after']:.4f}); threshold {threshold:.4f} ({threshold_rule}): "
            f"validation sensitivity {point['sensitivity']:.4f}, specificity {point['specificity']:.4f} on {point['n']}")
        for name, rule in point["threshold_rules"].items():
            log(f"  rule {name:<12} threshold {rule['threshold']:.4f} (bootstrap 5-95%: {rule['bootstrap_p05']:.4f}-"
                f"{rule['bootstrap_p95']:.4f}), sensitivity {rule['sensitivity']:.4f}, specificity {rule['specificity']:.4f}")

        # 4. the out-of-distribution detector
        augmented = ood_gate == "augmented"
        recipe = recipe_of(run_dir)
        train_features = ood_train_features(predictor, data, split_file, augmented, recipe)
        detector, ood_threshold = fit_detector(train_features, val_features, ood_quantile,
                                               sizes=predictor.feature_sizes())
        detector.save(folder / OOD_FILE, file_metadata(fitted_for))
        stages = predictor.feature_stages()
        not_xray = network.feature_stages()[:-1] + ([stages[-1]] if augmented else [])  # [-1]: the thumbnail
        not_xray_stages = [i for i, name in enumerate(stages) if name in not_xray]
        images = len(train_features) // (2 if augmented else 1)
        ood = {"file": OOD_FILE, "quantile": ood_quantile, "components": detector.stages[0].components.shape[0],
               "stages": stages, "fitted_on": f"the {images} training X-rays of {SPLIT_NAME}, "
               + ("each as is and once under the training augmentation (seed 0)" if augmented else "as they are"),
               "threshold": ood_threshold, "not_xray_stages": not_xray_stages,
               "not_xray_threshold": NOT_AN_XRAY_FACTOR * ood_threshold, "fitted_for": fitted_for}
        log(f"out-of-distribution detector on {images} training X-rays{', as is and augmented' if augmented else ''}: "
            f"unlike them beyond {ood_threshold:.3f} (validation quantile {ood_quantile}) at any stage, no chest X-ray "
            f"beyond {NOT_AN_XRAY_FACTOR * ood_threshold:.3f} at {', '.join(stages[i] for i in not_xray_stages)}")

        # 5. the chest X-ray gate
        gate, gate_network = install_xray_gate(xray_gate, folder) if xray_gate else ({}, None)

        deployed = replace(network.config, precision=precision, tta_views=views, temperature=temperature,
                           threshold=threshold, ood=ood, quantization=quantization, xray_gate=gate,
                           validation=validation)

        # 6. the network's own answers on the example X-rays, against which loading checks the precision that runs
        network.config = deployed
        own = Predictor(network, ood=detector, xray_gate=gate_network, precision="float32", device="cpu")
        write_reference(own, example_images(), folder / REFERENCE_NAME, fitted_for)

        # config.json, the folder's one description of how it is deployed, last: until it exists nothing loads
        deployed.save(folder / CONFIG_NAME)
    log(f"finalized {out} in {time.time() - started:.0f} s")
    return validation
