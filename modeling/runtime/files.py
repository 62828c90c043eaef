"""The model folder on disk and on the Hub: atomic writers, strict safetensors reading, one resolver.

A model folder holds `model.safetensors` and `config.json`, and beside them the deployment
artifacts that `modeling.training.finalize` fits (`ood.safetensors`, `int8-calibration.safetensors`),
`split.json` and the logs. `resolve_model_folder` turns a folder or a Hub id into a local folder
with all of them from one Hub revision (one `snapshot_download`), so weights and side files can
never come from different commits. Every failure is a `ModelLoadError` with a one-sentence message.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Union

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
SPLIT_NAME = "split.json"
# a training run's folder: the network it keeps (train.py) and the deployable folder made from it (modeling.training.finalize)
TRAINED_DIR = "trained"
DEPLOYED_DIR = "model"
# what a model repo holds that loading needs (the card, logs and plots are for people)
MODEL_FILE_PATTERNS = [WEIGHTS_NAME, CONFIG_NAME, "*.safetensors", SPLIT_NAME]


class ModelLoadError(RuntimeError):
    """A model folder or Hub repo could not be loaded; the message names the problem."""


@contextlib.contextmanager
def file_written_whole(path: Union[str, Path]) -> Iterator[Path]:
    """A temporary sibling of `path` to write; when the block ends without error it is renamed to `path`, and when
    it fails it is removed: readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Union[str, Path], data: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    with file_written_whole(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def folder_written_whole(path: Union[str, Path]) -> Iterator[Path]:
    """A temporary sibling of `path` to fill; when the block ends without error, it replaces `path` by renames.

    Readers of `path` see the previous complete folder, then (between two renames) none, then the new complete
    one: never a half-written one. A writer that dies leaves only a hidden `.NAME.*.partial` or `.NAME.*.old`
    sibling, which the next writer of the same folder removes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stray in [*path.parent.glob(f".{path.name}.*.partial"), *path.parent.glob(f".{path.name}.*.old")]:
        shutil.rmtree(stray, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = partial.with_suffix(".old")
    if path.exists():
        os.replace(path, old)
    os.replace(partial, path)
    shutil.rmtree(old, ignore_errors=True)


def save_tensors(tensors: Mapping[str, Union[torch.Tensor, np.ndarray]], path: Union[str, Path],
                 metadata: Mapping[str, str] | None = None) -> None:
    """safetensors (torch or numpy arrays), written to a temporary name and renamed: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    state = {name: (torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value)
             .detach().contiguous().cpu() for name, value in tensors.items()}
    save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})})
    os.replace(tmp, path)


def load_tensors(path: Union[str, Path], what: str = "file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on the CPU, metadata) of a safetensors file; anything unreadable is a ModelLoadError."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, dict(f.metadata() or {})
    except FileNotFoundError:
        raise ModelLoadError(f"The {what} {Path(path).name} is missing from the model folder.") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(f"The {what} {Path(path).name} is not a readable safetensors file ({error}).") from None


def file_sha256(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def looks_like_path(source: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else is meant as a local path."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or os.path.exists(source)


def source_network_folder(run_dir: Path) -> Path:
    """Where a run keeps its trained network: `RUN_DIR/trained/` (train.py), or RUN_DIR itself when it is a model
    folder (an earlier deployable folder, refinalized for other settings)."""
    trained = Path(run_dir) / TRAINED_DIR
    return trained if (trained / CONFIG_NAME).exists() else Path(run_dir)


def resolve_model_folder(source: Union[str, Path], revision: str | None = None, cache_dir: Any = None,
                         force_download: bool = False, local_files_only: bool = False, token: Any = None) -> Path:
    """A local folder holding the model's files: `source` itself, or one revision of a Hub repo."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    source = str(source)
    if os.path.isdir(source):
        return Path(source)
    if looks_like_path(source):
        raise ModelLoadError(f"No model folder at {source}.")
    try:
        return Path(snapshot_download(source, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                      local_files_only=local_files_only, token=token,
                                      allow_patterns=MODEL_FILE_PATTERNS))
    except (OfflineModeIsEnabled, LocalEntryNotFoundError):
        raise ModelLoadError(
            f"Model {source!r} is not in the local Hugging Face cache and the Hub cannot be reached; "
            "connect to the internet, or pass a local model folder.") from None
    except HfHubHTTPError as error:
        raise ModelLoadError(f"The Hugging Face Hub refused {source!r} ({error.__class__.__name__}); "
                             "check the repo id, revision and your token.") from None
    except (OSError, ValueError) as error:  # connection errors and malformed ids
        raise ModelLoadError(f"Model {source!r} could not be fetched from the Hugging Face Hub "
                             f"({error.__class__.__name__}); check the id and your connection.") from None
