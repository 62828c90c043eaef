"""What a DICOM header says before any pixel is read: its identifiers, and whether the image is one the model reads.

The header knows what the pixels would only guess. A Modality other than CR, DX or DR is not a radiograph, and a
lateral ViewPosition is not the frontal view the network was trained on: both are refused (`HeaderCheck.verdict`)
with their reason. A PatientAge outside the training population (children aged one to five), a BodyPartExamined
other than CHEST and a multi-frame image are warnings: the image is read, and the warning goes with its result.
An absent tag checks nothing. The demo, `Predictor.assess_file` and predict.py (its worklist and DICOM SR) all
read these from here.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Optional

NOT_A_RADIOGRAPH = "not a radiograph"
NOT_FRONTAL = "not a frontal view"
HEADER_VERDICTS = (NOT_A_RADIOGRAPH, NOT_FRONTAL)  # refused from the header: no pixel is read
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR")
LATERAL_VIEWS = ("LL", "RL", "LATERAL")
CHEST_BODY_PARTS = ("CHEST",)
TRAINING_AGE_YEARS = (1.0, 6.0)  # Kermany's children were aged one to five: [1, 6) years

# warning kinds; the SR codes them (modeling.runtime.dicom_results)
AGE_WARNING = "age"
BODY_PART_WARNING = "body part"
MULTI_FRAME_WARNING = "multi-frame"
NO_STUDY_WARNING = "no study"

_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}


@dataclass(frozen=True)
class HeaderWarning:
    kind: str  # one of the *_WARNING names
    text: str  # for people: the tag's value and why it matters


@dataclass(frozen=True)
class HeaderCheck:
    """A DICOM file's identifiers and what its header says about reading it."""

    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    sop_class_uid: str = ""
    verdict: Optional[str] = None  # NOT_A_RADIOGRAPH or NOT_FRONTAL: refused; None: read the pixels
    reason: str = ""  # why it was refused
    warnings: tuple[HeaderWarning, ...] = ()

    @property
    def warning_text(self) -> str:
        return "; ".join(w.text for w in self.warnings)


def is_dicom(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


def read_header(data: bytes) -> Optional[HeaderCheck]:
    """The check of a DICOM file's header (None for other formats, and for a header that cannot be read: reading
    the image then says why)."""
    if not is_dicom(data):
        return None
    import pydicom
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - pydicom raises many types for a damaged header
        return None
    return check_header(header)


def _text(header, keyword: str) -> str:
    try:
        value = header.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed value reads as absent, never as an error
        return ""
    return "" if value is None else str(value).strip()


def patient_age_years(value: str) -> Optional[float]:
    """A DICOM Age String (nnnD, nnnW, nnnM, nnnY) in years; digits alone are read as years, as some writers
    store them; None for what is not an age."""
    match = _AGE.match(value)
    if not match:
        return None
    return int(match.group(1)) * _DAYS_PER_UNIT[(match.group(2) or "Y").upper()] / 365.25


def check_header(header) -> HeaderCheck:
    """The verdict and warnings of a pydicom Dataset (read with or without its pixels)."""
    modality = _text(header, "Modality").upper()
    view = _text(header, "ViewPosition").upper()
    verdict, reason = None, ""
    if modality and modality not in RADIOGRAPH_MODALITIES:
        verdict, reason = NOT_A_RADIOGRAPH, f"Modality is {modality}, not a radiograph (CR, DX or DR)"
    elif view in LATERAL_VIEWS:
        verdict, reason = NOT_FRONTAL, f"ViewPosition is {view}, a lateral view; the model reads frontal views"

    warnings = []
    age = _text(header, "PatientAge")
    years = patient_age_years(age) if age else None
    low, high = TRAINING_AGE_YEARS
    if years is not None and not low <= years < high:
        warnings.append(HeaderWarning(AGE_WARNING, f"PatientAge {age} is outside the training population "
                                              "(children aged 1 to 5): the result may not hold"))
    body_part = _text(header, "BodyPartExamined").upper()
    if body_part and body_part not in CHEST_BODY_PARTS:
        warnings.append(HeaderWarning(BODY_PART_WARNING, f"BodyPartExamined is {body_part}, not CHEST"))
    frames = _text(header, "NumberOfFrames")
    if frames.isdigit() and int(frames) > 1:
        warnings.append(HeaderWarning(MULTI_FRAME_WARNING, f"{frames} frames: the first one was read"))
    study_uid = _text(header, "StudyInstanceUID")
    if not study_uid:
        warnings.append(HeaderWarning(NO_STUDY_WARNING, "no StudyInstanceUID: left out of the study results"))
    return HeaderCheck(study_uid=study_uid, series_uid=_text(header, "SeriesInstanceUID"),
                       sop_uid=_text(header, "SOPInstanceUID"), sop_class_uid=_text(header, "SOPClassUID"),
                       verdict=verdict, reason=reason, warnings=tuple(warnings))
