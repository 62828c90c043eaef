"""The network: a timm backbone with a two-class head, saved and loaded the Hugging Face way.

A saved model folder holds `model.safetensors` (the timm backbone's own state dict, so timm's
`hf-hub:` / `local-dir:` loaders read it too) and `config.json` (see `modeling.runtime.config`).
Nothing is ever unpickled, and loading is strict: every problem ends in `ModelLoadError`.
How the network is deployed (device, precision, views, temperature, out-of-distribution gate)
is the inference pipeline's business: `modeling.runtime.inference.Predictor`.
"""
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import timm
import torch
from huggingface_hub import ModelHubMixin
from torch import nn

from .config import ConfigError, ModelConfig
from .files import CONFIG_NAME, WEIGHTS_NAME, ModelLoadError, load_tensors, resolve_model_folder, save_tensors


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

    def forward_with_feature_map(self, pixel_values: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, OOD features (N, sum(feature_sizes())), the last stage's feature map (N, C, h, w)).
        The feature map is what Grad-CAM differentiates against (`modeling.runtime.explain`)."""
        final, intermediates = self.forward_stages(pixel_values)
        logits, features = self.forward_from_stages(final, intermediates)
        return logits, features, final

    def forward_stages(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the last stage's feature map, the intermediate stages' maps): the trunk, up to the head."""
        return self.backbone.forward_intermediates(pixel_values, indices=self._intermediate_stages())

    def forward_from_stages(self, final: torch.Tensor, intermediates: list[torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, OOD features) from `forward_stages`' maps: the head."""
        pre_logits = self.backbone.forward_head(final, pre_logits=True)
        features = torch.cat([stage.mean(dim=(2, 3)) for stage in intermediates] + [pre_logits], dim=1)
        return self.backbone.get_classifier()(pre_logits), features

    def forward_with_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, OOD features): one pass serving both the answer and the out-of-distribution check."""
        logits, features, _ = self.forward_with_feature_map(pixel_values)
        return logits, features

    def save_weights(self, directory: Union[str, Path], weights_dtype: Optional[torch.dtype] = None) -> None:
        """model.safetensors alone. `weights_dtype=torch.bfloat16` halves the download; loading casts back to the
        network's float32."""
        state = self.backbone.state_dict()
        if weights_dtype is not None:
            state = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_tensors(state, Path(directory) / WEIGHTS_NAME)

    def save_model_files(self, directory: Union[str, Path], weights_dtype: Optional[torch.dtype] = None) -> None:
        """Weights and config.json into `directory`, a folder its caller writes whole (`files.folder_written_whole`);
        `save_pretrained` also writes a generic card."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_weights(directory, weights_dtype)
        self.config.save(directory / CONFIG_NAME)

    def _save_pretrained(self, save_directory: Path) -> None:
        self.save_model_files(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, Path], **hub_kwargs: Any) -> "PneumoniaClassifier":
        """Load from a local folder or a Hub repo id (`revision=`, `cache_dir=`, `token=` ...): the whole folder
        of one revision is resolved first, so config.json, the weights and the files beside them agree."""
        return cls.from_folder(resolve_model_folder(pretrained_model_name_or_path, **hub_kwargs),
                               name=pretrained_model_name_or_path)

    @classmethod
    def from_folder(cls, folder: Path, name: Union[str, Path, None] = None) -> "PneumoniaClassifier":
        """The network of a resolved model folder: config.json read once, the weights strictly loaded. `name` is how
        messages call the folder (what the user passed: never a Hub cache path)."""
        name = folder if name is None else name
        try:
            data = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelLoadError(f"{name} has no config.json.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelLoadError(f"config.json in {name} is not valid JSON ({error}).") from None
        try:
            config = ModelConfig.from_dict(data)
        except ConfigError as error:
            raise ModelLoadError(f"Invalid config.json in {name}: {error}") from None
        return cls.from_weights(config, folder / WEIGHTS_NAME)

    @classmethod
    def from_weights(cls, config: Union[ModelConfig, dict], path: Union[str, Path]) -> "PneumoniaClassifier":
        """The network of `config` with the weights in the safetensors file `path`, strictly loaded. It is built on
        the meta device: no random initialisation of weights that are replaced next (a second at start)."""
        with torch.device("meta"):
            model = cls(config, pretrained=False)
        load_weights(model.backbone, path)
        return model.eval()


def load_weights(module: nn.Module, path: Union[str, Path]) -> None:
    """Strict load: corrupt files, missing or unexpected keys and wrong shapes are all refused. The loaded tensors
    take the place of the module's own (which may be on the meta device); weights stored in another float dtype
    (bf16 halves the download) are cast to the module's."""
    if not os.path.exists(path):
        raise ModelLoadError(f"The model folder has no {WEIGHTS_NAME} (only safetensors weights are loaded).")
    state, _ = load_tensors(path, "weights file")
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
        raise ModelLoadError(f"The weights in {Path(path).name} do not match the architecture in config.json: "
                             + ", ".join(problems) + ".")
    state = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
