"""Publish to the Hugging Face Hub: the model (weights, config, card, plots) and the demo Space.

    python -m scripts.hub card MODEL_DIR --repo-id USER/NAME            # write MODEL_DIR/README.md
    python -m scripts.hub push MODEL_DIR --repo-id USER/NAME [--dry-run]
    python -m scripts.hub push-space --repo-id USER/SPACE --model-repo USER/NAME [--dry-run]

The card is `model_card.md` filled from the model folder's own files: config.json,
training_log.json, data_report.json and eval/metrics.json (written by
`evaluate.py --output-dir MODEL_DIR/eval`). Each push is one commit: weights and side files of one revision, which `Predictor.from_pretrained(repo_id)`
then downloads together.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData, get_token

from .runtime.config import ModelConfig
from .runtime.gate import GATE_FILE, GATE_REPORT_FILE, GATE_SOURCES_FILE
from .runtime.reference import REFERENCE_NAME
from .training.augment import describe as describe_augmentation
from .training.calibration import THRESHOLD_RULES
from .training.metrics import RATES
from .training.run_log import completed, epoch_cost, runnable, training_precision

FINALIZE_COMMAND = re.compile(r"python -m scripts\.finalize ")
CARD_TEMPLATE = Path("model_card.md")  # the project's template, as the commands below are run from its root
DATASET_ID = "hf-vision/chest-xray-pneumonia"
MODEL_FILES = ["model.safetensors", "config.json", "ood.safetensors", "int8-calibration.safetensors", "README.md",
               "training_log.json", "data_report.json", "split.json", "validation_thresholds.png",
               "validation_thresholds.json", "eval/metrics.json", "eval/roc.png",
               "eval/pr.png", "eval/confusion_matrix.png", "eval/reliability.png", "eval/predictions.csv",
               GATE_FILE, GATE_SOURCES_FILE, GATE_REPORT_FILE, "xray_gate_eval/report.json", "xray_gate_eval/mistakes.png"]
# the Space runs app.py on the runtime alone: what training, the gate's negatives and analysis need stays out
SPACE_PATTERNS = ["app.py", "requirements.txt", "README.md", "modeling/__init__.py", "modeling/runtime/*.py", "examples/*"]
CARD_METRICS = ("accuracy", "recall", "specificity", "precision", "f1", "roc_auc")


class HubError(RuntimeError):
    """A publish step failed; the message is one sentence saying what to do."""


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HubError(f"{path} is missing: {hint}") from None


def build_card(model_dir: Path, repo_id: str, template: Path = CARD_TEMPLATE) -> ModelCard:
    """The filled model card, with Hub metadata and model-index results from eval/metrics.json."""
    if not Path(template).is_file():
        raise HubError(f"No card template at {template}: run from the project's root, or pass --card-template.")
    config = ModelConfig.load(model_dir / "config.json")
    log = completed(_read_json(model_dir / "training_log.json", "it is written by train.py"))
    report = _read_json(model_dir / "data_report.json", "it is written by train.py")
    metrics = _read_json(model_dir / "eval" / "metrics.json",
                         f"run `python evaluate.py --model {model_dir} --data DATA --split test "
                         f"--output-dir {model_dir / 'eval'}` first")
    args = log["args"]
    pretrained = not args.get("no_pretrained", False)
    base_model = f"timm/{config.architecture}.a1_in1k" if pretrained else None
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name, license="cc-by-4.0", library_name="timm", pipeline_tag="image-classification",
        tags=["image-classification", "timm", "transformers", "medical-imaging", "chest-x-ray", "pneumonia"],
        datasets=[DATASET_ID], base_model=base_model, metrics=list(CARD_METRICS),
        eval_results=[EvalResult(task_type="image-classification", dataset_type=DATASET_ID,
                                 dataset_name="Chest X-Ray Images (Pneumonia), Kermany et al. 2018",
                                 dataset_split=metrics.get("split", "test"), metric_type=name,
                                 metric_name=f"{name} at threshold {metrics['threshold']:.4f}",
                                 metric_value=round(float(metrics[name]), 4))
                      for name in CARD_METRICS],
    )
    data_arg = metrics.get("data", "../shared/data/chest_xray")
    return ModelCard.from_template(
        card_data, template_path=str(template), model_name=model_name, repo_id=repo_id,
        architecture=config.architecture, pretrained=pretrained, base_model=base_model,
        threshold=config.threshold, target_sensitivity=config.validation.get("target_sensitivity", float("nan")),
        threshold_rule=config.validation.get("threshold_rule", "sensitivity"),
        threshold_rule_meaning=THRESHOLD_RULES[config.validation.get("threshold_rule", "sensitivity")][1],
        threshold_rules=config.validation.get("threshold_rules"), finalized_by=config.validation.get("finalized_by"),
        dataset=DATASET_ID, train_images=report.get("train_images"), validation_images=report.get("validation_images"),
        unreadable=len(report.get("train", {}).get("unreadable", [])),
        commands=reproduction_commands(log, config), epoch_cost=epoch_cost(log),
        size_schedule=", ".join(f"{size} px for {count} epochs" for size, count in args.get("size_schedule") or []),
        augmentation=describe_augmentation(log["augmentation"]["recipe"]), threshold_figure=(model_dir / "validation_thresholds.png").exists(),
        ema_decay=args.get("ema_decay"), best_weights=log["best_weights"],
        training_precision=training_precision(log),
        views=1 + len(config.tta_views), views_choice=config.validation.get("views_choice"), precision=config.precision,
        int8_images=config.quantization.get("calibration_images"),
        epochs=args["epochs"], lr=args["lr"], weight_decay=args["weight_decay"],
        label_smoothing=args["label_smoothing"], drop_rate=args["drop_rate"], image_size=config.image_size,
        select_metric=args.get("select_metric", "roc_auc"), best_epoch=log["best_epoch"],
        val_roc_auc=config.validation.get("roc_auc", float("nan")),
        eval_command=metrics.get("command") or (f"python evaluate.py --model {metrics.get('model', model_dir)} "
                                                f"--data {data_arg} --split {metrics.get('split', 'test')} "
                                                f"--output-dir {model_dir / 'eval'}"),  # older runs: rebuilt
        metrics=metrics, rates=RATES, bootstrap=metrics.get("bootstrap", "many"),
        ood_quantile=config.ood.get("quantile"), ood_stages=", ".join(config.ood.get("stages", [])),
        ood_fitted_on=config.ood.get("fitted_on"),
        ood_not_xray_stages=", ".join(config.ood["stages"][i] for i in config.ood.get("not_xray_stages", [])),
        xray_gate=gate_card_context(model_dir, config),
        reference=(model_dir / REFERENCE_NAME).exists(),
        lineage=[{**stage, "command": runnable(stage["command"])} for stage in log["lineage"]],
        lineage_hours=sum(stage["hours"] for stage in log["lineage"]) + epoch_cost(log)["hours"],
    )


def gate_card_context(model_dir: Path, config: ModelConfig) -> dict[str, Any] | None:
    """The chest X-ray gate for the card: config.json's settings, its training report (sources, licences, hours)
    and, where `scripts.xray_gate_report` measured it, its evaluation (xray_gate_eval/report.json)."""
    if not config.xray_gate:
        return None
    evaluation = model_dir / "xray_gate_eval" / "report.json"
    report = _read_json(model_dir / config.xray_gate["report"], "it is written by python -m scripts.train_xray_gate")
    return {"settings": config.xray_gate, "report": {**report, "command": runnable(report["command"])},
            "evaluation": json.loads(evaluation.read_text()) if evaluation.exists() else None}


def reproduction_commands(log: dict[str, Any], config: ModelConfig) -> list[str]:
    """The commands that rebuild the folder: its training as
    logged (without --resume, which only continues an interrupted run) with the batch size pinned, so that the same
    command runs the same recipe on a CPU and on a GPU (where the default batch differs), then the finalize command
    recorded in config.json."""
    finalized_by = runnable(config.validation.get("finalized_by", ""))
    return [_pinned(runnable(log.get("command") or train_command(log["args"])), log["args"]["batch_size"]),
            *([finalized_by] if FINALIZE_COMMAND.match(finalized_by) else [])]


def _pinned(command: str, batch_size: int) -> str:
    words = [word for word in command.split() if word != "--resume"]
    return " ".join(words + (["--batch-size", str(batch_size)] if "--batch-size" not in words else []))


def train_command(args: dict[str, Any]) -> str:
    """The train.py command line of a run, rebuilt from its logged arguments (for runs that did not log "command")."""
    return _command("train.py", args, ["data", "output_dir", "model", "epochs", "image_size", "batch_size", "lr",
                                       "seed", "split_file", "no_pretrained"])


def _command(script: str, args: dict[str, Any], keys: list[str]) -> str:
    parts = ["python", script]
    for key in keys:
        value = args.get(key)
        if isinstance(value, bool):
            parts += [f"--{key.replace('_', '-')}"] if value else []
        elif value is not None:
            parts += [f"--{key.replace('_', '-')}", str(value)]
    return " ".join(parts)


def write_card(model_dir: Path, repo_id: str, template: Path = CARD_TEMPLATE) -> Path:
    path = model_dir / "README.md"
    build_card(model_dir, repo_id, template).save(path)
    return path


def model_operations(model_dir: Path, card: str | None = None) -> list[CommitOperationAdd]:
    """The model folder's files as commit operations; `card`, where given, is uploaded as README.md from memory, so
    that a push leaves the folder as it found it, whether the upload succeeds or not."""
    operations = []
    for name in MODEL_FILES:
        if name == "README.md" and card is not None:
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=card.encode()))
        elif (model_dir / name).exists():
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(model_dir / name)))
    return operations


def space_operations(root: Path, model_repo: str) -> list[CommitOperationAdd]:
    """The Space's files as commit operations rather than HfApi.upload_folder: its README's front matter is rewritten
    in memory to name the model repo, which upload_folder, reading files as they are on disk, cannot do."""
    operations = []
    for pattern in SPACE_PATTERNS:
        for path in sorted(root.glob(pattern)):
            if not path.is_file():
                continue
            content: Any = str(path)
            if path.name == "README.md" and path.parent == root:
                text = re.sub(r"(?m)^models:\n(  - .*\n)+", f"models:\n  - {model_repo}\n", path.read_text())
                content = text.encode()
            operations.append(CommitOperationAdd(path_in_repo=str(path.relative_to(root)), path_or_fileobj=content))
    return operations


def upload(repo_id: str, repo_type: str, operations: list[CommitOperationAdd], message: str,
            private: bool = False, space_variables: dict[str, str] | None = None) -> str:
    if not get_token():
        raise HubError("No Hugging Face token found: run `hf auth login` (or set HF_TOKEN), or use --dry-run.")
    api = HfApi()
    try:
        extra = {"space_sdk": "gradio"} if repo_type == "space" else {}
        repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **extra).repo_id
        info = api.create_commit(repo_id, operations=operations, commit_message=message, repo_type=repo_type)
        for key, value in (space_variables or {}).items():
            api.add_space_variable(repo_id, key, value)
    except Exception as error:  # noqa: BLE001 - network, auth and server errors come as many types
        raise HubError(f"Could not publish to the Hugging Face Hub ({type(error).__name__}: "
                       f"{str(error).splitlines()[0][:160]}); check your connection, token and repo id, "
                       "or use --dry-run.") from None
    return info.commit_url
