"""The inference pipeline: the one owner of device, precision, test-time views, temperature and the OOD gate.

    predictor = Predictor.from_pretrained("weights/pneumonia-resnet50")   # or a Hub id
    analysis = predictor.analyse([load_rgb("xray.png")])
    analysis.probabilities[0], analysis.verdicts[0]
    assessment = predictor.assess_file("image.dcm")   # a file: a DICOM header's checks first (modeling.runtime.dicom)

evaluate.py, the app, the benchmarks, `modeling.training.finalize` and training-time validation all run a
network through `Predictor`, so they compute the same numbers the same way:
- device: a GPU when one is present, otherwise the CPU (`default_device`); inputs follow the model;
- precision: config.json's; int8 is a CPU path (oneDNN kernels), so on a GPU an int8 model runs
  the same weights in bf16 (`runtime_precision`); gradients (Grad-CAM) never run in int8;
- views: config.json's test-time views, logits averaged; temperature: config.json's;
- verdicts: "not a chest X-ray" from the chest X-ray gate (`modeling.runtime.gate`) where config.json names one,
  "unlike the training X-rays" from the feature-density detector (`modeling.runtime.ood`); without a gate the
  detector also decides "not a chest X-ray", at config.json's thresholds.
Artifacts beside the weights are loaded only if they were fitted for what config.json deploys
(`modeling.runtime.artifacts`).
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .artifacts import REFIT
from .deployment import load_deployment
from .explain import grad_cam
from .files import ModelLoadError
from .gate import XrayGate
from .host import cpu_model
from .model import PneumoniaClassifier
from .ood import IN_DISTRIBUTION, NOT_AN_XRAY, UNLIKE_TRAINING, StagedDetector, ood_verdicts
from .preprocessing import ImageSource, eval_transform, normalize, read_checked, to_rgb
from .probability import calibrated_probs
from .quantize import Int8Forward
from .reference import FALLBACK, REFERENCE_NAME, disagreement
from .views import normalized_views

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
THUMBNAIL_SIDE = 16  # the out-of-distribution gate also sees the image's layout: its 16 x 16 x 3 thumbnail

LOG = logging.getLogger(__name__)


def thumbnail_features(pixels: torch.Tensor) -> torch.Tensor:
    """Normalised input (N, 3, H, W) -> (N, 3 * 16 * 16): where the bright and dark regions are, and colour."""
    return torch.nn.functional.adaptive_avg_pool2d(pixels.float(), THUMBNAIL_SIDE).flatten(1)


def default_device() -> torch.device:
    """A GPU (or other accelerator) when one is present, otherwise the CPU."""
    return torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """What a run's hours were spent on: the GPU's name, or the CPU's model and its cores (hours differ several-fold
    between CPUs)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{os.cpu_count()}-core {cpu_model()} CPU" if device.type == "cpu" else device.type


def deployment_device(precision: str) -> torch.device:
    """Where a model deployed at `precision` runs: int8 kernels are the CPU's, the rest runs fastest on an
    accelerator when there is one."""
    return torch.device("cpu") if precision == "int8" else default_device()


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 runs faster than fp32 on `device`. On a CPU only where oneDNN has bf16 kernels (AVX512 or AMX):
    elsewhere (an AVX2 CPU) PyTorch emulates bf16, several times slower than fp32."""
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return device.type != "cuda" or torch.cuda.is_bf16_supported()


def runtime_precision(precision: str, device: torch.device) -> str:
    """What actually runs: config.json's precision, except that int8 kernels exist only on the CPU (a GPU runs
    bf16), and that bf16 runs as fp32 where bf16 is slower (`fast_bf16`): the same weights, within bf16's
    rounding of the same probabilities."""
    if precision == "int8" and device.type != "cpu":
        precision = "bfloat16"
    return "float32" if precision == "bfloat16" and not fast_bf16(device) else precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The eager network's precision context: bf16 (or fp16) autocast, or plain fp32. An int8 model's eager
    paths (Grad-CAM) run in bf16 where bf16 is fast, else fp32."""
    dtype = AUTOCAST_DTYPES.get(runtime_precision("bfloat16", device) if precision == "int8" else precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


@dataclass
class Analysis:
    probabilities: np.ndarray  # (N, C), calibrated
    verdicts: np.ndarray  # (N,): one of modeling.runtime.ood.VERDICTS

    @property
    def in_distribution(self) -> np.ndarray:
        return self.verdicts == IN_DISTRIBUTION


@dataclass
class FileAssessment:
    probability: Optional[float]  # calibrated P(pneumonia); None where the image was refused or is not a chest X-ray
    verdict: str  # one of modeling.runtime.ood.VERDICTS or modeling.runtime.dicom.HEADER_VERDICTS
    reason: str = ""  # why the header refused it
    warnings: tuple[str, ...] = ()  # the DICOM header's
    image: Optional[Image.Image] = None  # the decoded image, where one was decoded


class Predictor:
    """A network deployed as config.json describes it, on one device."""

    def __init__(self, model: PneumoniaClassifier, *, ood: Optional[StagedDetector] = None,
                 xray_gate: Optional[XrayGate] = None, int8_calibration: Optional[dict[str, torch.Tensor]] = None,
                 device: Optional[torch.device | str] = None,
                 precision: Optional[str] = None, views: Optional[list[dict[str, float]]] = None, compile: bool = False,
                 int8_package_dir: Optional[Path] = None, int8_identity: Optional[str] = None):
        """`precision` and `views` override config.json's (training-time validation runs in the training precision,
        the image alone).
        `compile=True`: torch.compile with freezing (batch norm folded, weights pre-packed); the first call of
        each batch size compiles (about a minute on 2 cores). An int8 model is always compiled, a few seconds
        per batch size; with `int8_package_dir` its compiled graphs are kept there and loaded by the next process
        (`modeling.runtime.quantize`), which makes a server's cold start seconds shorter after its first."""
        self.config = model.config
        self.device = torch.device(device) if device is not None else default_device()
        self.precision = runtime_precision(precision or self.config.precision, self.device)
        self.views = list(self.config.tta_views if views is None else views)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.ood = ood
        self.xray_gate = xray_gate.to(self.device, memory_format=torch.channels_last).eval() if xray_gate else None
        if xray_gate is not None and not self.config.xray_gate.get("file"):
            raise ValueError("a chest X-ray gate needs its threshold in config.json (inference.xray_gate)")
        # the gate reads the network's input as grey levels in [0, 1]: normalisation undone, once per image
        self._input_mean, self._input_std = (torch.tensor(v, device=self.device).view(1, 3, 1, 1)
                                             for v in (self.config.mean, self.config.std))
        self.transform = eval_transform(self.config)
        if self.precision == "int8":
            if int8_calibration is None:
                raise ValueError("an int8 model needs its int8 calibration")
            self.forward: Callable = Int8Forward(self.model, int8_calibration, package_dir=int8_package_dir,
                                                 identity=int8_identity)
        else:
            self.forward = self.model.forward_with_features
            if compile:
                self.forward = torch.compile(self.forward, options={"freezing": True})
        # int8 graphs are compiled per batch size and gain little from batching on a CPU: one image at a time
        # keeps to the one graph the app compiles at start
        self.batch_size = 1 if self.precision == "int8" else 16
        self.reference_check = "not checked (built directly, not from a model folder)"

    @classmethod
    def from_pretrained(cls, source: str | Path, *, device: Optional[torch.device | str] = None, compile: bool = False,
                        int8_package_dir: Optional[Path] = None, precision: Optional[str] = None,
                        check_reference: bool = True, **hub_kwargs: Any) -> "Predictor":
        """A model folder or Hub id (`revision=`, ...) with the artifacts beside its weights, each checked against
        what config.json deploys (ModelLoadError, naming the command that refits it, where one does not fit).
        The precision that runs is config.json's where it reproduces the folder's reference outputs on this machine
        (`modeling.runtime.reference`), else the next that does, with one logged sentence; `reference_check` says which.
        `precision` forces one (then nothing is checked)."""
        checked = precision is None and check_reference
        parts = load_deployment(source, reference=checked, **hub_kwargs)
        def build(path: Optional[str]) -> "Predictor":
            return cls(parts.model, ood=parts.ood, xray_gate=parts.xray_gate, int8_calibration=parts.int8_calibration,
                       device=device, compile=compile, precision=path, int8_package_dir=int8_package_dir,
                       int8_identity=parts.int8_identity)

        predictor = build(precision)
        if parts.ood is not None and parts.ood.sizes != predictor.feature_sizes():
            raise ModelLoadError(f"The out-of-distribution detector reads feature stages of widths {parts.ood.sizes}, "
                                 f"this version computes {predictor.feature_sizes()}; refit it: {REFIT}")
        if not checked:
            predictor.reference_check = "not checked (precision set by the caller)"
            return predictor
        if predictor.device.type == "meta":
            predictor.reference_check = "not checked: the meta device computes shapes, not numbers"
            return predictor
        if parts.reference is None:
            predictor.reference_check = f"not checked: the folder has no {REFERENCE_NAME}"
            LOG.warning("The model folder has no %s: %s runs unchecked against the network's own outputs.",
                        REFERENCE_NAME, predictor.precision)
            return predictor
        reference = parts.reference
        misses: dict[str, str] = {}
        for path in [predictor.precision, *FALLBACK[predictor.precision]]:
            candidate = predictor if path == predictor.precision else build(path)
            if candidate.precision in misses:  # bf16 runs as fp32 where bf16 is slow: tried already
                continue
            missed = disagreement(candidate, reference)
            if missed is None:
                candidate.reference_check = (f"{candidate.precision} reproduces the reference outputs" if not misses else
                                             f"{', '.join(misses)} disagreed with the reference outputs on this machine "
                                             f"({'; '.join(misses.values())}), so {candidate.precision} runs")
                if misses:
                    LOG.warning("%s disagrees with the network's reference outputs on this machine (%s); running %s "
                                "instead, which reproduces them, at %s's speed.", ", ".join(misses),
                                "; ".join(misses.values()), candidate.precision, candidate.precision)
                return candidate
            misses[candidate.precision] = missed
        raise ModelLoadError("No precision reproduces the model folder's reference outputs on this machine ("
                             + "; ".join(f"{path}: {missed}" for path, missed in misses.items())
                             + "): its reference file or weights are damaged, or this machine computes them wrongly.")

    # --- tensors in, numbers out

    def tensor(self, image: Image.Image) -> torch.Tensor:
        """Any PIL image -> normalised (1, 3, S, S) network input on the predictor's device."""
        pixels = self.transform(to_rgb(image)).unsqueeze(0)
        return pixels.to(self.device).contiguous(memory_format=torch.channels_last)

    def feature_sizes(self) -> list[int]:
        """The widths of the OOD feature stages: the network's (`PneumoniaClassifier.feature_sizes`), then the
        thumbnail's."""
        return self.model.feature_sizes() + [3 * THUMBNAIL_SIDE ** 2]

    def feature_stages(self) -> list[str]:
        return self.model.feature_stages() + [f"thumbnail {THUMBNAIL_SIDE}x{THUMBNAIL_SIDE}"]

    @torch.no_grad()
    def logits_and_features(self, pixels: torch.Tensor, views: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (or uint8) batch -> (logits averaged over the image as is and the test-time views (N, C),
        OOD features of the image as is (N, D): the network's stages, the thumbnail and, with a chest X-ray gate,
        its logit last (`split_features`)), float32, on the predictor's device. `views=False`: the image as is
        only (its features are the same)."""
        pixels = pixels.to(self.device)
        if pixels.dtype == torch.uint8:
            pixels = normalize(pixels, self.config)
        n = len(pixels)
        batch = normalized_views(pixels, self.views if views else [], self.config)
        with autocast(self.precision, self.device):
            logits, features = self.forward(batch.contiguous(memory_format=torch.channels_last))
        features = [features[:n].float(), thumbnail_features(pixels)]
        if self.xray_gate is not None:
            features.append(self.xray_gate_logits(pixels).unsqueeze(1))
        features = torch.cat(features, dim=1)
        return logits.float().view(-1, n, logits.shape[-1]).mean(0), features

    @torch.no_grad()
    def xray_gate_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """The gate's logits of "a chest X-ray" (N,), float32, for a normalised batch of network input (the gate reads
        it as grey levels in [0, 1]); "not a chest X-ray" below config.json's `xray_gate` threshold."""
        return self.xray_gate(pixels.to(self.device).float() * self._input_std + self._input_mean).float()

    def probabilities_from_logits(self, logits: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(logits, torch.Tensor):
            logits = logits.cpu().numpy()
        return calibrated_probs(logits, self.config.temperature)

    def split_features(self, features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """`logits_and_features`' features -> (the detector's features (N, D), the gate's logits (N,) or None)."""
        if isinstance(features, torch.Tensor):
            features = features.cpu().numpy()
        if self.xray_gate is None:
            return features, None
        return features[:, :-1], features[:, -1]

    def verdicts(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """One of modeling.runtime.ood.VERDICTS per image (all in distribution without a detector or gate). With a gate, the
        gate alone says "not a chest X-ray" and the detector at most "unlike the training X-rays"."""
        features, gate_logits = self.split_features(features)
        verdicts = np.full(len(features), IN_DISTRIBUTION, dtype=object)
        if self.ood is not None:
            verdicts = ood_verdicts(self.ood.stage_scores(features), self.config.ood)
        if gate_logits is not None:
            verdicts[verdicts == NOT_AN_XRAY] = UNLIKE_TRAINING
            verdicts[gate_logits < self.config.xray_gate["threshold"]] = NOT_AN_XRAY
        return verdicts

    # --- images

    def analyse(self, images: Sequence[Image.Image], batch_size: Optional[int] = None) -> Analysis:
        batch_size = batch_size or self.batch_size
        probs, verdicts = [], []
        for start in range(0, len(images), batch_size):
            pixels = torch.cat([self.tensor(image) for image in images[start:start + batch_size]])
            logits, features = self.logits_and_features(pixels)
            probs.append(self.probabilities_from_logits(logits))
            verdicts.append(self.verdicts(features))
        if not probs:
            return Analysis(np.zeros((0, self.config.num_classes)), np.zeros(0, dtype=object))
        return Analysis(np.concatenate(probs), np.concatenate(verdicts))

    def assess_file(self, source: ImageSource) -> "FileAssessment":
        """One file as the worklist and the SR see it: a DICOM header that refuses the image (not a radiograph, not
        a frontal view) gives that verdict and no probability, without decoding a pixel; the header's warnings come
        with any result. Raises ImageLoadError for a file that cannot be read."""
        image, check = read_checked(source)
        warnings = tuple(w.text for w in check.warnings) if check is not None else ()
        if image is None:
            return FileAssessment(None, check.verdict, check.reason, warnings)
        analysis = self.analyse([to_rgb(image)])
        verdict = analysis.verdicts[0]
        probability = None if verdict == NOT_AN_XRAY else float(analysis.probabilities[0, self.config.positive_index])
        return FileAssessment(probability, verdict, "", warnings, image)

    def probabilities(self, images: Sequence[Image.Image], batch_size: Optional[int] = None) -> np.ndarray:
        """Calibrated class probabilities, shape (N, C)."""
        return self.analyse(images, batch_size).probabilities

    def grad_cam(self, image: Image.Image | torch.Tensor, class_index: Optional[int] = None) -> np.ndarray:
        """Grad-CAM heatmap in [0, 1] at the network's input size, for `class_index` (default: the positive
        class), of an image or of its normalised network input (3, S, S), computed on the eager network (int8
        models: in bf16). Safe to call from many threads."""
        index = self.config.positive_index if class_index is None else class_index
        pixels = self.tensor(image) if isinstance(image, Image.Image) else (
            image.unsqueeze(0).to(self.device).contiguous(memory_format=torch.channels_last))
        return grad_cam(self.model, pixels, index, autocast(self.precision, self.device))[0]

    # --- datasets

    @torch.no_grad()
    def predict_loader(self, loader: DataLoader, accelerator: Any = None, desc: str = "predicting",
                       with_features: bool = False, views: bool = True) -> tuple[np.ndarray, ...]:
        """(labels as model class indices, logits (N, C), mean cross-entropy[, OOD features (N, D)]) over a
        loader of {"pixel_values", "label"} batches; with an `accelerator` whose loader is prepared, gathered
        from all its processes."""
        self.model.eval()
        labels, logits, losses, features = [], [], [], []
        show = accelerator is None or accelerator.is_local_main_process
        for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not show):
            batch_logits, batch_features = self.logits_and_features(batch["pixel_values"], views=views)
            batch_labels = batch["label"].to(self.device)
            loss = torch.nn.functional.cross_entropy(batch_logits, batch_labels, reduction="none")
            values = (batch_labels, batch_logits, loss) + ((batch_features,) if with_features else ())
            if accelerator is not None:
                values = accelerator.gather_for_metrics(values)
            for store, value in zip((labels, logits, losses, features), values):
                store.append(value.cpu())
        result = (torch.cat(labels).numpy(), torch.cat(logits).numpy(), float(torch.cat(losses).mean()))
        return result + (torch.cat(features).numpy(),) if with_features else result
