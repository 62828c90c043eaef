"""Loading a deployed model folder: one straight line from a folder or Hub id to the parts `Predictor` runs.

    deployment = load_deployment("weights/pneumonia-resnet50")   # or a Hub id, revision="v1"

The folder is resolved once (a Hub revision is downloaded whole), config.json is read once, the network is loaded
strictly, and every artifact beside the weights is checked against what config.json deploys
(`modeling.runtime.artifacts`): the calibration in config.json, the out-of-distribution detector, the chest X-ray
gate, the int8 calibration and the reference outputs. One fitted for other settings is refused, naming the command
that refits it. `Predictor.from_pretrained` builds on this and then checks the precision against the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .artifacts import check_fitted_for, deployment, file_record
from .config import ModelConfig
from .files import file_sha256, resolve_model_folder
from .gate import XrayGate
from .gate import load_deployed as load_xray_gate
from .model import PneumoniaClassifier
from .ood import StagedDetector
from .quantize import load_calibration
from .reference import REFERENCE_NAME, Reference, load_reference


@dataclass
class Deployment:
    """A model folder's parts, each checked against config.json."""

    folder: Path
    model: PneumoniaClassifier
    expected: dict[str, Any]  # what config.json deploys: precision, views, weights and split fingerprints
    ood: Optional[StagedDetector] = None
    xray_gate: Optional[XrayGate] = None
    int8_calibration: Optional[dict] = None
    int8_identity: Optional[str] = None  # weights and calibration, for the compiled int8 graph's cache
    reference: Optional[Reference] = None  # None where the folder has no reference outputs

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def load_deployment(source: str | Path, *, reference: bool = True, **hub_kwargs: Any) -> Deployment:
    """The folder's parts; `reference=False` leaves the reference outputs unread (a caller that sets the precision
    itself checks nothing against them)."""
    folder = resolve_model_folder(source, **hub_kwargs)
    model = PneumoniaClassifier.from_folder(folder, name=source)
    config = model.config
    expected = deployment(config, folder)
    if config.validation:
        check_fitted_for("calibration in config.json (temperature, threshold)", config.validation.get("fitted_for"),
                         expected)
    parts = Deployment(folder, model, expected)
    if config.ood.get("file"):
        check_fitted_for("out-of-distribution detector", config.ood.get("fitted_for"), expected)
        parts.ood, metadata = StagedDetector.load(folder / config.ood["file"])
        check_fitted_for("out-of-distribution detector", file_record(metadata, "out-of-distribution detector"),
                         expected)
    if config.xray_gate:
        parts.xray_gate = load_xray_gate(folder, config.xray_gate, expected["split_sha256"])
    if config.precision == "int8":
        check_fitted_for("int8 calibration", config.quantization.get("fitted_for"), expected)
        parts.int8_calibration, metadata = load_calibration(folder / config.quantization["file"])
        check_fitted_for("int8 calibration", file_record(metadata, "int8 calibration"), expected)
        parts.int8_identity = f"{expected['weights_sha256']}:{file_sha256(folder / config.quantization['file'])}"
    if reference and (folder / REFERENCE_NAME).exists():
        parts.reference = load_reference(folder / REFERENCE_NAME)
        check_fitted_for("reference outputs file", parts.reference.fitted_for, expected)
    return parts
