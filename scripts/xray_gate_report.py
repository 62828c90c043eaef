"""The chest X-ray gate measured on images it never learnt from, with a contact sheet of its mistakes.

    python -m scripts.xray_gate_report --model weights/pneumonia-resnet50 --data ../shared/data/chest_xray \
        --formats ../shared/data/formats --output-dir weights/pneumonia-resnet50/xray_gate_eval

Groups, each read the way the demo reads an upload (`read_image`, then the network's input):
- the non-X-ray evaluation set (`python -m scripts.non_xray`): "no assessment" counts images the
  reader refuses and images the gate calls "not a chest X-ray";
- the test split's X-rays, the adult X-rays of --formats (DICOM, PNG, JPEG), and the validation
  X-rays changed as users change them (`modeling.training.robustness.XRAY_CHANGES`: letterbox, padding,
  rotation, blur, exposure, contrast, burnt-in text): "refused" counts X-rays the gate calls "not a
  chest X-ray";
- the development photos (Gradio's samples, colour and greyscale), for reference.
Only the gate decides "not a chest X-ray" in a model folder that has one, so only the gate runs here.
The output folder (written whole, beside the gate it measures) holds `report.json` (every count, every
mistake and the command) and `mistakes.png`, every evaluation image the gate gets wrong, in both
directions.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from modeling.gate_training.non_xray import assemble, development_photos
from modeling.runtime.files import SPLIT_NAME, folder_written_whole, resolve_model_folder, write_json_atomic
from modeling.runtime.inference import Predictor
from modeling.runtime.preprocessing import load_rgb
from modeling.training.data import load_data, saved_split
from modeling.training.evaluation import read_folder
from modeling.training.robustness import XRAY_CHANGES

SHEET_COLUMNS = 8
REPORT_FILE, SHEET_FILE = "report.json", "mistakes.png"


THUMBNAIL = 160  # mistakes are kept at this size for the contact sheet


def split_images(split, change=None) -> Iterator[tuple[str, Image.Image]]:
    """(file name, image) of each record, decoded (and changed) one at a time: full-size X-rays are large."""
    for i, record in enumerate(split["image"]):
        image = load_rgb(record["bytes"] or record["path"])
        yield Path(record["path"] or f"image-{i}").name, change(image) if change else image


def measure(predictor: Predictor, name: str, kind: str, images: Iterable[tuple[str, Image.Image]], count: int,
            refused: list[str], threshold: float) -> tuple[dict, list]:
    """One group's entry for the report, and its mistakes [(group, name, thumbnail, logit)]."""
    logits, mistakes, names = [], [], []
    for image_name, image in tqdm(images, total=count, desc=name, leave=False):
        logit = float(predictor.xray_gate_logits(predictor.tensor(image))[0])
        logits.append(logit)
        names.append(image_name)
        if (logit < threshold) == (kind == "X-ray"):
            mistakes.append((name, image_name, image.convert("RGB").resize((THUMBNAIL, THUMBNAIL)), logit))
    logits = np.array(logits)
    not_xray = int((logits < threshold).sum())
    entry = {"kind": kind, "images": len(logits) + len(refused), "refused_by_reader": refused,
             "called_not_a_chest_xray": not_xray,
             "logit_quantiles": dict(zip(("min", "p01", "median", "p99", "max"),
                                         np.quantile(logits, [0, 0.01, 0.5, 0.99, 1]).round(3).tolist())),
             "wrong": {image_name: round(logit, 3) for _, image_name, _, logit in mistakes}}
    if kind == "X-ray":
        entry["refused_rate"] = not_xray / max(1, len(logits))
    else:
        entry["no_assessment"] = len(refused) + not_xray
        entry["no_assessment_rate"] = entry["no_assessment"] / max(1, entry["images"])
    return entry, mistakes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model folder with a chest X-ray gate")
    parser.add_argument("--data", required=True, help="the imagefolder the model was trained on (test split, validation)")
    parser.add_argument("--formats", type=Path, help="a folder of other chest X-rays (DICOM, PNG, JPEG)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where to write report.json and mistakes.png")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    predictor = Predictor.from_pretrained(args.model, device="cpu")
    if predictor.xray_gate is None:
        sys.exit(f"{args.model} has no chest X-ray gate; add one: python -m scripts.finalize MODEL_DIR --add-xray-gate DIR")
    threshold = predictor.config.xray_gate["threshold"]
    splits = load_data(args.data)
    validation = saved_split(splits, resolve_model_folder(args.model) / SPLIT_NAME, "validation")

    # (group, what the gate should say, (name, image) pairs, how many, names refused by the reader)
    work_dir = tempfile.TemporaryDirectory()
    non_xray_dir = Path(work_dir.name) / "non-xray"
    assemble(non_xray_dir)
    names, images, refused = read_folder(non_xray_dir)
    non_xrays = list(zip(names, images))
    groups = [("non-X-ray evaluation set", "not an X-ray", non_xrays, len(non_xrays), refused),
              ("test X-rays", "X-ray", split_images(splits["test"]), len(splits["test"]), [])]
    if args.formats:
        names, images, refused = read_folder(args.formats)
        groups.append(("adult X-rays (formats)", "X-ray", list(zip(names, images)), len(images), refused))
    groups += [(f"validation X-rays, {change_name}", "X-ray", split_images(validation, change), len(validation), [])
               for change_name, change in XRAY_CHANGES.items()]
    photos = development_photos()
    groups += [("development photos, colour", "not an X-ray", photos.items(), len(photos), []),
               ("development photos, greyscale", "not an X-ray",
                ((name, image.convert("L").convert("RGB")) for name, image in photos.items()), len(photos), [])]

    report = {"command": shlex.join(["python", "-m", "scripts.xray_gate_report", *sys.argv[1:]]),
              "model": args.model, "threshold": threshold, "groups": {}}
    mistakes = []
    for name, kind, images, count, refused in groups:
        entry, wrong = measure(predictor, name, kind, images, count, refused, threshold)
        report["groups"][name] = entry
        if not name.startswith("development"):
            mistakes += wrong
        print(f"{name}: " + (f"{entry['called_not_a_chest_xray']}/{entry['images']} called not a chest X-ray"
                             if kind == "X-ray" else f"{entry['no_assessment']}/{entry['images']} get no assessment"),
              flush=True)
    work_dir.cleanup()
    report["mistakes"] = len(mistakes)
    with folder_written_whole(args.output_dir) as folder:
        contact_sheet(mistakes, threshold, folder / SHEET_FILE)
        write_json_atomic(folder / REPORT_FILE, report)
    print(f"wrote {REPORT_FILE} and {SHEET_FILE} to {args.output_dir}")


def contact_sheet(mistakes: list[tuple[str, str, Image.Image, float]], threshold: float, output: Path) -> None:
    """Every evaluation image the gate gets wrong, captioned with its group, name and logit."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = max(1, -(-len(mistakes) // SHEET_COLUMNS))
    columns = min(SHEET_COLUMNS, max(1, len(mistakes)))
    fig, axes = plt.subplots(rows, columns, figsize=(max(6.0, 2.2 * columns + 0.5), 2.5 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (group, name, image, logit) in zip(axes.flat, mistakes):
        ax.imshow(image)
        verdict = "assessed" if logit >= threshold else "refused"
        ax.set_title(f"{group}\n{name[:28]}\n{verdict}, logit {logit:.2f}", fontsize=6)
    if not mistakes:
        axes[0, 0].text(0.5, 0.5, "no evaluation image\nwrong in either direction", ha="center", va="center")
    fig.suptitle(f"The chest X-ray gate's mistakes on the evaluation images\n(threshold: logit {threshold:.2f})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
