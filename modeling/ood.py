"""Out-of-distribution warning: "this does not look like a chest X-ray".

The features are the network's average-pooled outputs of several stages (for a ResNet: layer2,
layer3 and the classifier's input; `PneumoniaClassifier.forward_with_features`). Mid-level
stages see texture and contrast, the last one sees content, so a photo or a gradient that
resembles an X-ray at one level rarely does at all of them (Lee et al., NeurIPS 2018, combine
layers the same way).

Per stage, the training X-rays are summarised by a principal subspace (mean, top-k directions
and their spreads); a stage's score is the whitened Mahalanobis distance inside that subspace
plus the residual distance outside it, both about 1 for training images (`FeatureDensity`).
Each stage's score is divided by its own validation quantile, and an image's score is the largest
of these; the threshold is the same quantile of validation scores. So only train and validation
are used. Everything is stored in `ood.safetensors` next to the weights.

    python -m modeling.ood fit MODEL_DIR --data DIR_OR_ID [--quantile 0.995]
"""
from __future__ import annotations

from .runtime import use_tcmalloc

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported (see modeling/runtime.py)

import argparse  # noqa: E402
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

OOD_FILE = "ood.safetensors"


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
    """One `FeatureDensity` per feature stage; `sizes` are the stages' widths, taken from the end of
    the feature vector (a detector fitted on the last stage alone still reads newer, wider features)."""
    stages: list[FeatureDensity]
    sizes: list[int]
    stage_scales: np.ndarray  # each stage's validation quantile
    threshold: float = float("inf")

    def _split(self, features: np.ndarray) -> list[np.ndarray]:
        features = np.asarray(features, dtype=np.float64)
        bounds = np.cumsum([0, *self.sizes]) + features.shape[1] - sum(self.sizes)
        return [features[:, start:end] for start, end in zip(bounds[:-1], bounds[1:])]

    def stage_scores(self, features: np.ndarray) -> np.ndarray:
        """(N, stages) scores, each scaled to its validation quantile."""
        parts = self._split(features)
        return np.stack([stage.score(part) for stage, part in zip(self.stages, parts)], axis=1) / self.stage_scales

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.stage_scores(features).max(axis=1)

    def is_outlier(self, features: np.ndarray) -> np.ndarray:
        return self.score(features) > self.threshold

    def save(self, path: Path) -> None:
        tensors = {"sizes": np.array(self.sizes), "stage_scales": self.stage_scales,
                   "threshold": np.array([self.threshold])}
        for i, stage in enumerate(self.stages):
            tensors |= {f"stage{i}.{name}": value for name, value in stage.tensors().items()}
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "StagedDetector":
        t = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
        if "sizes" not in t:  # a single-stage file (the classifier's input only)
            stage = FeatureDensity.from_tensors(t)
            return cls([stage], [len(stage.mean)], np.ones(1), float(t["threshold"][0]))
        stages = [FeatureDensity.from_tensors({k.split(".", 1)[1]: v for k, v in t.items() if k.startswith(f"stage{i}.")})
                  for i in range(len(t["sizes"]))]
        return cls(stages, [int(n) for n in t["sizes"]], t["stage_scales"], float(t["threshold"][0]))


def fit_detector(train_features: np.ndarray, validation_features: np.ndarray, quantile: float,
                 components: int = 64, sizes: list[int] | None = None) -> StagedDetector:
    """Fit each stage on train features (`sizes`: the stages' widths, default one stage); scale
    each stage and set the threshold at the `quantile` of validation scores."""
    sizes = sizes or [np.shape(train_features)[1]]
    detector = StagedDetector([], sizes, np.ones(len(sizes)))
    detector.stages = [FeatureDensity.fit(part, components) for part in detector._split(train_features)]
    raw = detector.stage_scores(validation_features)
    detector.stage_scales = np.quantile(raw, quantile, axis=0)
    detector.threshold = float(np.quantile(detector.score(validation_features), quantile))
    return detector


def main(argv: list[str] | None = None) -> None:
    from .inference import predict_saved_split
    from .model import PneumoniaClassifier

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit the detector on a model folder's train/validation split")
    fit.add_argument("model_dir", type=Path)
    fit.add_argument("--data", required=True)
    fit.add_argument("--quantile", type=float, default=0.995, help="validation quantile used as threshold")
    fit.add_argument("--components", type=int, default=64)
    args = parser.parse_args(argv)

    model = PneumoniaClassifier.from_pretrained(args.model_dir).to(memory_format=torch.channels_last)
    views, model.config.tta_views = model.config.tta_views, []  # features are of the image as is: one view is enough

    def features(side: str) -> np.ndarray:
        return predict_saved_split(model, args.data, args.model_dir / "split.json", side, with_features=True)[3]

    model.config.tta_views = views
    model.ood = fit_detector(features("train"), features("validation"), args.quantile, args.components,
                             sizes=model.feature_sizes())
    model.config.ood = {"file": OOD_FILE, "quantile": args.quantile, "components": args.components,
                        "stages": model.feature_stages(), "threshold": model.ood.threshold}
    model.save_model_files(args.model_dir)
    print(f"wrote {args.model_dir / OOD_FILE}: threshold {model.ood.threshold:.3f} "
          f"(validation quantile {args.quantile})")


if __name__ == "__main__":
    main()
