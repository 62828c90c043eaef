"""The command line of `modeling.gate_training.train`, whose docstring says what it does:
`python -m scripts.train_xray_gate --help`."""
from __future__ import annotations

from modeling.runtime.host import use_tcmalloc

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported (see modeling/runtime/host.py)

import argparse  # noqa: E402 - after the allocator is chosen
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from modeling.gate_training.negatives import MissingSources, fingerprint
from modeling.gate_training.non_xray import assemble, development_photos
from modeling.gate_training.train import (
    GATE_INPUT,
    GATE_RECIPE,
    GREY_SHARE,
    HELD_OUT_SHARE,
    INVERTED_SHARE,
    REFUSED_XRAYS_AT_MOST,
    augmented,
    gate_logits,
    gather_negatives,
    greyscale,
    negative_pool,
    stored,
    to_bf16_and_back,
    xray_pixels,
)
from modeling.runtime.artifacts import git_commit, split_fingerprint_of
from modeling.runtime.files import folder_written_whole, write_json_atomic
from modeling.runtime.gate import GATE_ARCHITECTURE, GATE_FILE, GATE_REPORT_FILE, GATE_SIZE, GATE_SOURCES_FILE, XrayGate
from modeling.training.augment import BatchAugment
from modeling.training.data import DataLoadError, load_data
import modeling.gate_training.train as library


def main() -> None:
    parser = argparse.ArgumentParser(description=library.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the imagefolder or Hub dataset the model was trained on")
    parser.add_argument("--split-file", type=Path, required=True, help="the model's split.json")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None,
                        help="use at most this many X-rays and negative sources (a quick check of the pipeline)")
    args = parser.parse_args()
    started = time.time()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    # the data: X-rays of the split, negatives from the packages and generators, the evaluation set's fingerprints
    try:
        splits = load_data(args.data)
    except DataLoadError as error:
        sys.exit(str(error))
    positives, validation_xrays = (xray_pixels(splits, args.split_file, side) for side in ("train", "validation"))
    with tempfile.TemporaryDirectory() as folder:
        evaluation = [fingerprint(Image.open(path)) for path in assemble(Path(folder) / "non-xray")]
    try:
        sources, summary = gather_negatives(rng, evaluation)
    except MissingSources as error:
        sys.exit(str(error))
    if args.limit:
        positives, validation_xrays = positives[:args.limit], validation_xrays[:args.limit // 4]
        sources = [sources[i] for i in rng.permutation(len(sources))[:args.limit]]
    held_out = set(rng.permutation(len(sources))[:max(1, int(len(sources) * HELD_OUT_SHARE))].tolist())
    train_sources = [item for i, item in enumerate(sources) if i not in held_out]
    negatives = negative_pool(train_sources, rng)
    held_out_sources = [sources[i] for i in sorted(held_out)]
    held_out_negatives = np.stack([stored(item["image"]) for item in held_out_sources])
    development = {name: stored(image) for name, image in development_photos().items()}
    print(f"{len(positives)} X-rays and {len(negatives)} negatives ({len(train_sources)} sources) to train on; "
          f"{len(validation_xrays)} validation X-rays and {len(held_out_negatives)} held-out sources to check on",
          flush=True)

    # training: each epoch every X-ray once and as many negatives, drawn afresh
    gate = XrayGate().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(gate.parameters(), lr=args.lr, weight_decay=0.05)
    steps_per_epoch = math.ceil(2 * len(positives) / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(  # one epoch of linear warm-up, then a cosine to zero
        optimizer, lambda step: min((step + 1) / steps_per_epoch,
                                    0.5 * (1 + math.cos(math.pi * step / total_steps))))
    augment = BatchAugment(GATE_INPUT, seed=args.seed, recipe=GATE_RECIPE)
    generator = torch.Generator().manual_seed(args.seed)
    history = []
    for epoch in range(args.epochs):
        gate.train()
        augment.set_epoch(epoch)
        chosen = rng.choice(len(negatives), size=len(positives), replace=len(negatives) < len(positives))
        order = rng.permutation(2 * len(positives))
        total, seen = 0.0, 0
        for step in tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False):
            index = order[step * args.batch_size:(step + 1) * args.batch_size]
            is_xray = index < len(positives)
            batch = torch.from_numpy(np.concatenate([positives[index[is_xray]],
                                                     negatives[chosen[index[~is_xray] - len(positives)]]]))
            n_xrays = int(is_xray.sum())
            labels = torch.cat([torch.ones(n_xrays), torch.zeros(len(index) - n_xrays)])
            batch[n_xrays:] = greyscale(batch[n_xrays:], generator)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = gate(augmented(batch, augment, generator))
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, seen = total + loss.item() * len(labels), seen + len(labels)
        history.append({"epoch": epoch + 1, "train_loss": total / seen, "seconds": round(time.time() - started)})
        print(json.dumps(history[-1]), flush=True)

    # the threshold, on the weights as saved
    gate.eval()
    to_bf16_and_back(gate)
    check = BatchAugment(GATE_INPUT, seed=args.seed + 1, recipe=GATE_RECIPE)
    xrays_as_is = gate_logits(gate, validation_xrays)
    check_generator = torch.Generator().manual_seed(args.seed + 1)
    xrays_augmented = np.concatenate([gate_logits(gate, validation_xrays, check, check_generator) for _ in range(3)])
    threshold = float(min(0.0, np.quantile(np.concatenate([xrays_as_is, xrays_augmented]), REFUSED_XRAYS_AT_MOST)))
    held_out_logits = gate_logits(gate, held_out_negatives)
    development_logits = gate_logits(gate, np.stack(list(development.values())))
    grey = greyscale(torch.from_numpy(np.stack(list(development.values()))), torch.Generator(), share=1.0)
    report = {
        "command": shlex.join(["python", "-m", "scripts.train_xray_gate", *sys.argv[1:]]), "commit": git_commit(),
        "architecture": GATE_ARCHITECTURE, "input_size": GATE_SIZE, "epochs": args.epochs, "seed": args.seed,
        "augmentation": {"recipe": GATE_RECIPE.to_dict(), "described": GATE_RECIPE.describe(),
                         "greyscale": f"{GREY_SHARE:.0%} of the negatives",
                         "inverted": f"{INVERTED_SHARE:.0%} of the images of both classes"},
        "threshold": threshold,
        "threshold_rule": f"logit 0 (P = 0.5), lowered so that at most {REFUSED_XRAYS_AT_MOST:.1%} of the validation "
                          "X-rays, as they are and under 3 draws of the augmentation, are refused",
        "sources": summary, "train": {"xrays": len(positives), "negative_sources": len(train_sources),
                                      "negative_images": len(negatives)},
        "validation": {
            "xrays": len(validation_xrays),
            "xrays_refused_as_is": float((xrays_as_is < threshold).mean()),
            "xrays_refused_augmented": float((xrays_augmented < threshold).mean()),
            "held_out_negative_sources": len(held_out_negatives),
            "held_out_negatives_refused": float((held_out_logits < threshold).mean()),
            "held_out_negatives_missed": [f"{sources[i]['source']}: {Path(sources[i]['name']).name}"
                                          for i, logit in zip(sorted(held_out), held_out_logits) if logit >= threshold],
            "development_photos": len(development),
            "development_photos_refused": float((development_logits < threshold).mean()),
            "development_photos_refused_greyscale": float((gate_logits(gate, grey.numpy()) < threshold).mean()),
        },
        "history": history, "hours_on_cpu": round((time.time() - started) / 3600, 3),
    }
    fitted_for = {"split_sha256": split_fingerprint_of(args.split_file)}
    with folder_written_whole(args.output_dir) as folder:
        gate.save(folder / GATE_FILE, fitted_for)
        write_json_atomic(folder / GATE_SOURCES_FILE, [{"source": item["source"], "name": item["name"], **item["fingerprint"]}
                                                  for item in sources])
        write_json_atomic(folder / GATE_REPORT_FILE, report)
    print(json.dumps(report["validation"], indent=2))
    print(f"threshold {threshold:.3f}; wrote {args.output_dir}")


if __name__ == "__main__":
    main()
