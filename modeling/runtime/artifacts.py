"""What each deployment artifact was fitted for, and the refusal to use one fitted for other settings.

Temperature and threshold (config.json's `validation`), the out-of-distribution detector and the
int8 calibration are all fitted by `modeling.training.finalize` for one deployment: a precision, a set of
test-time views, one set of weights and one train/validation split. Each records those settings
(`fitted_for`, in config.json and in the artifact file's own metadata); `check_fitted_for` refuses
an artifact whose record differs from what the model folder now deploys, with the command that
refits it.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from .config import ModelConfig
from .files import SPLIT_NAME, WEIGHTS_NAME, ModelLoadError, file_sha256

REFIT = "python -m scripts.finalize MODEL_DIR --data DIR_OR_ID"


def split_fingerprint(folder: Path) -> str | None:
    """sha256 of the train and validation file names in split.json (None where the folder has no split.json)."""
    return split_fingerprint_of(Path(folder) / SPLIT_NAME)


def split_fingerprint_of(split_file: Path) -> str | None:
    """`split_fingerprint` of a split.json anywhere (None where there is none)."""
    try:
        split = json.loads(Path(split_file).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    names = {side: sorted(split.get(side, [])) for side in ("train", "validation")}
    return hashlib.sha256(json.dumps(names, sort_keys=True).encode()).hexdigest()


def deployment(config: ModelConfig, folder: Path) -> dict[str, Any]:
    """The settings an artifact of this model folder must have been fitted for."""
    return {"precision": config.precision, "views": [dict(view) for view in config.tta_views],
            "weights_sha256": file_sha256(Path(folder) / WEIGHTS_NAME), "split_sha256": split_fingerprint(folder)}


def describe(settings: dict[str, Any]) -> str:
    weights = str(settings.get("weights_sha256") or "?")[:12]
    return (f"{settings.get('precision', '?')} with {1 + len(settings.get('views') or [])} view(s) "
            f"and weights {weights}")


def check_fitted_for(what: str, recorded: Any, expected: dict[str, Any]) -> None:
    """Refuse `what` unless it was fitted for exactly the `expected` deployment (a split is compared only
    where both sides know it: a folder downloaded without split.json still loads)."""
    if not isinstance(recorded, dict):
        raise ModelLoadError(f"The {what} does not say what it was fitted for; refit it: {REFIT}")
    keys = ["precision", "views", "weights_sha256"]
    if recorded.get("split_sha256") and expected.get("split_sha256"):
        keys.append("split_sha256")
    different = [key for key in keys if recorded.get(key) != expected.get(key)]
    if different:
        raise ModelLoadError(f"The {what} was fitted for {describe(recorded)}, but the model folder deploys "
                             f"{describe(expected)} ({', '.join(different)} differ); refit it: {REFIT}")


def file_record(metadata: dict[str, str], what: str) -> dict[str, Any]:
    """The `fitted_for` record stored in an artifact file's safetensors metadata."""
    try:
        return json.loads(metadata["fitted_for"])
    except (KeyError, json.JSONDecodeError):
        raise ModelLoadError(f"The {what} file does not say what it was fitted for; refit it: {REFIT}") from None


def file_metadata(settings: dict[str, Any]) -> dict[str, str]:
    """The safetensors metadata that records what an artifact file was fitted for."""
    return {"fitted_for": json.dumps(settings, sort_keys=True)}


def git_commit() -> str | None:
    """The commit this code was checked out at (with "+changes" when the tree differs), None outside git: the
    provenance that a training log or report records."""
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=Path(__file__).parent, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        return git("rev-parse", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return None
