"""Train a pneumonia classifier on chest X-rays.

    python train.py --data ../shared/data/chest_xray --output-dir runs/resnet50 --no-pretrained
    accelerate launch --multi_gpu --num_processes 8 train.py --data ... --output-dir ...  # many GPUs
    torchrun --nproc_per_node 2 train.py --data ... --output-dir ...                     # many CPU processes

The output folder is a loadable model folder (model.safetensors + config.json of the best
epoch, with the decision threshold chosen on validation), plus training_log.json, data_report.json,
split.json and checkpoints/ for --resume.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from modeling.runtime import tcmalloc_active, use_tcmalloc

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported, so that re-executing under tcmalloc costs no second import

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from modeling.augment import BatchAugment
from modeling.calibration import positive_probs, set_operating_point
from modeling.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from modeling.config import ModelConfig, write_json_atomic
from modeling.data import (BalancedSampler, DataLoadError, DecodedImages, decode_once, drop_unreadable, first,
                           label_mapping, label_names, load_data, make_train_val)
from modeling.inference import predict_loader
from modeling.metrics import binary_metrics
from modeling.model import ModelLoadError, PneumoniaClassifier


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="local imagefolder or Hugging Face Hub dataset id")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--model", default="resnet50", help="any timm architecture")
    p.add_argument("--no-pretrained", action="store_true", help="start from random weights instead of ImageNet")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--drop-rate", type=float, default=0.2, help="dropout before the classifier")
    p.add_argument("--ema-decay", type=float, default=0.998,
                   help="also keep an exponential moving average of the weights (0: off); validation picks either")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--split-file", help="reuse the validation split saved by an earlier run (split.json)")
    p.add_argument("--target-sensitivity", type=float, default=0.95,
                   help="the decision threshold is the highest reaching this sensitivity on validation")
    p.add_argument("--select-metric", default="roc_auc", choices=["roc_auc", "loss"],
                   help="validation criterion that picks the best epoch")
    p.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"])
    p.add_argument("--decode-workers", type=int, default=os.cpu_count(), help="processes decoding the images once")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    return p.parse_args(argv)


def cosine_with_warmup(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def main(args: argparse.Namespace) -> None:
    # cpu=True when there is no GPU, so that torchrun's processes join a gloo process group
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=not torch.accelerator.is_available())
    log = accelerator.print
    set_seed(args.seed)
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
    to_model = label_mapping(label_names(splits["train"]), config.label_names)
    train_labels = [to_model[label] for label in train_set["label"]]
    try:
        model = PneumoniaClassifier(config, pretrained=not args.no_pretrained)
    except ModelLoadError as error:
        sys.exit(str(error))
    model = model.to(memory_format=torch.channels_last)

    # images are decoded and resized once (cached on disk by `datasets`); augmentation runs per batch on the device
    with accelerator.main_process_first():
        train_images, val_images = (DecodedImages(decode_once(split, config, to_model, args.decode_workers),
                                                  config.image_size) for split in (train_set, val_set))
    sampler = BalancedSampler(train_labels, seed=args.seed)
    train_loader = DataLoader(train_images, batch_size=args.batch_size, sampler=sampler, drop_last=True, collate_fn=first)
    val_loader = DataLoader(val_images, batch_size=64, collate_fn=first)
    augment = BatchAugment(config, seed=args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(int(args.warmup_epochs * steps_per_epoch), args.epochs * steps_per_epoch))
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    ema = ModelEmaV3(accelerator.unwrap_model(model), decay=args.ema_decay, use_warmup=True) if args.ema_decay else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    candidates = {"weights": model} | ({"ema": ema.module} if ema is not None else {})

    # --- resume
    state = {"epoch": -1, "best_score": None, "best_epoch": None, "history": [], "best_validation": None}
    checkpoint = latest_checkpoint(ckpt_root) if args.resume else None
    if checkpoint:
        state = load_checkpoint(accelerator, checkpoint)
        log(f"resumed from {checkpoint} (epoch {state['epoch'] + 1} done)")
    elif args.resume:
        log(f"no checkpoint in {ckpt_root}; starting from scratch")

    # --- train
    images_per_step = args.batch_size * accelerator.num_processes
    for epoch in range(state["epoch"] + 1, args.epochs):
        train_loader.set_epoch(epoch)
        augment.set_epoch(epoch, accelerator.process_index, accelerator.device)
        model.train()
        bar = tqdm(total=len(train_loader) * images_per_step, unit="img", unit_scale=True,
                   desc=f"epoch {epoch + 1}/{args.epochs}", disable=not accelerator.is_local_main_process)
        started, loss_sum = time.time(), 0.0
        for step, batch in enumerate(train_loader, 1):
            pixels = augment(batch["pixel_values"])
            with accelerator.autocast():
                loss = criterion(model(pixels), batch["label"])
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(accelerator.unwrap_model(model), step=epoch * steps_per_epoch + step)
            loss_sum += loss.item()
            bar.update(images_per_step)
            bar.set_postfix(loss=f"{loss_sum / step:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        train_time = time.time() - started

        for name, network in candidates.items():  # the trained weights, and their moving average
            labels, logits, val_loss = predict_loader(network, val_loader, accelerator, desc=f"validation ({name})")
            val = binary_metrics(labels == config.positive_index, positive_probs(logits, 1.0, config.positive_index), 0.5)
            record = {"epoch": epoch + 1, "weights": name, "train_loss": loss_sum / max(1, len(train_loader)),
                      "train_images_per_s": len(train_loader) * images_per_step / train_time,
                      "val_loss": val_loss, "val_roc_auc": val["roc_auc"], "val_sensitivity": val["recall"],
                      "val_specificity": val["specificity"], "val_accuracy": val["accuracy"]}
            state["history"].append(record)
            log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

            score = val["roc_auc"] if args.select_metric == "roc_auc" else -val_loss
            if state["best_score"] is None or score > state["best_score"]:
                state.update(best_score=score, best_epoch=epoch + 1, best_weights=name,
                             best_validation={"labels": labels.tolist(), "logits": logits.tolist()})
                if accelerator.is_main_process:
                    accelerator.unwrap_model(network).save_model_files(out)
                log(f"new best: epoch {epoch + 1}, {name} (validation {args.select_metric})")
        state["epoch"] = epoch
        state["args"] = vars(args)
        save_checkpoint(accelerator, ckpt_root, epoch, state, keep=args.keep_checkpoints)

    # --- calibration (temperature) and the operating threshold, fitted on validation for the target sensitivity
    if accelerator.is_main_process:
        best = state["best_validation"]
        at_threshold = set_operating_point(config, np.asarray(best["logits"]), np.asarray(best["labels"]),
                                           args.target_sensitivity, best_epoch=state["best_epoch"])
        config.save(out / "config.json")
        write_json_atomic(out / "training_log.json", {"command": " ".join(["python", *sys.argv]),
                                                      "args": vars(args), "history": state["history"],
                                                      "best_epoch": state["best_epoch"],
                                                      "best_weights": state.get("best_weights", "weights"),
                                                      "threshold": config.threshold,
                                                      "temperature": config.temperature,
                                                      "validation_at_threshold": at_threshold,
                                                      "num_processes": accelerator.num_processes,
                                                      "tcmalloc": tcmalloc_active()})
        log(f"best epoch {state['best_epoch']}; temperature {config.temperature:.3f}; threshold {config.threshold:.4f} "
            f"gives validation sensitivity {at_threshold['recall']:.4f}, specificity {at_threshold['specificity']:.4f}; "
            f"model saved to {out}")
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
