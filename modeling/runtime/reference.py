"""Reference outputs: the network's own float32 answers on a few fixed images, stored beside the weights, and the
check of a precision path against them.

int8 and bf16 kernels are the CPU's, and differ between CPUs: the same int8 model answers otherwise on an AVX2-only
CPU than on one with AVX512-VNNI (oneDNN's u8 x s8 convolutions without VNNI add pairs of products in 16 bits,
which can saturate; the likely cause, not proven here). At load,
`Predictor.from_pretrained` runs the path config.json deploys on these images (the image alone, a few forward
passes) and compares it with the file; where it disagrees beyond `TOLERANCE`, the next path runs instead
(`FALLBACK`), and where none agrees the folder is refused.

    python -m scripts.reference_outputs MODEL_DIR            # write MODEL_DIR/reference_outputs.safetensors
    python -m scripts.reference_outputs MODEL_DIR --check    # which path this machine runs, and why

The file holds `pixels` (N, 3, S, S, uint8: each image as the network's resize makes it), `probability` (N: the
calibrated P(positive)), `ood_score` (N: the detector's largest scaled stage score) and `gate_logit` (N, with a
chest X-ray gate); its metadata says how they were made and the deployment they were fitted for. An integrator
checks their own code against the same numbers: feed `pixels` through it and compare.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .files import ModelLoadError, load_tensors, save_tensors
from .preprocessing import normalize, read_image, resize_transform, to_rgb

REFERENCE_NAME = "reference_outputs.safetensors"
TOLERANCE = {"probability": 0.02, "ood_score": 0.1, "gate_logit": 0.5}
# what runs instead of a path that disagrees: the next that agrees (bf16 only where it is fast: `runtime_precision`)
FALLBACK = {"int8": ["bfloat16", "float32"], "bfloat16": ["float32"], "float32": []}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass(frozen=True)
class Reference:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]

    @property
    def fitted_for(self) -> dict[str, Any]:
        return json.loads(self.metadata["fitted_for"])

    @property
    def names(self) -> list[str]:
        return json.loads(self.metadata["images"])


def outputs_of(predictor: Any, pixels: torch.Tensor) -> dict[str, np.ndarray]:
    """The predictor's answers on uint8 images (N, 3, S, S), each image alone: what the reference holds."""
    config = predictor.config
    inputs = normalize(pixels.to(predictor.device), config).contiguous(memory_format=torch.channels_last)
    # in the predictor's own batch size: an int8 graph is compiled per batch size, and the app's is for one image
    parts = [predictor.logits_and_features(inputs[i:i + predictor.batch_size], views=False)
             for i in range(0, len(inputs), predictor.batch_size)]
    logits, features = (torch.cat([part[k] for part in parts]) for k in (0, 1))
    outputs = {"probability": predictor.probabilities_from_logits(logits)[:, config.positive_index]}
    detector_features, gate_logits = predictor.split_features(features)
    if predictor.ood is not None:
        outputs["ood_score"] = predictor.ood.score(detector_features)
    if gate_logits is not None:
        outputs["gate_logit"] = gate_logits
    return {name: np.asarray(value, dtype=np.float32) for name, value in outputs.items()}


def write_reference(predictor: Any, images: dict[str, Image.Image], path: Path,
                    fitted_for: dict[str, Any]) -> None:
    """Store `predictor`'s answers (it must run float32) on `images` (name -> RGB image) at `path`."""
    if predictor.precision != "float32":
        raise ValueError("reference outputs are the network's own: make them with a float32 predictor")
    pixels = torch.stack([resize_transform(predictor.config)(to_rgb(image)) for image in images.values()])
    save_tensors({"pixels": pixels, **outputs_of(predictor, pixels)}, path, {
        "made_with": "float32, each image alone (no test-time views), calibrated", "images": json.dumps(list(images)),
        "tolerance": json.dumps(TOLERANCE), "fitted_for": json.dumps(fitted_for, sort_keys=True)})


def example_images() -> dict[str, Image.Image]:
    """The demo's four example X-rays, which every checkout ships."""
    return {path.name: read_image(path) for path in sorted(EXAMPLES.glob("*.jpeg"))}


def load_reference(path: Path) -> Reference:
    tensors, metadata = load_tensors(path, "reference outputs file")
    if not {"pixels", "probability"} <= set(tensors) or not {"fitted_for", "images"} <= set(metadata):
        raise ModelLoadError(f"The reference outputs file {path.name} lacks its images, outputs or record; "
                             f"rewrite it: python -m scripts.reference_outputs MODEL_DIR")
    return Reference(tensors, metadata)


def disagreement(predictor: Any, reference: Reference) -> str | None:
    """None where the predictor reproduces the reference within `TOLERANCE`; else the largest miss, in words."""
    outputs = outputs_of(predictor, reference.tensors["pixels"])
    worst: tuple[float, str] | None = None
    for name, tolerance in TOLERANCE.items():
        if name not in reference.tensors or name not in outputs:
            continue
        differences = np.abs(outputs[name] - reference.tensors[name].numpy())
        index = int(differences.argmax())
        if differences[index] > tolerance and (worst is None or differences[index] / tolerance > worst[0]):
            worst = (differences[index] / tolerance,
                     f"{name.replace('_', ' ')} off by {differences[index]:.3f} on {reference.names[index]} "
                     f"(tolerance {tolerance})")
    return None if worst is None else worst[1]
