"""Training checkpoints that survive a kill at any moment.

Each checkpoint is written by `accelerate` into `epoch-NNNN.tmp/`, renamed to `epoch-NNNN/` once
complete (a rename is atomic), and only then named in `latest.json` (itself replaced atomically).
A run killed mid-write leaves a stray `.tmp` folder that is ignored and later removed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from ..runtime.files import write_json_atomic

LATEST = "latest.json"
TRAINER_STATE = "trainer_state.json"


def save_checkpoint(accelerator: Accelerator, root: Path, epoch: int, trainer_state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Model, optimiser, scheduler and RNG states (accelerate) plus our JSON trainer state."""
    tmp, final = root / f"epoch-{epoch:04d}.tmp", root / f"epoch-{epoch:04d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / TRAINER_STATE, trainer_state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_json_atomic(root / LATEST, {"epoch": epoch, "checkpoint": final.name})
        _prune(root, keep=keep, current=final)
    accelerator.wait_for_everyone()
    return final


def _prune(root: Path, keep: int, current: Path) -> None:
    finished = sorted(p for p in root.glob("epoch-*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in finished[:-keep]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
    for stray in root.glob("epoch-*.tmp"):
        shutil.rmtree(stray, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint, or None if there is none."""
    try:
        latest = json.loads((root / LATEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    path = root / latest["checkpoint"]
    return path if (path / TRAINER_STATE).exists() else None


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    accelerator.load_state(str(path))
    return json.loads((path / TRAINER_STATE).read_text())
