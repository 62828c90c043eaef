"""Train a pneumonia classifier on chest X-rays, then finalize the run into a deployable model folder.

    python train.py --data ../shared/data/chest_xray --output-dir runs/resnet50 --no-pretrained
    python train.py --data ... --output-dir runs/next --init-from weights/pneumonia-resnet50 --time-budget 2h
    accelerate launch --multi_gpu --num_processes 8 train.py --data ... --output-dir ...  # many GPUs
    torchrun --nproc_per_node 2 train.py --data ... --output-dir ...                     # many CPU processes

The output folder holds trained/ (the network the run keeps: its final moving average by default),
model/ (the deployable folder that `modeling.training.finalize` makes from it: temperature, threshold,
out-of-distribution detector and, on a CPU, int8 calibration, all fitted on validation for the
deployed precision and views; --finalize-* options), training_log.json (the training history),
data_report.json, split.json and checkpoints/ for --resume. Batch size and learning rate default to
what fills the device: 32 images per step at 1e-3 on a CPU, 256 per GPU on a GPU, the learning rate
scaled by sqrt(total batch / 32).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import shlex
import sys
import time
from pathlib import Path

from modeling.runtime.host import tcmalloc_active, use_tcmalloc

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported, so that re-executing under tcmalloc costs no second import

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from timm.data import Mixup, resolve_model_data_config
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from modeling.runtime.artifacts import git_commit, split_fingerprint_of
from modeling.runtime.config import ModelConfig
from modeling.runtime.files import (
    TRAINED_DIR,
    ModelLoadError,
    folder_written_whole,
    resolve_model_folder,
    write_json_atomic,
)
from modeling.runtime.inference import Predictor, default_device, describe_device, fast_bf16
from modeling.runtime.model import PneumoniaClassifier
from modeling.runtime.probability import positive_probs
from modeling.training.augment import DEFAULT_RECIPE, RECIPES, BatchAugment
from modeling.training.budget import BudgetState, parse_duration, parse_size_shares
from modeling.training.calibration import calibrated_log_loss
from modeling.training.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from modeling.training.data import (
    BalancedSampler,
    DataLoadError,
    DecodedImages,
    decode_once,
    drop_unreadable,
    first,
    label_mapping,
    label_names,
    load_data,
    make_train_val,
    with_thorax_boxes,
)
from modeling.training.finalize import add_arguments as add_finalize_arguments
from modeling.training.finalize import finalize
from modeling.training.metrics import binary_metrics, threshold_for_sensitivity
from modeling.training.run_log import lineage_of


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="local imagefolder or Hugging Face Hub dataset id")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--model", default=None, help="any timm architecture (default: resnet50, or --init-from's)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="continue training that model folder's network (a folder or Hub id) instead of starting from "
                        "random or ImageNet weights; it trains on the split that network was trained on, and the log "
                        "carries its lineage")
    p.add_argument("--time-budget", type=parse_duration, metavar="DURATION",
                   help="train for this long (2h, 90m, 1h30m) on the machine at hand: the epochs and their sizes are "
                        "planned from the measured throughput (modeling.training.budget); --epochs and --size-schedule are "
                        "then ignored")
    p.add_argument("--budget-sizes", type=parse_size_shares, default=None, metavar="SIZE:SHARE,...",
                   help="with --time-budget: training sizes, smallest first, and their shares of the budget "
                        "(default: --image-size throughout)")
    p.add_argument("--no-pretrained", action="store_true", help="start from random weights instead of ImageNet")
    p.add_argument("--image-size", type=int, default=224, help="input size of the deployed model (and of validation)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--size-schedule", type=parse_size_schedule, default=None, metavar="SIZE:EPOCHS,...",
                   help="progressive resizing: training sizes and their epoch counts, e.g. 128:30,176:10,224:8 "
                        "(the counts add up to --epochs; default: --image-size throughout); validation is always "
                        "at --image-size")
    p.add_argument("--batch-size", type=int, default=None,
                   help="per process (default: 256 on a GPU, 32 on a CPU)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak AdamW learning rate (default: 1e-3 x sqrt(batch size x processes / 32))")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mixup: train on blends of two images and of their labels, the weight drawn from "
                        "Beta(ALPHA, ALPHA) per image (Zhang et al. 2018; it resists noisy labels; 0: off)")
    p.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA",
                   help="cutmix: paste a patch of another image, labels weighted by area (0: off); with --mixup, "
                        "each image gets one or the other")
    p.add_argument("--augment", default=DEFAULT_RECIPE, choices=sorted(RECIPES),
                   help="training augmentation recipe (modeling.training.augment; the log records its numbers)")
    p.add_argument("--drop-rate", type=float, default=0.2, help="dropout before the classifier")
    p.add_argument("--ema-decay", type=float, default=0.998,
                   help="also keep an exponential moving average of the weights (0: off)")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--split-file", help="reuse the validation split saved by an earlier run (split.json)")
    p.add_argument("--select-metric", default="last", choices=["last", "roc_auc", "loss", "calibrated_loss"],
                   help="which weights the run keeps: last, the final epoch's moving average (the raw weights "
                        "with --ema-decay 0), or the epoch best by a validation criterion (calibrated_loss: log-loss "
                        "after a temperature fitted on the same validation logits); validation carved from train "
                        "saturates, so that an epoch picked on it says little about new data")
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="auto: bf16 where it is faster than fp32 (a GPU, a CPU with AVX512 or AMX), else fp32")
    p.add_argument("--decode-workers", type=int, default=os.cpu_count(), help="processes decoding the images once")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--no-finalize", action="store_true",
                   help="stop after training (finalize later: python -m scripts.finalize RUN_DIR --data ...)")
    finalize_options = p.add_argument_group("finalize", "how the run is finalized at the end (modeling.training.finalize)")
    add_finalize_arguments(finalize_options, prefix="finalize-")
    return p.parse_args(argv)


def parse_size_schedule(text: str) -> list[tuple[int, int]]:
    """"128:30,176:10,224:8" -> [(128, 30), (176, 10), (224, 8)]."""
    try:
        stages = [tuple(int(v) for v in part.split(":")) for part in text.split(",")]
        if not stages or any(len(stage) != 2 or min(stage) < 1 for stage in stages):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not SIZE:EPOCHS[,SIZE:EPOCHS...], e.g. 128:30,224:8") from None
    return stages


def training_sizes(args: argparse.Namespace) -> list[int]:
    """The training image size of each epoch."""
    if not args.size_schedule:
        return [args.image_size] * args.epochs
    sizes = [size for size, count in args.size_schedule for _ in range(count)]
    if len(sizes) != args.epochs:
        sys.exit(f"--size-schedule covers {len(sizes)} epochs but --epochs is {args.epochs}; make them agree.")
    if max(sizes) > args.image_size:
        sys.exit(f"--size-schedule goes up to {max(sizes)} px, above --image-size {args.image_size}.")
    return sizes


def check_init_split(init_split: Path, split_file: str | None) -> str:
    """The split file a continued network must train on: its own. Another split's validation images may be ones
    it trained on."""
    if split_fingerprint_of(init_split) is None:
        raise ModelLoadError("--init-from's folder has no split.json, so the images its network saw are unknown; "
                             "it cannot be continued without leaking validation images.")
    if split_file and split_fingerprint_of(Path(split_file)) != split_fingerprint_of(init_split):
        raise ModelLoadError(f"--split-file {split_file} is not the split --init-from's network was trained on; "
                             "leave --split-file out to use that one.")
    return split_file or str(init_split)


def measure_step_seconds(model: torch.nn.Module, augment: BatchAugment, batch: dict, shares: list[tuple[int, float]],
                         accelerator: Accelerator, repeats: int = 2) -> dict[int, float]:
    """Seconds per training step (augmentation, forward, backward) at each size, measured on a copy of the network
    so that its weights and batch-norm statistics stay as they are."""
    probe = copy.deepcopy(accelerator.unwrap_model(model)).train()
    seconds = {}
    for size, _ in shares:
        timings = []
        for _ in range(repeats + 1):  # the first step of a size warms up its kernels
            started = time.perf_counter()
            with accelerator.autocast():
                pixels = augment(batch["pixel_values"], output_size=size, thorax_boxes=batch.get("thorax_box"))
                loss = torch.nn.functional.cross_entropy(probe(pixels), batch["label"])
            loss.backward()
            probe.zero_grad(set_to_none=True)
            timings.append(time.perf_counter() - started)
        seconds[size] = min(timings[1:]) * 1.1  # the optimiser and moving-average updates come on top
    del probe
    return seconds


def describe_plan(plan: list[tuple[int, int]]) -> str:
    """[(176, 139), (176, 139), (224, 60)] -> "2 epochs at 176 px, 60 steps at 224 px"."""
    parts: list[str] = []
    for size in dict.fromkeys(s for s, _ in plan):
        steps = [n for s, n in plan if s == size]
        short = [n for n in steps if n != max(steps)]
        parts.append(f"{len(steps)} epoch(s) at {size} px" + (f" (the last {short[0]} steps)" if short else ""))
    return ", ".join(parts)


def main(args: argparse.Namespace) -> None:
    if args.mixed_precision == "auto":
        args.mixed_precision = "bf16" if fast_bf16(default_device()) else "no"
    # cpu=True when there is no GPU, so that torchrun's processes join a gloo process group
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=not torch.accelerator.is_available())
    log = accelerator.print
    if args.batch_size is None:
        args.batch_size = 32 if accelerator.device.type == "cpu" else 256
    if args.lr is None:
        args.lr = 1e-3 * math.sqrt(args.batch_size * accelerator.num_processes / 32)
    if (args.mixup or args.cutmix) and args.batch_size % 2:
        sys.exit(f"--mixup and --cutmix pair the images of a batch: make --batch-size even (it is {args.batch_size}).")
    log(f"{accelerator.num_processes} process(es) on {accelerator.device.type}, {args.batch_size} images per step "
        f"each, learning rate {args.lr:.2e}")
    set_seed(args.seed)
    init = None
    if args.init_from:
        try:
            init_folder = resolve_model_folder(args.init_from)  # once: a Hub id is downloaded once
            init = PneumoniaClassifier.from_pretrained(init_folder)
            args.split_file = check_init_split(init_folder / "split.json", args.split_file)
            lineage = lineage_of(init_folder)
        except ModelLoadError as error:
            sys.exit(str(error))
        if args.model not in (None, init.config.architecture):
            sys.exit(f"--model {args.model} but --init-from {args.init_from} is a {init.config.architecture}; "
                     "leave --model out to continue that network.")
        args.model = init.config.architecture
    args.model = args.model or "resnet50"
    sizes = training_sizes(args) if not args.time_budget else []
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_root = out / "checkpoints"

    # --- data: load, drop unreadable images, patient-grouped validation split
    try:
        splits = load_data(args.data)
    except DataLoadError as error:
        sys.exit(str(error))
    train_set, report = drop_unreadable(splits["train"], "train", data_dir=args.data if os.path.isdir(args.data) else None,
                                        show_progress=accelerator.is_local_main_process)
    log(report.summary())
    log("memory allocator: " + ("tcmalloc" if tcmalloc_active() else
                                "the system's malloc (apt install libtcmalloc-minimal4 for faster CPU training)"))
    splits["train"] = train_set
    train_set, val_set, split_info = make_train_val(splits, args.val_fraction, args.seed, out / "split.json",
                                                    reuse_split=args.split_file)
    if accelerator.is_main_process:
        write_json_atomic(out / "data_report.json", {"train": report.to_dict(), "split_source": split_info["source"],
                                                     "train_images": len(train_set), "validation_images": len(val_set)})
    log(f"train {len(train_set)} images, validation {len(val_set)} ({split_info['source']})")
    if "warning" in split_info:
        log(f"warning: {split_info['warning']}")

    # --- model and its config (the one source of truth for preprocessing and inference)
    config = ModelConfig(architecture=args.model, image_size=args.image_size,
                         model_args={"drop_rate": args.drop_rate} if args.drop_rate else {})
    if init is not None and init.config.model_args != config.model_args:
        sys.exit(f"--init-from's network was built with {init.config.model_args}, this run with {config.model_args}; "
                 f"pass --drop-rate {init.config.model_args.get('drop_rate', 0)}.")
    to_model = label_mapping(label_names(splits["train"]), config.label_names)
    train_labels = [to_model[label] for label in train_set["label"]]
    try:
        model = PneumoniaClassifier(config, pretrained=not args.no_pretrained and init is None)
    except ModelLoadError as error:
        sys.exit(str(error))
    if init is not None:
        model.backbone.load_state_dict(init.backbone.state_dict())
        log(f"continuing the network of {args.init_from}")
    model = model.to(memory_format=torch.channels_last)
    # mean, std and interpolation as timm defines them for this architecture (its pretrained weights' own)
    data_config = resolve_model_data_config(model.backbone)
    config.mean, config.std = tuple(data_config["mean"]), tuple(data_config["std"])
    config.interpolation = data_config["interpolation"]

    # images are decoded and resized once (cached on disk by `datasets`); augmentation runs per batch on the device
    with accelerator.main_process_first():
        train_decoded, val_decoded = (decode_once(split, config, to_model, args.decode_workers)
                                      for split in (train_set, val_set))
        if RECIPES[args.augment].uses_thorax:
            train_decoded = with_thorax_boxes(train_decoded, config.image_size, args.decode_workers)
        train_images, val_images = (DecodedImages(decoded, config.image_size) for decoded in (train_decoded, val_decoded))
    sampler = BalancedSampler(train_labels, seed=args.seed)
    train_loader = DataLoader(train_images, batch_size=args.batch_size, sampler=sampler, drop_last=True, collate_fn=first)
    val_loader = DataLoader(val_images, batch_size=min(64, args.batch_size), collate_fn=first)
    augment = BatchAugment(config, seed=args.seed, recipe=args.augment)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    steps_per_epoch = len(train_loader)  # per process
    # warm-up, then cosine to zero, stepped per update: the learning rate is a function of the step alone,
    # so a resumed run needs no scheduler state
    warmup_steps = int(args.warmup_epochs * steps_per_epoch)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, args.epochs * steps_per_epoch - warmup_steps),
                                  lr_min=0.0, warmup_t=warmup_steps, warmup_lr_init=args.lr / max(1, warmup_steps),
                                  warmup_prefix=True, t_in_epochs=False)
    # mixup and cutmix blend each image with its mirror in the batch; numpy draws the blends, and the checkpoint
    # keeps numpy's random state, so a resumed run blends as an uninterrupted one would
    mix = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, mode="elem", label_smoothing=args.label_smoothing,
                num_classes=len(config.label_names)) if args.mixup or args.cutmix else None
    criterion = SoftTargetCrossEntropy() if mix else torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    ema = ModelEmaV3(accelerator.unwrap_model(model), decay=args.ema_decay, use_warmup=True) if args.ema_decay else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    # the networks validated each epoch: the trained weights and their moving average, or where the run keeps its
    # final moving average whatever validation says, that one alone
    candidates = ({"ema": ema.module} if ema is not None and args.select_metric == "last" else
                  {"weights": model} | ({"ema": ema.module} if ema is not None else {}))
    validation_precision = {"bf16": "bfloat16", "fp16": "float16"}.get(accelerator.mixed_precision, "float32")
    device = describe_device(accelerator.device)  # each epoch's record says where it ran: a run can span machines

    # --- resume
    state = {"epoch": -1, "best_score": None, "best_epoch": None, "history": []}
    checkpoint = latest_checkpoint(ckpt_root) if args.resume else None
    if checkpoint:
        state = load_checkpoint(accelerator, checkpoint)
        log(f"resumed from {checkpoint} (epoch {state['epoch'] + 1} done)")
        for record in state["history"]:  # epochs logged before records named them: a CPU, in the precision saved
            record.setdefault("device", "cpu")
            record.setdefault("mixed_precision", state["args"]["mixed_precision"])
    elif args.resume:
        log(f"no checkpoint in {ckpt_root}; starting from scratch")

    def validate(network: torch.nn.Module, name: str) -> dict:
        """Validation metrics of one network, with the seconds they took."""
        started = time.time()
        predictor = Predictor(accelerator.unwrap_model(network), device=accelerator.device, precision=validation_precision)
        labels, logits, val_loss = predictor.predict_loader(val_loader, accelerator, desc=f"validation ({name})")
        positive = labels == config.positive_index
        val = binary_metrics(positive, positive_probs(logits, 1.0, config.positive_index), 0.5)
        calibrated_loss, temperature = calibrated_log_loss(logits, labels, config.positive_index)
        calibrated = positive_probs(logits, temperature, config.positive_index)
        return {"weights": name, "val_loss": val_loss, "val_calibrated_loss": calibrated_loss,
                "val_temperature": temperature, "val_roc_auc": val["roc_auc"], "val_sensitivity": val["recall"],
                "val_specificity": val["specificity"], "val_accuracy": val["accuracy"],
                # operating-point stability: where the target-sensitivity rule would put the threshold now
                "val_threshold_at_target": threshold_for_sensitivity(positive, calibrated,
                                                                     args.finalize_target_sensitivity),
                "val_seconds": time.time() - started}

    # --- the schedule: fixed epochs, or planned to fit --time-budget from the throughput measured here
    budget = None
    if args.time_budget:
        if "start_validation" not in state:  # the starting network's validation: a baseline, and its cost
            state["start_validation"] = validate(model, "start")
            log("start: " + " ".join(f"{k}={v:.4f}" for k, v in state["start_validation"].items() if k != "weights"))
        budget = (BudgetState.from_dict(state["budget"]) if "budget" in state else
                  BudgetState(args.time_budget, args.budget_sizes or [(args.image_size, 1.0)], args.lr,
                              int(args.warmup_epochs * steps_per_epoch)))
        augment.set_epoch(state["epoch"] + 1, accelerator.process_index, accelerator.device)
        step_seconds = measure_step_seconds(model, augment, next(iter(train_loader)), budget.shares, accelerator)
        validation_seconds = next((r["val_seconds"] for r in reversed(state["history"]) if "val_seconds" in r),
                                  state["start_validation"]["val_seconds"])
        budget.replan(step_seconds, validation_seconds, steps_per_epoch)
        budget = BudgetState.from_dict(broadcast_object_list([budget.to_dict()])[0])  # one plan for every process
        log(f"budget {budget.budget_s / 3600:.2f} h, {budget.spent_s / 3600:.2f} h spent; seconds per step "
            + ", ".join(f"{size} px {seconds:.2f}" for size, seconds in step_seconds.items())
            + f"; plan: {describe_plan(budget.plan)}")

    def epochs_to_train():
        """(epoch, training size, steps) for each epoch left."""
        epoch = state["epoch"] + 1
        if budget is None:
            yield from ((e, sizes[e], steps_per_epoch) for e in range(epoch, args.epochs))
            return
        while budget.plan:
            yield epoch, *budget.plan[0]
            epoch += 1

    # --- train
    images_per_step = args.batch_size * accelerator.num_processes
    for epoch, size, steps in epochs_to_train():
        train_loader.set_epoch(epoch)
        augment.set_epoch(epoch, accelerator.process_index, accelerator.device)
        model.train()
        first_step = budget.steps_done if budget else epoch * steps_per_epoch
        left = f", {(budget.budget_s - budget.spent_s) / 60:.0f} min of budget left" if budget else ""
        bar = tqdm(total=steps * images_per_step, unit="img", unit_scale=True,
                   desc=f"epoch {epoch + 1}/{args.epochs if budget is None else epoch + len(budget.plan)} at {size}px{left}",
                   disable=not accelerator.is_local_main_process)
        started, loss_sum = time.time(), 0.0
        for step, batch in enumerate(train_loader, 1):
            if budget:
                for group in optimizer.param_groups:
                    group["lr"] = budget.lr(first_step + step - 1)
            else:
                scheduler.step_update(first_step + step - 1)
            pixels = augment(batch["pixel_values"], output_size=size, thorax_boxes=batch.get("thorax_box"))
            targets = batch["label"]
            if mix is not None:
                pixels, targets = mix(pixels, targets)
            with accelerator.autocast():
                loss = criterion(model(pixels), targets)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(accelerator.unwrap_model(model), step=first_step + step)
            loss_sum += loss.item()
            bar.update(images_per_step)
            bar.set_postfix(loss=f"{loss_sum / step:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            if step >= steps:
                break
        bar.close()
        train_time = time.time() - started

        epoch_seconds = train_time
        for name, network in candidates.items():  # the trained weights, and their moving average
            val = validate(network, name)
            epoch_seconds += val["val_seconds"]
            record = {"epoch": epoch + 1, "train_size": size, "device": device,
                      "mixed_precision": accelerator.mixed_precision, "train_loss": loss_sum / max(1, steps),
                      "train_images_per_s": steps * images_per_step / train_time, "train_seconds": train_time,
                      "train_steps": steps, "lr_end": optimizer.param_groups[0]["lr"], **val}
            state["history"].append(record)
            log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

            score = {"last": epoch, "roc_auc": val["val_roc_auc"], "loss": -val["val_loss"],
                     "calibrated_loss": -val["val_calibrated_loss"]}[args.select_metric]
            if state["best_score"] is None or score > state["best_score"]:
                state.update(best_score=score, best_epoch=epoch + 1, best_weights=name)
                if accelerator.is_main_process:
                    with folder_written_whole(out / TRAINED_DIR) as folder:
                        accelerator.unwrap_model(network).save_model_files(folder)
                log(f"kept: epoch {epoch + 1}, {name} ({args.select_metric})")
        if budget:  # plan what is left from what this epoch really cost
            budget.finish_epoch(size, steps, epoch_seconds)
            step_seconds = {s: seconds * (train_time / steps) / step_seconds[size] for s, seconds in step_seconds.items()}
            budget.replan(step_seconds, epoch_seconds - train_time, steps_per_epoch)
            budget = BudgetState.from_dict(broadcast_object_list([budget.to_dict()])[0])
            state["budget"] = budget.to_dict()
            log(f"budget: {budget.spent_s / 60:.0f} of {budget.budget_s / 60:.0f} min spent; "
                f"left: {describe_plan(budget.plan) or 'nothing'}")
        state["epoch"] = epoch
        state["args"] = vars(args)
        save_checkpoint(accelerator, ckpt_root, epoch, state, keep=args.keep_checkpoints)
    if budget:  # the log says what the budget became: the epochs and sizes trained
        trained_sizes = [r["train_size"] for r in state["history"] if r["weights"] == next(iter(candidates))]
        args.epochs = len(trained_sizes)
        args.size_schedule = [[s, trained_sizes.count(s)] for s in sorted(set(trained_sizes))]


    # --- the training history, then the deployable folder (fitted on validation by modeling.training.finalize)
    command = shlex.join(["python", *sys.argv])
    if accelerator.is_main_process:
        write_json_atomic(out / "training_log.json", {"command": command,
                                                      "commit": git_commit(), "args": vars(args),
                                                      "augmentation": {"recipe": args.augment,
                                                                       **RECIPES[args.augment].to_dict()}, "history": state["history"],
                                                      "init_from": args.init_from,
                                                      "lineage": lineage if init is not None else [],
                                                      "start_validation": state.get("start_validation"),
                                                      "budget": state.get("budget"),
                                                      "best_epoch": state["best_epoch"],
                                                      "best_weights": state.get("best_weights", "weights"),
                                                      "num_processes": accelerator.num_processes,
                                                      "device": (torch.cuda.get_device_name(accelerator.device)
                                                                 if accelerator.device.type == "cuda"
                                                                 else accelerator.device.type),
                                                      "tcmalloc": tcmalloc_active()})
        log(f"kept epoch {state['best_epoch']} ({state.get('best_weights', 'weights')}) in {out / TRAINED_DIR}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and not args.no_finalize:
        try:
            finalize(out, args.data, precision=args.finalize_precision, tta=args.finalize_tta,
                     threshold_rule=args.finalize_threshold_rule, target_sensitivity=args.finalize_target_sensitivity,
                     weights_dtype=args.finalize_weights_dtype, ood_quantile=args.finalize_ood_quantile,
                     ood_gate=args.finalize_ood_gate,
                     int8_images=args.finalize_int8_images, xray_gate=args.finalize_xray_gate, command=command, log=log)
        except (ModelLoadError, DataLoadError) as error:
            sys.exit(str(error))
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
