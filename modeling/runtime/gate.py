""""Is this a chest X-ray at all?": a small network that refuses photos, documents and other images.

The feature-density detector (`modeling.runtime.ood`) reads features of the pneumonia network, which has
only ever seen chest X-rays: it can tell an adult's X-ray from a child's, but not a grey photo from
a changed X-ray. This gate learnt what is not an X-ray (outlier exposure, Hendrycks et al. 2019):
a timm ResNet-10-T trained from scratch on the training X-rays against photographs, artwork,
documents and patterns (`modeling.gate_training.train`), all under the same augmentation.

It reads the pneumonia network's own input, downscaled to `GATE_SIZE`, so every path (the app,
`predict.py`, `evaluate.py`) judges exactly what the network sees. Its output is a logit of "a chest
X-ray"; below the threshold in config.json (`inference.xray_gate`, set by `modeling.gate_training.train` and
copied there by `modeling.training.finalize`), an image is no chest X-ray and gets no assessment.
`xray_gate.safetensors` holds the weights (bf16), the architecture and what it was fitted for (the
training split whose X-rays it learnt), and is loaded strictly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .files import ModelLoadError, file_sha256, load_tensors, save_tensors

GATE_FILE = "xray_gate.safetensors"
# written beside it by modeling.gate_training.train, and copied into a model folder with it: every negative source image's
# fingerprint, and how the gate was trained and what it did on held-out images
GATE_SOURCES_FILE, GATE_REPORT_FILE = "xray_gate_sources.json", "gate_report.json"
GATE_ARCHITECTURE = "resnet10t"
GATE_SIZE = 112
GATE_MEAN, GATE_STD = 0.5, 0.25  # grey levels in [0, 1] -> about [-2, 2]
RETRAIN = "python -m scripts.train_xray_gate --help, then python -m scripts.finalize MODEL_DIR --add-xray-gate GATE_DIR"


class XrayGate(nn.Module):
    """[0, 1] RGB images (N, 3, H, W), any size -> the logit of "a chest X-ray" (N,)."""

    def __init__(self, architecture: str = GATE_ARCHITECTURE, size: int = GATE_SIZE):
        super().__init__()
        self.architecture, self.size = architecture, size
        self.backbone = timm.create_model(architecture, num_classes=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-1] != self.size or pixels.shape[-2] != self.size:
            pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear", antialias=True,
                                   align_corners=False)
        pixels = ((pixels - GATE_MEAN) / GATE_STD).contiguous(memory_format=torch.channels_last)
        return self.backbone(pixels)[:, 0]

    def save(self, path: Path, fitted_for: dict[str, Any]) -> None:
        """bf16 weights (its threshold is set on the same bf16 weights, `modeling.gate_training.train`)."""
        state = {name: (t.to(torch.bfloat16) if t.is_floating_point() else t)
                 for name, t in self.backbone.state_dict().items()}
        save_tensors(state, path, {"architecture": self.architecture, "size": str(self.size),
                                   "fitted_for": json.dumps(fitted_for, sort_keys=True)})

    @classmethod
    def load(cls, path: str | Path) -> tuple["XrayGate", dict[str, str]]:
        """(gate in eval mode, the file's metadata); a file that does not fit its own architecture is refused."""
        tensors, metadata = load_tensors(path, "chest X-ray gate")
        try:
            gate = cls(metadata["architecture"], int(metadata["size"]))
        except (KeyError, ValueError, RuntimeError) as error:
            raise ModelLoadError(f"The chest X-ray gate {Path(path).name} does not describe its network ({error}); "
                                 f"retrain it: {RETRAIN}") from None
        expected = gate.backbone.state_dict()
        if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
            raise ModelLoadError(f"The weights in {Path(path).name} do not match a {gate.architecture} gate; "
                                 f"retrain it: {RETRAIN}")
        gate.backbone.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
        return gate.eval(), metadata


def load_deployed(folder: Path, settings: dict[str, Any], split_sha256: str | None) -> XrayGate:
    """The gate config.json's `xray_gate` names, refused unless it is the very file whose threshold config.json holds
    (sha256) and it learnt the X-rays of this model's own training split (its validation X-rays set the threshold,
    so they must be the model's validation X-rays too)."""
    path = Path(folder) / settings["file"]
    if not path.is_file():
        raise ModelLoadError(f"The model folder lacks its chest X-ray gate {settings['file']}; download the folder "
                             f"again or retrain the gate: {RETRAIN}")
    if file_sha256(path) != settings.get("sha256"):
        raise ModelLoadError(f"The chest X-ray gate {settings['file']} is not the file whose threshold config.json "
                             f"holds; install it again: {RETRAIN}")
    gate, metadata = XrayGate.load(path)
    try:
        recorded = json.loads(metadata["fitted_for"]).get("split_sha256")
    except (KeyError, json.JSONDecodeError, AttributeError):
        recorded = None
    if not recorded or (split_sha256 and recorded != split_sha256):
        raise ModelLoadError(f"The chest X-ray gate {settings['file']} was fitted for another model's training split; "
                             f"retrain it on this model's split.json: {RETRAIN}")
    return gate
