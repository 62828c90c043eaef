"""Out-of-distribution warning: "this does not look like a chest X-ray".

The network's penultimate features of the training X-rays are summarised by a principal
subspace (mean, top-k directions and their spreads). An image's score is its whitened
Mahalanobis distance inside that subspace plus its residual distance outside it, both scaled
to about 1 for training images. The threshold is a high quantile of validation scores, so only
validation and train are used. Everything is stored in `ood.safetensors` next to the weights.

    python -m modeling.ood fit MODEL_DIR --data DIR_OR_ID [--quantile 0.995]
"""
from __future__ import annotations

import argparse
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
    threshold: float = float("inf")

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

    def is_outlier(self, features: np.ndarray) -> np.ndarray:
        return self.score(features) > self.threshold

    def save(self, path: Path) -> None:
        tensors = {"mean": self.mean, "components": self.components, "scales": self.scales,
                   "residual_scale": np.array([self.residual_scale]), "threshold": np.array([self.threshold])}
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureDensity":
        t = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
        return cls(t["mean"], t["components"], t["scales"], float(t["residual_scale"][0]), float(t["threshold"][0]))


def fit_detector(train_features: np.ndarray, validation_features: np.ndarray, quantile: float,
                 components: int = 64) -> FeatureDensity:
    """Fit on train features; the threshold is the `quantile` of validation scores."""
    density = FeatureDensity.fit(train_features, components)
    density.threshold = float(np.quantile(density.score(validation_features), quantile))
    return density


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

    def features(side: str) -> np.ndarray:
        return predict_saved_split(model, args.data, args.model_dir / "split.json", side, with_features=True)[3]

    model.ood = fit_detector(features("train"), features("validation"), args.quantile, args.components)
    model.config.ood = {"file": OOD_FILE, "quantile": args.quantile, "components": len(model.ood.scales),
                        "threshold": model.ood.threshold}
    model.save_model_files(args.model_dir)
    print(f"wrote {args.model_dir / OOD_FILE}: threshold {model.ood.threshold:.3f} "
          f"(validation quantile {args.quantile})")


if __name__ == "__main__":
    main()
