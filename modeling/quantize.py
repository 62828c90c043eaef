"""int8 inference on CPUs: static post-training quantization of `forward_with_features`.

torchao's PT2E flow with its `X86InductorQuantizer`: the network is exported, observers measure
the activation ranges on training images, and Inductor compiles the quantized graph (with
freezing) into oneDNN int8 kernels (VNNI): several times faster than fp32 at batch 1.

Calibration runs once and its result, the observers' statistics (no images, no code), is saved
beside the weights as `int8-calibration.safetensors`:

    python -m modeling.quantize MODEL_DIR --data DIR_OR_ID [--images 256]

It does not switch the model to int8; `python -m modeling.calibration MODEL_DIR --data ...
--precision int8` does, fitting temperature and threshold on validation for the int8 outputs.
An exported graph has a fixed batch size, so `Int8Forward` exports, quantizes and compiles once
per batch size it meets (a few seconds each).
"""
from __future__ import annotations

from .runtime import use_tcmalloc

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported (see modeling/runtime.py)

import argparse  # noqa: E402
import logging
from operator import attrgetter
from pathlib import Path
from typing import Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

_pytree_log = logging.getLogger("torch.utils._pytree")
_level, _pytree_log.level = _pytree_log.level, logging.ERROR  # torchao 0.18 warns about its enums on import
try:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)
finally:
    _pytree_log.setLevel(_level)

CALIBRATION_NAME = "int8-calibration.safetensors"


class Int8CalibrationError(RuntimeError):
    """The saved int8 calibration does not fit the network (re-run `python -m modeling.quantize`)."""


class _WithFeatures(nn.Module):
    """`forward_with_features` as a module's forward, which is what torch.export takes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_features(pixel_values)


def prepare(model: nn.Module, batch_size: int) -> torch.fx.GraphModule:
    """The exported network at `batch_size` with observers in place (fp32, eval mode)."""
    size = model.config.image_size
    example = torch.zeros(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        graph = torch.export.export(_WithFeatures(model).eval(), (example,)).module()
    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    return prepare_pt2e(graph, quantizer)


def _observers(prepared: torch.fx.GraphModule, of_weights: bool) -> dict[str, torch.fx.Node]:
    """Observer module name -> its input node: of the weights (parameters) or of the activations."""
    return {node.target: node.args[0] for node in prepared.graph.nodes
            if node.op == "call_module" and str(node.target).startswith("activation_post_process")
            and (getattr(node.args[0], "op", None) == "get_attr") == of_weights}


def observer_state(prepared: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The activation ranges measured so far: the calibration. (Weight ranges come from the weights.)"""
    activations = _observers(prepared, of_weights=False)
    return {name: tensor.detach().clone() for name, tensor in prepared.state_dict().items()
            if name.split(".")[0] in activations}


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Observer statistics over normalised fp32 batches, all of one size."""
    prepared = None
    for pixels in batches:
        prepared = prepared or prepare(model, len(pixels))
        prepared(pixels.float().contiguous(memory_format=torch.channels_last))
    if prepared is None:
        raise ValueError("no calibration batches")
    return observer_state(prepared)


def save_calibration(state: dict[str, torch.Tensor], path: Path) -> None:
    from .model import save_tensors
    save_tensors(state, path, quantizer="torchao X86InductorQuantizer, default config")


def load_calibration(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise Int8CalibrationError(f"{path} is not a readable int8 calibration file ({error}).") from None


def quantized(model: nn.Module, calibration: dict[str, torch.Tensor], batch_size: int) -> torch.fx.GraphModule:
    """The int8 graph at `batch_size` with the saved activation ranges (not yet compiled)."""
    prepared = prepare(model, batch_size)
    expected = set(observer_state(prepared))
    if expected != set(calibration):
        raise Int8CalibrationError(
            f"The int8 calibration has {len(calibration)} observer tensors, the exported network {len(expected)} "
            "(another torch/torchao version?); re-run `python -m modeling.quantize MODEL_DIR --data ...`.")
    prepared.load_state_dict(calibration, strict=False)
    for name, weight in _observers(prepared, of_weights=True).items():  # the weights as they are now
        getattr(prepared, name)(attrgetter(weight.target)(prepared))
    return convert_pt2e(prepared)


class Int8Forward:
    """Called like `forward_with_features`, run in int8: one compiled graph per batch size."""

    def __init__(self, model: nn.Module, calibration: dict[str, torch.Tensor]):
        self.model = model
        self.calibration = calibration
        self.compiled: dict[int, nn.Module] = {}

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if pixel_values.device.type != "cpu":  # the int8 kernels are the CPU's (oneDNN); elsewhere bf16
            with torch.autocast(pixel_values.device.type, dtype=torch.bfloat16):
                return self.model.forward_with_features(pixel_values)
        n = len(pixel_values)
        # int8 graphs are built and run outside any bf16 autocast the caller is in. Freezing is set through
        # the config rather than torch.compile(options=...), with which Inductor cannot constant-fold
        # the int8 weight packing (torch 2.15); compiling happens at the first call, hence the call inside.
        with torch.no_grad(), torch.autocast(pixel_values.device.type, enabled=False), \
                torch._inductor.config.patch(freezing=True):
            if n not in self.compiled:
                self.compiled[n] = torch.compile(quantized(self.model, self.calibration, n))
            return self.compiled[n](pixel_values.float().contiguous(memory_format=torch.channels_last))


def main(argv: list[str] | None = None) -> None:
    from torch.utils.data import DataLoader

    from .views import normalized_views
    from .data import (DecodedImages, decode_once, first, label_mapping, label_names, load_data,
                       saved_split_indices)
    from .model import PneumoniaClassifier
    from .preprocessing import normalize

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=256, help="training images to calibrate on")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    model = PneumoniaClassifier.from_pretrained(args.model_dir)
    config = model.config
    train = load_data(args.data)["train"]
    chosen = saved_split_indices(train, args.model_dir / "split.json", "train")
    generator = torch.Generator().manual_seed(0)
    chosen = [chosen[i] for i in torch.randperm(len(chosen), generator=generator)[:args.images].tolist()]
    decoded = decode_once(train.select(chosen), config, label_mapping(label_names(train), config.label_names))
    loader = DataLoader(DecodedImages(decoded, config.image_size), batch_size=args.batch_size, collate_fn=first,
                        drop_last=True)
    # The network sees every test-time view at inference, so it is calibrated on them too.
    batches = (normalized_views(normalize(batch["pixel_values"], config), config.tta_views, config)
               for batch in loader)
    state = calibrate(model, batches)
    save_calibration(state, args.model_dir / CALIBRATION_NAME)
    config.quantization = {"file": CALIBRATION_NAME, "calibration_images": len(loader) * args.batch_size,
                           "method": "static PTQ, torchao PT2E X86InductorQuantizer (default config)",
                           "source": "training side of split.json"}
    config.save(args.model_dir / "config.json")
    print(f"int8 calibration on {config.quantization['calibration_images']} training images "
          f"({1 + len(config.tta_views)} view(s) each) -> {args.model_dir / CALIBRATION_NAME}")


if __name__ == "__main__":
    main()
