"""What a run's training_log.json means, for the card, the docs and train.py: the hours and precision its epochs
took, and the stages a network was trained in: a run continued from a model folder (`train.py --init-from`) carries
the stages of that folder's network before its own, so that the card can say how it was made from scratch."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from ..runtime.files import ModelLoadError, resolve_model_folder
from .augment import trained_recipe


def stage_of(log: dict[str, Any]) -> dict[str, Any]:
    """One stage: the command, the recipe, the epochs and sizes, and the training hours on each machine."""
    cost = epoch_cost(log)
    return {"command": log.get("command"), "commit": log.get("commit"), "init_from": log.get("init_from"),
            "recipe": trained_recipe(log),
            "epochs": log["args"]["epochs"], "size_schedule": log["args"].get("size_schedule"),
            "time_budget_s": log["args"].get("time_budget"), "hours": cost["hours"], "on": cost["on"],
            "precision": training_precision(log)}


def lineage_of(model: str | Path) -> list[dict[str, Any]]:
    """Every stage of the network in a model folder (or Hub id), oldest first, its own last."""
    path = resolve_model_folder(model) / "training_log.json"
    try:
        log = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{model} has no readable training_log.json ({error.__class__.__name__}); "
                             "its lineage is unknown.") from None
    return [*log.get("lineage", []), stage_of(log)]


PRECISION_NAMES = {"bf16": "bf16 autocast", "fp16": "fp16 autocast", "no": "fp32"}


def epoch_cost(log: dict[str, Any]) -> dict[str, Any]:
    """Training hours in the log; the median seconds per epoch at each training size, and the hours they add up to
    (what the run costs without pauses or other work on the same cores, which inflate the logged hours); the device
    the run trained on ("cpu" for logs older than train.py's "device" field: every run bundled before it was a CPU
    run), and where each epoch names its own (a run resumed on other machines), the hours on each, in words ("on").
    Validation comes on top of both."""
    epochs = {record["epoch"]: record for record in log["history"]}  # one record per epoch (weights and EMA share it)
    by_size: dict[int, list[float]] = {}
    hours_on: dict[str, float] = {}
    for record in epochs.values():
        by_size.setdefault(record.get("train_size", log["args"]["image_size"]), []).append(record["train_seconds"])
        where = record.get("device", log.get("device", "cpu"))
        hours_on[where] = hours_on.get(where, 0.0) + record["train_seconds"] / 3600
    medians = {size: statistics.median(seconds) for size, seconds in sorted(by_size.items())}
    on = (f"on {_device_words(next(iter(hours_on)))}" if len(hours_on) == 1 else
          "(" + ", ".join(f"{hours:.1f} h on {_device_words(where)}" for where, hours in hours_on.items()) + ")")
    return {"hours": sum(r["train_seconds"] for r in epochs.values()) / 3600, "seconds_per_epoch": medians,
            "median_hours": sum(medians[size] * len(seconds) for size, seconds in by_size.items()) / 3600,
            "num_processes": log.get("num_processes", 1), "device": log.get("device", "cpu"), "on": on}


def _device_words(device: str) -> str:
    """'cpu' (logs before devices were described: the 2-core CPUs of this project), a described CPU, or a GPU."""
    return "a 2-core CPU" if device == "cpu" else f"a {device}" if device.endswith(" CPU") else f"one {device}"


def training_precision(log: dict[str, Any]) -> str:
    """The precision the epochs trained in; where sittings on different machines differed, each with its epochs."""
    default = log["args"].get("mixed_precision", "bf16")  # logs before "auto" trained in bf16 unless told
    epochs: dict[str, set[int]] = {}
    for record in log["history"]:
        epochs.setdefault(record.get("mixed_precision", default), set()).add(record["epoch"])
    if len(epochs) == 1:
        return PRECISION_NAMES[next(iter(epochs))]
    return ", ".join(f"{PRECISION_NAMES[name]} for {len(numbers)} epochs" for name, numbers in epochs.items()) + \
        " (each sitting in what its machine runs fast)"
