"""What a run's training_log.json means, for the card, the docs, the analysis and train.py. `read_training_log` is
its one reader: it fills in what older logs lack, so that no caller guesses a default of its own. From a log: the
hours and precision its epochs took, and the stages a network was trained in (a run continued from a model folder,
`train.py --init-from`, carries the stages of that folder's network before its own, so that the card can say how it
was made from scratch)."""
from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path
from typing import Any

from ..runtime.files import ModelLoadError, resolve_model_folder
ROOT = Path(__file__).resolve().parents[2]  # the repository: records show paths below it as relative
LOG_NAME = "training_log.json"
OLDEST_RECIPE = "acquisition"  # what runs logged before recipes were recorded trained with


def read_training_log(folder: str | Path) -> dict[str, Any]:
    """The training_log.json of a run or model folder, completed (`completed`)."""
    return completed(json.loads((Path(folder) / LOG_NAME).read_text()))


def completed(log: dict[str, Any]) -> dict[str, Any]:
    """A copy of a training log with each field older logs lack filled in as those runs trained: the plain weights
    selected and recorded, each epoch at args.image_size, on the 2-core CPU ("cpu"), in bf16 autocast unless told,
    one process, with the recipe now called "acquisition", and no earlier stages."""
    log = {**log, "args": {"mixed_precision": "bf16", **log["args"]}}
    log.setdefault("best_weights", "weights")
    log.setdefault("device", "cpu")
    log.setdefault("num_processes", 1)
    log["lineage"] = log.get("lineage") or []
    log["augmentation"] = {"recipe": OLDEST_RECIPE, **(log.get("augmentation") or {})}
    log["history"] = [{"weights": "weights", "train_size": log["args"]["image_size"], "device": log["device"],
                       "mixed_precision": log["args"]["mixed_precision"], **record} for record in log.get("history", [])]
    return log


def recipe_of(folder: str | Path) -> str:
    """The augmentation recipe the run in a folder trained with (a folder without a log: the oldest recipe)."""
    return read_training_log(folder)["augmentation"]["recipe"] if (Path(folder) / LOG_NAME).exists() else OLDEST_RECIPE


def stage_of(log: dict[str, Any]) -> dict[str, Any]:
    """One stage of a completed log: the command, the recipe, the epochs and sizes, and the hours on each machine."""
    cost = epoch_cost(log)
    return {"command": log.get("command"), "commit": log.get("commit"), "init_from": log.get("init_from"),
            "recipe": log["augmentation"]["recipe"],
            "epochs": log["args"]["epochs"], "size_schedule": log["args"].get("size_schedule"),
            "time_budget_s": log["args"].get("time_budget"), "hours": cost["hours"], "on": cost["on"],
            "precision": training_precision(log)}


def lineage_of(model: str | Path) -> list[dict[str, Any]]:
    """Every stage of the network in a model folder (or Hub id), oldest first, its own last."""
    try:
        log = read_training_log(resolve_model_folder(model))
    except (FileNotFoundError, json.JSONDecodeError, KeyError) as error:
        raise ModelLoadError(f"{model} has no readable {LOG_NAME} ({error.__class__.__name__}); "
                             "its lineage is unknown.") from None
    return [*log["lineage"], stage_of(log)]


PRECISION_NAMES = {"bf16": "bf16 autocast", "fp16": "fp16 autocast", "no": "fp32"}


def epoch_cost(log: dict[str, Any]) -> dict[str, Any]:
    """Training hours in a completed log; the median seconds per epoch at each training size, and the hours they add up to
    (what the run costs without pauses or other work on the same cores, which inflate the logged hours); the device
    the run trained on ("cpu" for logs older than train.py's "device" field: every run bundled before it was a CPU
    run), and where epochs name different ones (a run resumed on other machines), the hours on each, in words ("on").
    Validation comes on top of both."""
    epochs = {record["epoch"]: record for record in log["history"]}  # one record per epoch (weights and EMA share it)
    by_size: dict[int, list[float]] = {}
    hours_on: dict[str, float] = {}
    for record in epochs.values():
        by_size.setdefault(record["train_size"], []).append(record["train_seconds"])
        where = record["device"]
        hours_on[where] = hours_on.get(where, 0.0) + record["train_seconds"] / 3600
    medians = {size: statistics.median(seconds) for size, seconds in sorted(by_size.items())}
    on = (f"on {_device_words(next(iter(hours_on)))}" if len(hours_on) == 1 else
          "(" + ", ".join(f"{hours:.1f} h on {_device_words(where)}" for where, hours in hours_on.items()) + ")")
    return {"hours": sum(r["train_seconds"] for r in epochs.values()) / 3600, "seconds_per_epoch": medians,
            "median_hours": sum(medians[size] * len(seconds) for size, seconds in by_size.items()) / 3600,
            "num_processes": log["num_processes"], "device": log["device"], "on": on}


def _device_words(device: str) -> str:
    """'cpu' (logs before devices were described: the 2-core CPUs of this project), a described CPU, or a GPU."""
    return "a 2-core CPU" if device == "cpu" else f"a {device}" if device.endswith(" CPU") else f"one {device}"


def training_precision(log: dict[str, Any]) -> str:
    """The precision a completed log's epochs trained in; where sittings on different machines differed, each with
    its epochs."""
    epochs: dict[str, set[int]] = {}
    for record in log["history"]:
        epochs.setdefault(record["mixed_precision"], set()).add(record["epoch"])
    if len(epochs) == 1:
        return PRECISION_NAMES[next(iter(epochs))]
    return ", ".join(f"{PRECISION_NAMES[name]} for {len(numbers)} epochs" for name, numbers in epochs.items()) + \
        " (each sitting in what its machine runs fast)"


def shown(folder: Path) -> str:
    """A folder as the records show it: below the repository, or below ~ (never a server's home)."""
    folder = folder.resolve()
    return str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else
               "~" / folder.relative_to(Path.home()) if folder.is_relative_to(Path.home()) else folder)


def shown_in(text: str) -> str:
    """A record's text (a command, a JSON file) with the server's home shown as ~, as `shown` shows a folder."""
    return text.replace(str(Path.home()), "~")


# commands that moved, under the names they run by today: the records keep what ran, the pages show what to run
MOVED_COMMANDS = {"python -m modeling.training.finalize ": "python -m scripts.finalize ",
                  "python -m modeling.finalize ": "python -m scripts.finalize ",
                  "python -m modeling.analysis.shortcuts ": "python -m scripts.shortcut_scores ",
                  "python -m modeling.gate_training.non_xray ": "python -m scripts.non_xray ",
                  "python -m modeling.gate_training.train ": "python -m scripts.train_xray_gate ",
                  "python -m modeling.gate_training ": "python -m scripts.train_xray_gate ",
                  "python -m modeling.hub ": "python -m scripts.hub "}


def runnable(command: str) -> str:
    """A recorded command as it runs today (`MOVED_COMMANDS`), with the server's home shown as ~."""
    for old, new in MOVED_COMMANDS.items():
        if command.startswith(old):
            command = new + command[len(old):]
    return shown_in(command)


def finalized_into(config: Any) -> str:
    """The folder modeling.training.finalize wrote, as its command in a model's config.json (`ModelConfig`) names it."""
    words = shlex.split(config.validation.get("finalized_by", ""))
    return words[words.index("--output-dir") + 1] if "--output-dir" in words else "(not recorded)"
