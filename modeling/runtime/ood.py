"""Out-of-distribution warning: is this a chest X-ray like the training ones, another X-ray, or no X-ray?

The features are the network's average-pooled outputs of several stages (for a ResNet: layer2,
layer3 and the classifier's input; `PneumoniaClassifier.forward_with_features`), then the
image's 16x16 thumbnail (`modeling.runtime.inference`). Mid-level stages see texture and contrast, the
thumbnail layout, the network's last stage content, so a photo or a gradient that resembles an
X-ray at one level rarely does at all of them (Lee et al., NeurIPS 2018, combine layers the same
way).

Per stage, the training X-rays are summarised by a principal subspace (mean, top-k directions
and their spreads); a stage's score is the whitened Mahalanobis distance inside that subspace
plus the residual distance outside it, both about 1 for training images (`FeatureDensity`).
`modeling.training.finalize` fits each stage on the training X-rays (`--ood-gate augmented`: also once
under the training augmentation). Each stage's score is divided by its own validation quantile,
so 1 means "as far as the farthest validation X-rays". `ood_verdicts` turns the scaled scores
into one of `VERDICTS` with the thresholds that finalize stores in config.json (only train and
validation are used). The tensors are stored in `ood.safetensors` next to the weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .files import ModelLoadError, load_tensors, save_tensors

OOD_FILE = "ood.safetensors"
IN_DISTRIBUTION, UNLIKE_TRAINING, NOT_AN_XRAY = "chest_xray", "unlike_training_xrays", "not_a_chest_xray"
VERDICTS = (IN_DISTRIBUTION, UNLIKE_TRAINING, NOT_AN_XRAY)
# Fixed before looking at any image outside train and validation: an image counts as no chest X-ray at all when a
# mid-level stage (texture and contrast; with `--ood-gate augmented` also the thumbnail, layout) puts it three times
# as far out as the farthest 0.5% of validation X-rays.
NOT_AN_XRAY_FACTOR = 3.0


@dataclass
class FeatureDensity:
    mean: np.ndarray        # (D,)
    components: np.ndarray  # (k, D) orthonormal directions
    scales: np.ndarray      # (k,) standard deviation along each direction
    residual_scale: float   # mean squared residual of training features

    @classmethod
    def fit(cls, features: np.ndarray, components: int = 64) -> "FeatureDensity":
        features = np.asarray(features, dtype=np.float64)
        mean = features.mean(axis=0)
        _, singular, directions = np.linalg.svd(features - mean, full_matrices=False)
        k = min(components, len(features) - 1, features.shape[1])
        scales = singular[:k] / np.sqrt(len(features) - 1)
        density = cls(mean, directions[:k], np.maximum(scales, 1e-6), residual_scale=1.0)
        density.residual_scale = max(float(density._parts(features)[1].mean()), 1e-12)
        return density

    def _parts(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centred = np.asarray(features, dtype=np.float64) - self.mean
        projected = centred @ self.components.T
        inside = ((projected / self.scales) ** 2).mean(axis=1)
        residual = ((centred - projected @ self.components) ** 2).sum(axis=1)
        return inside, residual

    def score(self, features: np.ndarray) -> np.ndarray:
        inside, residual = self._parts(features)
        return inside + residual / self.residual_scale

    def tensors(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "components": self.components, "scales": self.scales,
                "residual_scale": np.array([self.residual_scale])}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray]) -> "FeatureDensity":
        return cls(t["mean"], t["components"], t["scales"], float(t["residual_scale"][0]))


@dataclass
class StagedDetector:
    """One `FeatureDensity` per feature stage; `sizes` are the stages' widths, in feature-vector order."""
    stages: list[FeatureDensity]
    sizes: list[int]
    stage_scales: np.ndarray  # each stage's validation quantile

    def _split(self, features: np.ndarray) -> list[np.ndarray]:
        features = np.asarray(features, dtype=np.float64)
        if features.shape[1] != sum(self.sizes):
            raise ValueError(f"the detector reads {sum(self.sizes)} features, the network gives {features.shape[1]}")
        bounds = np.cumsum([0, *self.sizes])
        return [features[:, start:end] for start, end in zip(bounds[:-1], bounds[1:])]

    def stage_scores(self, features: np.ndarray) -> np.ndarray:
        """(N, stages) scores, each scaled to its validation quantile."""
        parts = self._split(features)
        return np.stack([stage.score(part) for stage, part in zip(self.stages, parts)], axis=1) / self.stage_scales

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.stage_scores(features).max(axis=1)

    def save(self, path: Path, metadata: dict[str, str]) -> None:
        tensors = {"sizes": np.array(self.sizes), "stage_scales": self.stage_scales}
        for i, stage in enumerate(self.stages):
            tensors |= {f"stage{i}.{name}": value for name, value in stage.tensors().items()}
        save_tensors({k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}, path, metadata)

    @classmethod
    def load(cls, path: str | Path) -> tuple["StagedDetector", dict[str, str]]:
        """(detector, the file's metadata); unreadable or incomplete files are a ModelLoadError."""
        tensors, metadata = load_tensors(path, "out-of-distribution detector")
        t = {k: v.double().numpy() for k, v in tensors.items()}
        try:
            count = len(t["sizes"])
            stages = [FeatureDensity.from_tensors({k.split(".", 1)[1]: v for k, v in t.items()
                                                   if k.startswith(f"stage{i}.")}) for i in range(count)]
            return cls(stages, [int(n) for n in t["sizes"]], t["stage_scales"]), metadata
        except KeyError as error:
            raise ModelLoadError(f"The out-of-distribution detector {Path(path).name} lacks {error}; "
                                 "re-run python -m scripts.finalize.") from None


def fit_detector(train_features: np.ndarray, validation_features: np.ndarray, quantile: float,
                 components: int = 64, sizes: list[int] | None = None) -> tuple[StagedDetector, float]:
    """Fit each stage on train features (`sizes`: the stages' widths, default one stage) and scale each
    stage to the `quantile` of its validation scores. Returns (detector, threshold): the same quantile
    of the validation images' largest scaled score."""
    sizes = sizes or [np.shape(train_features)[1]]
    detector = StagedDetector([], sizes, np.ones(len(sizes)))
    detector.stages = [FeatureDensity.fit(part, components) for part in detector._split(train_features)]
    raw = detector.stage_scores(validation_features)
    detector.stage_scales = np.quantile(raw, quantile, axis=0)
    return detector, float(np.quantile(detector.score(validation_features), quantile))


def ood_verdicts(stage_scores: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """One of `VERDICTS` per image from its scaled stage scores (N, stages) and config.json's `ood` settings:
    beyond `threshold` on any stage the image is unlike the training X-rays; beyond `not_xray_threshold`
    on the stages that see form rather than content (`not_xray_stages`) it is not a chest X-ray at all."""
    stage_scores = np.atleast_2d(stage_scores)
    verdicts = np.full(len(stage_scores), IN_DISTRIBUTION, dtype=object)
    verdicts[stage_scores.max(axis=1) > settings["threshold"]] = UNLIKE_TRAINING
    form = stage_scores[:, settings.get("not_xray_stages", list(range(stage_scores.shape[1])))]
    verdicts[form.max(axis=1) > settings.get("not_xray_threshold", settings["threshold"])] = NOT_AN_XRAY
    return verdicts
