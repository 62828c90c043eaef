"""The stages a network was trained in: a run continued from a model folder (`train.py --init-from`) carries
the stages of that folder's network before its own, so that the card can say how it was made from scratch."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .files import ModelLoadError, resolve_model_folder


def stage_of(log: dict[str, Any]) -> dict[str, Any]:
    """One stage: the command, the recipe, the epochs and sizes, and the training hours on each machine."""
    from .augment import trained_recipe
    from .hub import epoch_cost, training_precision  # the one reader of what a log's epochs cost

    cost = epoch_cost(log)
    return {"command": log.get("command"), "commit": log.get("commit"), "init_from": log.get("init_from"),
            "recipe": trained_recipe(log),
            "trained_layers": log["args"].get("train_layers", "all"),
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
