"""int8 inference on CPUs: static post-training quantization of `forward_with_features`.

torchao's PT2E flow with its `X86InductorQuantizer`: the network is exported, observers measure
the activation ranges on training images, and Inductor compiles the quantized graph (with
freezing) into oneDNN int8 kernels (VNNI): several times faster than fp32 at batch 1.

Calibration runs once, in `python -m scripts.finalize ... --precision int8`, and its result, the
observers' statistics (no images, no code), is saved beside the weights as
`int8-calibration.safetensors`. An exported graph has a fixed batch size, so `Int8Forward`
exports, quantizes and compiles once per batch size it meets (a few seconds each). With a
`package_dir`, each compiled graph is also stored there as an AOTInductor package (`.pt2`, a
shared library for this CPU and this torch) under a name that hashes everything it was built
from, and the next process loads it instead of compiling: the demo's cold start. The folder is
a local compile cache like Inductor's own, written by this program only; it is never shipped.
The int8 kernels are the CPU's (oneDNN); `modeling.runtime.inference` decides where this runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from importlib.metadata import version
from operator import attrgetter
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .files import ModelLoadError, load_tensors, save_tensors

CALIBRATION_NAME = "int8-calibration.safetensors"


class Int8CalibrationError(ModelLoadError):
    """The saved int8 calibration does not fit the network (re-run `python -m scripts.finalize`)."""


class _WithFeatures(nn.Module):
    """`forward_with_features` as a module's forward, which is what torch.export takes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_features(pixel_values)


def _torchao():
    """torchao's PT2E entry points, imported when a graph is quantized, not when a compiled package is loaded (a
    second of the demo's start)."""
    pytree_log = logging.getLogger("torch.utils._pytree")
    level, pytree_log.level = pytree_log.level, logging.ERROR  # torchao 0.18 warns about its enums on import
    try:
        from torchao.quantization.pt2e import quantize_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer
    finally:
        pytree_log.setLevel(level)
    return quantize_pt2e, x86_inductor_quantizer


def prepare(model: nn.Module, batch_size: int) -> torch.fx.GraphModule:
    """The exported network at `batch_size` with observers in place (fp32, eval mode)."""
    quantize_pt2e, x86 = _torchao()
    size = model.config.image_size
    example = torch.zeros(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        graph = torch.export.export(_WithFeatures(model).eval(), (example,)).module()
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    return quantize_pt2e.prepare_pt2e(graph, quantizer)


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


def save_calibration(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    save_tensors(state, path, {"quantizer": "torchao X86InductorQuantizer, default config", **metadata})


def load_calibration(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(observer statistics, the file's metadata)."""
    return load_tensors(path, "int8 calibration")


def quantized(model: nn.Module, calibration: dict[str, torch.Tensor], batch_size: int) -> torch.fx.GraphModule:
    """The int8 graph at `batch_size` with the saved activation ranges (not yet compiled)."""
    prepared = prepare(model, batch_size)
    expected = set(observer_state(prepared))
    if expected != set(calibration):
        raise Int8CalibrationError(
            f"The int8 calibration has {len(calibration)} observer tensors, the exported network {len(expected)} "
            "(another torch/torchao version?); re-run `python -m scripts.finalize MODEL_DIR --data ... --precision int8`.")
    prepared.load_state_dict(calibration, strict=False)
    for name, weight in _observers(prepared, of_weights=True).items():  # the weights as they are now
        getattr(prepared, name)(attrgetter(weight.target)(prepared))
    return _torchao()[0].convert_pt2e(prepared)


def tensors_identity(model: nn.Module, calibration: dict[str, torch.Tensor]) -> str:
    """A hash of the weights and the calibration themselves (a loaded model folder has cheaper ones: its files')."""
    digest = hashlib.sha256()
    for tensors in (model.state_dict(), calibration):
        for name in sorted(tensors):
            digest.update(name.encode())
            digest.update(tensors[name].detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def package_key(model: nn.Module, identity: str, batch_size: int) -> str:
    """A name for the compiled graph that changes with anything it was built from: the weights and the calibration
    (`identity`), the batch size, the library versions and the CPU's instruction set."""
    digest = hashlib.sha256(identity.encode())
    digest.update(json.dumps({"batch": batch_size, "size": model.config.image_size, "torch": torch.__version__,
                              "torchao": version("torchao"), "cpu": torch.backends.cpu.get_cpu_capability()},
                             sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _compiled_package(graph: torch.fx.GraphModule, example: torch.Tensor, path: Path) -> Callable:
    """Compile `graph` ahead of time into an AOTInductor package at `path` (atomically), then load it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
    os.close(handle)
    try:
        torch._inductor.aoti_compile_and_package(torch.export.export(graph, (example,)), package_path=tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return torch._inductor.aoti_load_package(str(path))


class Int8Forward:
    """Called like `forward_with_features`, run in int8: one compiled graph per batch size (from `package_dir`,
    where given, when an earlier process compiled it)."""

    def __init__(self, model: nn.Module, calibration: dict[str, torch.Tensor], package_dir: Path | None = None,
                 identity: str | None = None):
        """`identity`: what names these weights and this calibration (default: a hash of the tensors)."""
        self.model = model
        self.calibration = calibration
        self.package_dir = Path(package_dir) if package_dir is not None else None
        self.identity = identity
        self.compiled: dict[int, Callable] = {}

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(pixel_values)
        # int8 graphs are built and run outside any bf16 autocast the caller is in. Freezing is set through
        # the config rather than torch.compile(options=...), with which Inductor cannot constant-fold
        # the int8 weight packing (torch 2.15); compiling happens at the first call, hence the call inside.
        with torch.no_grad(), torch.autocast(pixel_values.device.type, enabled=False), \
                torch._inductor.config.patch(freezing=True):
            pixels = pixel_values.float().contiguous(memory_format=torch.channels_last)
            if n not in self.compiled:
                self.compiled[n] = self._build(n, pixels)
            return self.compiled[n](pixels)

    def _build(self, n: int, example: torch.Tensor) -> Callable:
        if self.package_dir is None:
            return torch.compile(quantized(self.model, self.calibration, n))
        self.identity = self.identity or tensors_identity(self.model, self.calibration)
        path = self.package_dir / f"int8-{package_key(self.model, self.identity, n)}.pt2"
        if path.exists():
            try:
                return torch._inductor.aoti_load_package(str(path))
            except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt, whatever the loader raises
                path.unlink(missing_ok=True)
        return _compiled_package(quantized(self.model, self.calibration, n), example, path)
