"""The classifier: a timm backbone with a two-class head, saved and loaded the Hugging Face way.

A saved model folder holds `model.safetensors` (the timm backbone's own state dict, so timm's
`hf-hub:` / `local-dir:` loaders read it too) and `config.json` (see `modeling.config`).
Nothing is ever unpickled, and loading is strict: every problem ends in `ModelLoadError`.
"""
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import timm
import torch
from huggingface_hub import ModelHubMixin, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ConfigError, ModelConfig
from .views import normalized_views
from .ood import StagedDetector

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class ModelLoadError(RuntimeError):
    """A model folder or Hub repo could not be loaded; the message names the problem."""


def create_backbone(config: ModelConfig, pretrained: bool = False) -> nn.Module:
    """The timm network described by `config`, optionally initialised from ImageNet weights."""
    try:
        return timm.create_model(config.architecture, pretrained=pretrained,
                                 num_classes=config.num_classes, **config.model_args)
    except RuntimeError as error:
        raise ModelLoadError(f"timm cannot build {config.architecture!r}: {error}") from None
    except Exception as error:  # noqa: BLE001 - network failures surface as many types
        if pretrained:
            raise ModelLoadError(
                "ImageNet weights could not be downloaded from the Hugging Face Hub "
                f"({type(error).__name__}); connect to the internet or pass --no-pretrained.") from None
        raise


class PneumoniaClassifier(
    nn.Module,
    ModelHubMixin,
    library_name="timm",
    license="cc-by-4.0",
    pipeline_tag="image-classification",
    tags=["medical-imaging", "chest-x-ray", "pneumonia", "image-classification", "timm"],
    repo_url="https://github.com/pneumonia-xray/pneumonia-xray",
):
    """`PneumoniaClassifier.from_pretrained("weights/pneumonia-resnet50")` or a Hub id."""

    # `config` is typed as a Union on purpose: huggingface_hub then hands us config.json as a dict
    # untouched, and `ModelConfig.from_dict` validates all of it (the mixin's own dataclass
    # decoding would silently drop timm's nested fields).
    def __init__(self, config: Union[ModelConfig, dict], pretrained: bool = False):
        super().__init__()
        self.config = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
        self.backbone = create_backbone(self.config, pretrained=pretrained)
        self.ood: Optional[StagedDetector] = None  # loaded with the weights when the folder has one
        self.int8_calibration: Optional[dict[str, torch.Tensor]] = None  # likewise (modeling.quantize)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values)

    def _intermediate_stages(self) -> list[int]:
        """timm feature_info indices of the two stages before the last (layer2 and layer3 of a ResNet)."""
        count = len(self.backbone.feature_info)
        return [count - 3, count - 2]

    def feature_stages(self) -> list[str]:
        """The stages whose average-pooled outputs make the OOD features (the last is the classifier's input)."""
        return [self.backbone.feature_info[i]["module"] for i in self._intermediate_stages()] + ["pre_logits"]

    def feature_sizes(self) -> list[int]:
        return [self.backbone.feature_info[i]["num_chs"] for i in self._intermediate_stages()] + [
            self.backbone.num_features]

    def forward_with_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features (N, sum(feature_sizes()))): one pass serving both the answer and the OOD check."""
        final, intermediates = self.backbone.forward_intermediates(pixel_values, indices=self._intermediate_stages())
        pre_logits = self.backbone.forward_head(final, pre_logits=True)
        features = torch.cat([stage.mean(dim=(2, 3)) for stage in intermediates] + [pre_logits], dim=1)
        return self.backbone.get_classifier()(pre_logits), features

    def forward_views(self, pixel_values: torch.Tensor,
                      forward: Optional[Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits averaged over the image as is and config.tta_views, OOD features of the image as is).
        `forward` replaces `forward_with_features` (a compiled copy of it, say)."""
        n = len(pixel_values)
        logits, features = (forward or self.forward_with_features)(
            normalized_views(pixel_values, self.config.tta_views, self.config))
        return logits.float().view(-1, n, logits.shape[-1]).mean(0), features[:n]

    @torch.no_grad()
    def predict(self, pixel_values: torch.Tensor,
                forward: Optional[Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(calibrated class probabilities (N, C), OOD features (N, D)) in the configured precision.
        `forward` replaces `forward_with_features` (a compiled copy of it, say)."""
        with self.autocast(pixel_values.device.type):
            logits, features = self.forward_views(pixel_values, forward)
        return torch.softmax(logits.float() / self.config.temperature, dim=-1), features.float()

    def looks_like_training_data(self, features: torch.Tensor) -> np.ndarray:
        """True where the features are close to the training X-rays (always True without a detector)."""
        if self.ood is None:
            return np.ones(len(features), dtype=bool)
        return ~self.ood.is_outlier(features.float().cpu().numpy())

    def autocast(self, device_type: str = "cpu") -> torch.autocast:
        """The precision of the eager network as config.json asks for it: bf16 autocast, or plain fp32.
        An int8 model's eager paths (Grad-CAM, training-time validation) run in bf16."""
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.config.precision in ("bfloat16", "int8"))

    def inference_forward(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """What computes (logits, features) for inference: the int8 graphs where config.json asks for int8
        (see modeling.quantize; they are frozen with the weights of their first call), otherwise
        `forward_with_features`."""
        if self.config.precision == "int8":
            from .quantize import Int8Forward
            cached = getattr(self, "_int8_forward", None)
            if cached is None or cached.calibration is not self.int8_calibration:
                self._int8_forward = Int8Forward(self, self.int8_calibration)  # keeps its compiled graphs
            return self._int8_forward
        return self.forward_with_features

    def save_model_files(self, directory: Union[str, Path]) -> None:
        """Weights, detector and config.json only (`save_pretrained` also writes a generic card)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_weights(self.backbone, directory / WEIGHTS_NAME)
        if self.ood is not None:
            self.ood.save(directory / self.config.ood["file"])
        if self.int8_calibration is not None:
            from .quantize import save_calibration
            save_calibration(self.int8_calibration, directory / self.config.quantization["file"])
        self.config.save(directory / CONFIG_NAME)

    def _save_pretrained(self, save_directory: Path) -> None:
        self.save_model_files(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, Path], **kwargs: Any) -> "PneumoniaClassifier":
        """Load from a local folder or a Hub repo id (`revision=`, `cache_dir=`, `token=` ...)."""
        source = str(pretrained_model_name_or_path)
        if not os.path.isdir(source) and _looks_like_path(source):
            raise ModelLoadError(f"No model folder at {source}.")
        try:
            model = super().from_pretrained(source, **kwargs)
        except ConfigError as error:
            raise ModelLoadError(f"Invalid config.json in {source}: {error}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelLoadError(f"config.json in {source} is not valid JSON ({error}).") from None
        except (OfflineModeIsEnabled, LocalEntryNotFoundError):
            raise ModelLoadError(
                f"Model {source!r} is not in the local Hugging Face cache and the Hub cannot be reached; "
                "connect to the internet, or pass a local model folder.") from None
        except HfHubHTTPError as error:
            raise ModelLoadError(f"The Hugging Face Hub refused {source!r} ({error.__class__.__name__}); "
                                 "check the repo id, revision and your token.") from None
        return model.eval()

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: Optional[str], cache_dir: Any, force_download: bool,
                         local_files_only: bool, token: Any, config: Optional[dict] = None,
                         **model_kwargs: Any) -> "PneumoniaClassifier":
        if config is None:
            raise ModelLoadError(f"{model_id} has no config.json.")
        if os.path.isdir(model_id):
            weights_file = os.path.join(model_id, WEIGHTS_NAME)
            if not os.path.exists(weights_file):
                raise ModelLoadError(f"{model_id} has no {WEIGHTS_NAME} (only safetensors weights are loaded).")
        else:
            weights_file = hf_hub_download(repo_id=model_id, filename=WEIGHTS_NAME, revision=revision,
                                           cache_dir=cache_dir, force_download=force_download,
                                           local_files_only=local_files_only, token=token)
        model = cls(config, pretrained=False)
        load_weights(model.backbone, weights_file)
        if model.config.ood.get("file"):
            model.ood = _load_ood(model_id, model.config.ood["file"], revision=revision, cache_dir=cache_dir,
                                  force_download=force_download, local_files_only=local_files_only, token=token)
        if model.config.quantization.get("file"):
            model.int8_calibration = _load_int8_calibration(
                model_id, model.config.quantization["file"], revision=revision, cache_dir=cache_dir,
                force_download=force_download, local_files_only=local_files_only, token=token)
        return model


def _model_file(model_id: str, filename: str, **hub_kwargs: Any) -> str:
    """A file of a model folder, or of a Hub repo (downloaded)."""
    return os.path.join(model_id, filename) if os.path.isdir(model_id) else \
        hf_hub_download(repo_id=model_id, filename=filename, **hub_kwargs)


def _load_int8_calibration(model_id: str, filename: str, **hub_kwargs: Any) -> dict[str, torch.Tensor]:
    from .quantize import Int8CalibrationError, load_calibration
    try:
        return load_calibration(_model_file(model_id, filename, **hub_kwargs))
    except Int8CalibrationError as error:
        raise ModelLoadError(str(error)) from None


def _load_ood(model_id: str, filename: str, **hub_kwargs: Any) -> StagedDetector:
    path = _model_file(model_id, filename, **hub_kwargs)
    try:
        return StagedDetector.load(path)
    except (SafetensorError, OSError, KeyError) as error:
        raise ModelLoadError(f"The out-of-distribution detector {path} could not be read ({error}).") from None


def _looks_like_path(source: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else is meant as a local path."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or os.path.exists(source)


def save_weights(module: nn.Module, path: Path) -> None:
    save_tensors(module.state_dict(), path)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, **metadata: str) -> None:
    """safetensors, written to a temporary name and renamed: never a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    save_file(state, str(tmp), metadata={"format": "pt", **metadata})
    os.replace(tmp, path)


def load_weights(module: nn.Module, path: Union[str, Path]) -> None:
    """Strict load: corrupt files, missing or unexpected keys and wrong shapes are all refused."""
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(f"{path} is not a readable safetensors file ({error}).") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
                   for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} tensors of the wrong shape (e.g. {'; '.join(wrong_shape[:3])})")
    if problems:
        raise ModelLoadError(f"The weights in {path} do not match the architecture in config.json: "
                             + ", ".join(problems) + ".")
    module.load_state_dict(state, strict=True)
