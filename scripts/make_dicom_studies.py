"""Write the DICOM studies the tests and the README's SR picture use, by editing the tags of a real chest X-ray.

    python -m scripts.make_dicom_studies tests/data/formats/rsna-pneumonia-sample.dcm tests/data/dicom-studies

The source is the RSNA sample (CR, PA, adult), reduced to 256 x 256 so that the copies stay small. Two studies
of one patient and the inputs a PACS export holds besides:
  study-a/frontal.dcm         the radiograph as it is (PA, CR)
  study-a/lateral.dcm         ViewPosition LL: refused as not a frontal view
  study-b/frontal-child.dcm   PatientAge 003Y, the training population's; RLE Lossless
  study-b/ct.dcm              Modality CT: refused as not a radiograph
  study-b/multi-frame.dcm     two frames: the first is read, with a warning
  other/no-study-uid.dcm      no StudyInstanceUID: assessed, left out of the study results
  other/undecodable.dcm       JPEG Baseline whose data is not JPEG: not read, with the decoder's reason
  other/duplicate.dcm         the SOP Instance UID of study-a/frontal.dcm
UIDs derive from the names, so the script writes the same files each time.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless, generate_uid

SIZE = 256
PREFIX = "1.2.826.0.1.3680043.8.498."


def uid(*names: str) -> str:
    return generate_uid(prefix=PREFIX, entropy_srcs=["pneumonia-xray test studies", *names])


def reduced(source: Path) -> pydicom.Dataset:
    """The source with its pixels decoded, reduced to SIZE x SIZE and stored uncompressed."""
    dataset = pydicom.dcmread(source)
    pixels = Image.fromarray(dataset.pixel_array).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    dataset.decompress()  # sets an uncompressed transfer syntax and the photometric interpretation to match
    dataset.Rows = dataset.Columns = SIZE
    dataset.PixelData = np.asarray(pixels, dtype=np.uint8).tobytes()
    tags = {"PatientName": "TEST^PNEUMONIA", "PatientID": "PNX-TEST-1", "StudyDate": "20260101", "StudyTime": "120000",
            "AccessionNumber": "", "ReferringPhysicianName": ""}
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    dataset.PatientAge = "062Y"  # the source's "62" lacks the unit that the Age String VR requires
    return dataset


def variant(base: pydicom.Dataset, study: str, name: str, **tags) -> pydicom.Dataset:
    dataset = copy.deepcopy(base)
    dataset.StudyInstanceUID = uid("study", study)
    dataset.SeriesInstanceUID = uid("series", study, name)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = uid("image", study, name)
    for keyword, value in tags.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    base = reduced(args.source)

    files = {
        "study-a/frontal.dcm": variant(base, "a", "frontal", StudyID="A"),
        "study-a/lateral.dcm": variant(base, "a", "lateral", StudyID="A", ViewPosition="LL"),
        "study-b/frontal-child.dcm": variant(base, "b", "frontal-child", StudyID="B", PatientAge="003Y"),
        "study-b/ct.dcm": variant(base, "b", "ct", StudyID="B", Modality="CT"),
        "other/no-study-uid.dcm": variant(base, "c", "no-study-uid", StudyInstanceUID=None),
    }
    files["study-b/frontal-child.dcm"].compress(RLELossless)
    multi = variant(base, "b", "multi-frame", StudyID="B", NumberOfFrames=2)
    multi.PixelData = base.PixelData * 2
    files["study-b/multi-frame.dcm"] = multi
    broken = variant(base, "d", "undecodable", StudyID="D")
    broken.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    broken.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"])
    broken["PixelData"].VR = "OB"
    files["other/undecodable.dcm"] = broken
    duplicate = copy.deepcopy(files["study-a/frontal.dcm"])
    duplicate.InstanceNumber = 2
    files["other/duplicate.dcm"] = duplicate

    for name, dataset in files.items():
        path = args.output / name
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(path, enforce_file_format=True)
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
