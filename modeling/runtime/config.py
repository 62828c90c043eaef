"""The model folder's `config.json`: timm's Hub layout plus the fields inference needs.

timm reads `architecture`, `num_classes`, `label_names`, `model_args` and `pretrained_cfg`
(input size, interpolation, mean, std, crop). Our own fields sit beside them under
`inference` (decision threshold, positive label, calibration temperature, and the validation
operating characteristics that the demo's threshold control shows). This one file drives
train, evaluate and the app alike; every scalar of a deployed model (threshold, temperature,
out-of-distribution thresholds, the chest X-ray gate's threshold) lives here and nowhere else.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import write_json_atomic

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_LABELS = ("NORMAL", "PNEUMONIA")


class ConfigError(ValueError):
    """config.json is missing, unreadable or describes something we cannot build."""


@dataclass
class ModelConfig:
    architecture: str = "resnet50"
    label_names: tuple[str, ...] = DEFAULT_LABELS
    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    model_args: dict[str, Any] = field(default_factory=dict)
    positive_label: str = "PNEUMONIA"
    threshold: float = 0.5
    temperature: float = 1.0
    precision: str = "float32"  # inference precision: "float32", "bfloat16" (autocast) or "int8" (modeling.runtime.quantize)
    # Each of these records what it was fitted for ("fitted_for": precision, views, weights, split), and
    # loading refuses one fitted for other settings (modeling.runtime.artifacts); all are written by modeling.training.finalize.
    ood: dict[str, Any] = field(default_factory=dict)  # out-of-distribution detector: file, thresholds, ...
    quantization: dict[str, Any] = field(default_factory=dict)  # int8 calibration: file, calibration_images, ...
    # "Is this a chest X-ray at all?" (modeling.runtime.gate): file, sha256, threshold, how it was set, its sources.
    xray_gate: dict[str, Any] = field(default_factory=dict)
    # Test-time augmentation: views averaged with the image as is, e.g. [{"zoom": 1.1, "degrees": 0.0}].
    tta_views: list[dict[str, float]] = field(default_factory=list)
    # Filled by modeling.training.finalize: how temperature and threshold were chosen and what they gave on
    # validation, plus a thinned validation ROC curve ({"threshold": [...], "sensitivity": [...], ...}).
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def positive_index(self) -> int:
        return self.label_names.index(self.positive_label)

    def to_dict(self) -> dict[str, Any]:
        """timm's Hub config layout, with our inference fields under `inference`."""
        return {
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "label_names": list(self.label_names),
            "model_args": dict(self.model_args),
            "pretrained_cfg": {
                "input_size": [3, self.image_size, self.image_size],
                "interpolation": self.interpolation,
                "mean": list(self.mean),
                "std": list(self.std),
                # Whole image, resized without keeping aspect ratio (as the training images were).
                "crop_pct": 1.0,
                "crop_mode": "squash",
                "num_classes": self.num_classes,
            },
            # transformers' TimmWrapper (pipeline("image-classification")) loads the weights in this dtype; its
            # default, "auto", would follow the bfloat16 they are stored in
            "dtype": "float32",
            "inference": {
                "positive_label": self.positive_label,
                "threshold": self.threshold,
                "temperature": self.temperature,
                "precision": self.precision,
                "tta_views": [dict(view) for view in self.tta_views],
                "ood": self.ood,
                "quantization": self.quantization,
                "xray_gate": self.xray_gate,
                "validation": self.validation,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Validate a timm-layout dict; every problem is named in the error."""
        if not isinstance(data, dict):
            raise ConfigError("config.json must hold a JSON object")
        try:
            pretrained_cfg = data["pretrained_cfg"]
            input_size = pretrained_cfg["input_size"]
            config = cls(
                architecture=str(data["architecture"]),
                label_names=tuple(str(name) for name in data["label_names"]),
                image_size=int(input_size[-1]),
                mean=tuple(float(v) for v in pretrained_cfg["mean"]),
                std=tuple(float(v) for v in pretrained_cfg["std"]),
                interpolation=str(pretrained_cfg.get("interpolation", "bicubic")),
                model_args=dict(data.get("model_args") or {}),
                **_inference_fields(data.get("inference") or {}),
            )
        except KeyError as error:
            raise ConfigError(f"config.json lacks the field {error.args[0]!r}") from None
        except (TypeError, ValueError, IndexError) as error:
            raise ConfigError(f"config.json has a malformed field: {error}") from None
        config.check(declared_num_classes=data.get("num_classes"), input_size=input_size)
        return config

    def check(self, declared_num_classes: Any = None, input_size: Any = None) -> None:
        if declared_num_classes is not None and declared_num_classes != self.num_classes:
            raise ConfigError(
                f"config.json says num_classes={declared_num_classes} but lists "
                f"{self.num_classes} label_names")
        if self.num_classes < 2 or len(set(self.label_names)) != self.num_classes:
            raise ConfigError(f"label_names must be at least two distinct names, got {self.label_names}")
        from timm.data.transforms import str_to_interp_mode  # what the preprocessing resizes with
        try:
            str_to_interp_mode(self.interpolation)
        except KeyError:
            raise ConfigError(f"pretrained_cfg.interpolation {self.interpolation!r} is not a mode timm knows "
                              "(bicubic, bilinear, nearest, ...)") from None
        if self.positive_label not in self.label_names:
            raise ConfigError(f"positive_label {self.positive_label!r} is not one of {self.label_names}")
        if input_size is not None and (len(input_size) != 3 or input_size[1] != input_size[2]):
            raise ConfigError(f"input_size must be [3, N, N], got {input_size}")
        if not 16 <= self.image_size <= 2048:
            raise ConfigError(f"input size {self.image_size} is outside 16..2048")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("mean and std must be three numbers each, std positive")
        if not (0.0 <= self.threshold <= 1.0) or math.isnan(self.threshold):
            raise ConfigError(f"threshold must lie in [0, 1], got {self.threshold}")
        if self.precision not in ("float32", "bfloat16", "int8"):
            raise ConfigError(f"precision must be 'float32', 'bfloat16' or 'int8', got {self.precision!r}")
        if self.precision == "int8" and not self.quantization.get("file"):
            raise ConfigError("precision 'int8' needs an int8 calibration (inference.quantization.file); "
                              "run python -m scripts.finalize MODEL_DIR --data DIR_OR_ID --precision int8")
        if self.xray_gate and not (self.xray_gate.get("file") and isinstance(self.xray_gate.get("threshold"), (int, float))):
            raise ConfigError("inference.xray_gate needs a file and a threshold; run python -m scripts.finalize "
                              "MODEL_DIR --add-xray-gate GATE_DIR")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        for view in self.tta_views:
            if set(view) != {"zoom", "degrees"} or not float(view["zoom"]) > 0:
                raise ConfigError(f"each of tta_views must be {{'zoom': > 0, 'degrees': ...}}, got {view!r}")

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no config.json at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"config.json at {path} is not valid JSON ({error})") from None
        return cls.from_dict(data)


def _inference_fields(inference: dict[str, Any]) -> dict[str, Any]:
    fields = {}
    if "positive_label" in inference:
        fields["positive_label"] = str(inference["positive_label"])
    if "threshold" in inference:
        fields["threshold"] = float(inference["threshold"])
    if "temperature" in inference:
        fields["temperature"] = float(inference["temperature"])
    if "precision" in inference:
        fields["precision"] = str(inference["precision"])
    if "ood" in inference:
        fields["ood"] = dict(inference["ood"] or {})
    if "quantization" in inference:
        fields["quantization"] = dict(inference["quantization"] or {})
    if "xray_gate" in inference:
        fields["xray_gate"] = dict(inference["xray_gate"] or {})
    if "tta_views" in inference:
        fields["tta_views"] = [dict(view) for view in inference["tta_views"] or []]
    if "validation" in inference:
        fields["validation"] = dict(inference["validation"])
    return fields
