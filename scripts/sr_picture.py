"""The README's picture of a DICOM SR: predict.py --dicom-sr on the shipped test studies, the SR of the study with a
refused CT and a multi-frame image, rendered by dcmtk's dsrdump as a radiologist's PACS tooling would show its tree.

    python -m scripts.sr_picture --output docs/dicom_sr.png   # needs Debian's dcmtk (dsrdump)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pydicom
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "tests" / "data" / "dicom-studies"
SHOWN_STUDY = "study-b"  # a child's frontal image, a CT refused from its header, a two-frame image with its warning
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")


def render(text: str, output: Path) -> None:
    font = ImageFont.truetype(str(FONT), 15) if FONT.exists() else ImageFont.load_default(size=15)
    lines = text.rstrip().splitlines()
    width = int(max(font.getlength(line) for line in lines)) + 40
    height = 20 * len(lines) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((20, 20 + 20 * i), line, fill="black", font=font)
    image.save(output, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "dicom_sr.png")
    parser.add_argument("--model", default=str(ROOT / "weights" / "pneumonia-resnet50"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        subprocess.run([sys.executable, str(ROOT / "predict.py"), str(STUDIES), "--output", str(out / "files.csv"),
                        "--dicom-sr", str(out / "sr"), "--model", args.model, "--workers", "0"], check=True)
        study = pydicom.dcmread(next((STUDIES / SHOWN_STUDY).glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
        dump = subprocess.run(["dsrdump", str(out / "sr" / f"{study}.sr.dcm")], check=True, capture_output=True,
                              text=True).stdout
    render(f"$ dsrdump {study[:24]}....sr.dcm\n\n{dump}", args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
