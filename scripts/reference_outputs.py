"""Write a model folder's reference outputs, or say which precision runs on this machine (`modeling.runtime.reference`).

    python -m scripts.reference_outputs MODEL_DIR            # write MODEL_DIR/reference_outputs.safetensors
    python -m scripts.reference_outputs MODEL_DIR --check    # which precision this machine runs, and why

`modeling.training.finalize` writes the file for every folder it makes; this adds one to an older folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modeling.runtime.artifacts import deployment
from modeling.runtime.files import ModelLoadError, resolve_model_folder
from modeling.runtime.inference import Predictor
from modeling.runtime.reference import REFERENCE_NAME, example_images, write_reference


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--check", action="store_true", help="load the folder as the demo does and say what runs")
    args = parser.parse_args(argv)
    try:
        if args.check:
            predictor = Predictor.from_pretrained(args.model_dir)
            print(f"{predictor.precision} runs here: {predictor.reference_check}")
            return
        folder = resolve_model_folder(args.model_dir)
        predictor = Predictor.from_pretrained(folder, precision="float32")
        write_reference(predictor, example_images(), folder / REFERENCE_NAME, deployment(predictor.config, folder))
    except ModelLoadError as error:
        sys.exit(str(error))
    print(f"wrote {folder / REFERENCE_NAME}")


if __name__ == "__main__":
    main()
