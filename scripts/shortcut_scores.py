"""The command line of `modeling.analysis.shortcuts`, whose docstring says what it does:
`python -m scripts.shortcut_scores --help`."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from modeling.analysis.shortcuts import (
    contact_sheet,
    gradcam_figure,
    shortcut_scores,
    training_summary,
    validation_images,
)
from modeling.runtime.files import (
    SPLIT_NAME,
    folder_written_whole,
    resolve_model_folder,
    source_network_folder,
    write_json_atomic,
)
from modeling.runtime.inference import Predictor
from modeling.runtime.model import PneumoniaClassifier
import modeling.analysis.shortcuts as library


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=library.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a model folder (with split.json) or a training run's folder")
    p.add_argument("--data", required=True)
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--precision", choices=["float32", "bfloat16"],
                   help="run the network in this precision, the image alone (default: as the folder deploys it)")
    p.add_argument("--title", help="the picture's title (default: the model folder's name)")
    p.add_argument("--no-gradcam", action="store_true", help="only the black-out and crop scores")
    p.add_argument("--contact-sheet", action="store_true", help="also draw the lung fields of 48 validation images")
    args = p.parse_args(argv)
    folder = resolve_model_folder(args.model)
    split_file, name, training = folder / SPLIT_NAME, folder.name, training_summary(folder)
    if source_network_folder(folder) != folder:  # a training run: its network, the image alone
        network = PneumoniaClassifier.from_pretrained(source_network_folder(folder))
        predictor = Predictor(network, precision=args.precision or "float32", views=[])
    else:
        predictor = Predictor.from_pretrained(folder)
        if args.precision:
            predictor = Predictor(predictor.model, precision=args.precision, views=[])
    config = predictor.config
    images, positive = validation_images(split_file, args.data, config.label_names, config.positive_label)
    scores, details = shortcut_scores(predictor, images, positive, gradcam=not args.no_gradcam)
    scores["model"] = str(args.model)
    scores["title"] = args.title or name
    scores["training"] = training
    with folder_written_whole(args.output_dir) as out:
        write_json_atomic(out / "shortcuts.json", scores)
        if not args.no_gradcam:
            gradcam_figure(images, positive, details, args.title or name, out / "shortcuts.png")
        if args.contact_sheet:
            order = np.r_[np.flatnonzero(~positive)[:24], np.flatnonzero(positive)[:24]]
            contact_sheet([images[i] for i in order], config, out / "lung_fields.png")
    print({k: v for k, v in scores.items() if k != "model"})


if __name__ == "__main__":
    main()
