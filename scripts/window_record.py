"""A training window's record for docs/windows/: what it continued, how, and its validation epoch by epoch, from
the run's training_log.json or, for a window stopped before its end, its newest checkpoint. Run folders do not
survive sessions; these records do, and docs/experiments.md is rendered from them.

    python -m scripts.window_record ~/runs/window5 --output docs/windows/head-acquisition-thorax-1e-3.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from modeling.runtime.files import write_json_atomic
from modeling.training.run_log import LOG_NAME, read_training_log
from modeling.training.checkpointing import latest_checkpoint
from scripts.publish_bundle import shown, shown_in

VALIDATION = ("val_calibrated_loss", "val_roc_auc", "val_sensitivity", "val_specificity")


def command_of(args: dict) -> str:
    """The train.py options that made a window's run, from the arguments its checkpoint logged."""
    sizes = ",".join(f"{size}:{share:g}" for size, share in args.get("budget_sizes") or [])
    words = ["python train.py --data", args["data"], "--output-dir", shown(Path(args["output_dir"])),
             "--init-from", shown(Path(args["init_from"])), "--time-budget", f"{args['time_budget'] / 60:g}m",
             *(["--budget-sizes", sizes] if sizes else []),
             "--augment", args["augment"],
             *(["--train-layers", args["train_layers"]] if args.get("train_layers") else []),  # an option of 13118b6
             "--lr", f"{args['lr']:g}", "--warmup-epochs", f"{args['warmup_epochs']:g}"]
    return " ".join(str(word) for word in words)


def window_record(run: Path) -> dict:
    if (run / LOG_NAME).exists():
        state, finished = read_training_log(run), True
    else:
        checkpoint = latest_checkpoint(run / "checkpoints")
        if checkpoint is None:
            raise SystemExit(f"{run.name} has neither a training_log.json nor a checkpoint.")
        state, finished = json.loads((checkpoint / "trainer_state.json").read_text()), False
    args = state["args"]
    kept = [r for r in state["history"] if r["weights"] == state.get("best_weights", "ema")] or state["history"]
    command = shown_in(state["command"]) if state.get("command") else command_of(args)
    return {"run": run.name, "finished": finished, "command": command,
            "init_from": shown(Path(args["init_from"])), "recipe": args.get("augment"),
            "trained_layers": args.get("train_layers", "all"), "lr": args["lr"],
            "time_budget_s": args.get("time_budget"), "sizes": args.get("budget_sizes"),
            "start": {key: state["start_validation"][key] for key in VALIDATION},
            "epochs": [{"epoch": r["epoch"], "train_size": r["train_size"], "weights": r["weights"],
                        "lr_end": r["lr_end"], **{key: r[key] for key in VALIDATION}} for r in kept]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the window's run folder (train.py --output-dir)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    write_json_atomic(args.output, window_record(args.run))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
