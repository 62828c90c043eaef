"""Choose the "not a chest X-ray" rule on a development set kept apart from the set that measures it.

    python docs/ood_development.py --model weights/pneumonia-resnet50 --data ../shared/data/chest_xray \
        --output docs/ood_development.png

The evaluation set (`python -m modeling.non_xray`: scikit-image, matplotlib and scikit-learn samples,
generated images) and the adult X-rays of ../shared/data/formats measure the gate; nothing here reads
them. The development set is:
- photos: Gradio's bundled sample photos (a different package from every evaluation source), each
  whole and as four random crops, in colour and in greyscale (X-rays are grey, so grey photos are
  the hard case);
- chest X-rays that must stay chest X-rays: every sixth image of the model's validation split, changed
  the ways users change them (letterbox, padding on all sides, rotation, blur, exposure, burnt-in text).

For each candidate set of stages (the mid-level stages the bundle uses; those plus the thumbnail) and
each factor (an image is no chest X-ray when one of the stages puts it beyond factor x the "unlike"
threshold), it counts the photos caught and the changed X-rays wrongly called "not a chest X-ray", and
draws both against the factor. A .json beside the picture keeps every count and the command.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling.data import load_data, saved_split  # noqa: E402
from modeling.files import SPLIT_NAME, resolve_model_folder  # noqa: E402
from modeling.inference import Predictor  # noqa: E402
from modeling.ood import NOT_AN_XRAY_FACTOR  # noqa: E402
from modeling.preprocessing import load_rgb  # noqa: E402
from modeling.robustness import blur, brightness, contrast, letterbox, rotate  # noqa: E402

FACTORS = np.round(np.arange(1.5, 8.01, 0.25), 2)
CROPS_PER_PHOTO = 4


def gradio_photos(seed: int = 0) -> dict[str, Image.Image]:
    """Gradio's sample photos (at least 128 px a side), whole and as random crops keeping 40-80% of each side."""
    import gradio
    folders = [Path(gradio.__file__).parent / "media_assets" / "images", Path(gradio.__file__).parent / "test_data"]
    photos: dict[str, Image.Image] = {}
    for path in sorted(p for folder in folders for p in folder.glob("*.jp*g")):
        with Image.open(path) as image:
            if min(image.size) >= 128 and not path.stem.endswith("-copy"):
                photos[path.stem] = image.convert("RGB")
    rng = np.random.default_rng(seed)
    for name, image in list(photos.items()):
        for i in range(CROPS_PER_PHOTO):
            w, h = (int(side * rng.uniform(0.4, 0.8)) for side in image.size)
            x, y = rng.integers(0, image.width - w + 1), rng.integers(0, image.height - h + 1)
            photos[f"{name}-crop{i}"] = image.crop((int(x), int(y), int(x + w), int(y + h)))
    return photos


def padded(scale: float):
    """Zoom out onto black on all sides (the training augmentation's padding, here stronger)."""
    def pad(image: Image.Image) -> Image.Image:
        canvas = Image.new("RGB", (round(image.width * scale), round(image.height * scale)))
        canvas.paste(image, ((canvas.width - image.width) // 2, (canvas.height - image.height) // 2))
        return canvas
    return pad


def burnt_in_text(image: Image.Image) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for line in range(4):
        draw.text((5, 5 + 12 * line), f"R   PORTABLE AP   2019-03-0{line}", fill=(255, 255, 255))
    return image


XRAY_CHANGES = {"letterbox 16:9": letterbox(16 / 9), "padded x1.4": padded(1.4), "rotate 15°": rotate(15),
                "blur r=3": blur(3), "brightness x0.6": brightness(0.6), "contrast x1.5": contrast(1.5),
                "burnt-in text": burnt_in_text}


def stage_scores(predictor: Predictor, images: list[Image.Image]) -> np.ndarray:
    """(N, stages) scaled scores of the model's detector, for the image as is (as the app computes them)."""
    features = [predictor.logits_and_features(predictor.tensor(image), views=False)[1].cpu().numpy()
                for image in images]
    return predictor.ood.stage_scores(np.concatenate(features))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="weights/pneumonia-resnet50")
    parser.add_argument("--data", required=True, help="the imagefolder the model was trained on")
    parser.add_argument("--output", type=Path, required=True, help="the picture (.png); the .json goes beside it")
    args = parser.parse_args()

    predictor = Predictor.from_pretrained(args.model, device="cpu")
    settings = predictor.config.ood
    validation = saved_split(load_data(args.data), resolve_model_folder(args.model) / SPLIT_NAME, "validation")
    xrays = [load_rgb(record["bytes"] or record["path"]) for record in validation.select(range(0, len(validation), 6))["image"]]
    photos = gradio_photos()
    groups = {"photos, colour": list(photos.values()),
              "photos, greyscale": [image.convert("L").convert("RGB") for image in photos.values()]}
    groups |= {f"X-ray, {name}": [change(image) for image in xrays] for name, change in XRAY_CHANGES.items()}
    scores = {}
    for name, images in groups.items():
        scores[name] = stage_scores(predictor, images)
        print(f"{name}: {len(images)} images", flush=True)

    stage_names = settings["stages"]
    mid_level = list(settings["not_xray_stages"])
    thumbnail = [i for i, name in enumerate(stage_names) if name.startswith("thumbnail")]
    candidates = {"mid-level stages": mid_level, "mid-level stages + thumbnail": mid_level + thumbnail}
    sweep = {}
    for candidate, stages in candidates.items():
        sweep[candidate] = {name: [float((s[:, stages].max(axis=1) > factor * settings["threshold"]).mean())
                                   for factor in FACTORS] for name, s in scores.items()}
    report = {
        "command": " ".join(["python", "docs/ood_development.py", *map(shlex.quote, sys.argv[1:])]),
        "model": str(args.model), "stages": stage_names, "unlike_threshold": settings["threshold"],
        "factor_in_use": NOT_AN_XRAY_FACTOR, "factors": FACTORS.tolist(),
        "images": {name: len(s) for name, s in scores.items()},
        "stage_medians": {name: dict(zip(stage_names, np.median(s, axis=0).round(3).tolist()))
                          for name, s in scores.items()},
        "unlike_rate": {name: float((s.max(axis=1) > settings["threshold"]).mean()) for name, s in scores.items()},
        "not_a_chest_xray_rate": sweep, "candidates": {k: [stage_names[i] for i in v] for k, v in candidates.items()}}
    plot(report, args.output)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    for candidate, rates in sweep.items():
        at = list(FACTORS).index(NOT_AN_XRAY_FACTOR)
        print(f"{candidate} at factor {NOT_AN_XRAY_FACTOR}: "
              + ", ".join(f"{name} {r[at]:.0%}" for name, r in rates.items()))
    print(f"wrote {args.output} and {args.output.with_suffix('.json').name}")


def plot(report: dict, output: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(report["not_a_chest_xray_rate"]), figsize=(12, 4.5), sharey=True)
    for ax, (candidate, rates) in zip(np.atleast_1d(axes), report["not_a_chest_xray_rate"].items()):
        for name, rate in rates.items():
            photo = name.startswith("photos")
            ax.plot(report["factors"], rate, lw=2.5 if photo else 1, ls="-" if photo else "--",
                    label=f"{name} ({report['images'][name]})")
        ax.axvline(report["factor_in_use"], color="grey", lw=0.8)
        ax.set(title=candidate, xlabel="factor x the 'unlike' threshold", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("share called 'not a chest X-ray'")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("Development set: photos should be caught (solid), changed chest X-rays should not (dashed)")
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
