"""A reading worklist: one order and one wording for the demo's batch tab and for predict.py.

Highest P(pneumonia) first among the chest X-rays like the training ones; then those unlike the training
X-rays (still by P(pneumonia)), then the images that are not chest X-rays or whose DICOM header refuses them
(not a radiograph, not a frontal view), then the files that could not be read, each with its reason; ties keep
the input order. Warnings (a DICOM header's: age, body part, frames) go with the row and change nothing in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from .dicom import NOT_A_RADIOGRAPH, NOT_FRONTAL, HeaderCheck
from .ood import IN_DISTRIBUTION, NOT_AN_XRAY, UNLIKE_TRAINING

UNREADABLE = "unreadable"
_GROUP = {IN_DISTRIBUTION: 0, UNLIKE_TRAINING: 1, NOT_AN_XRAY: 2, NOT_A_RADIOGRAPH: 2, NOT_FRONTAL: 2, UNREADABLE: 3}
ASSESSED = (IN_DISTRIBUTION, UNLIKE_TRAINING)  # the verdicts that come with a P(pneumonia)


@dataclass
class Entry:
    order: int  # position in the input (0-based)
    name: str  # what the user calls the file: its name, or its path below the input root
    verdict: str  # one of modeling.runtime.ood.VERDICTS, modeling.runtime.dicom.HEADER_VERDICTS, or UNREADABLE
    probability: Optional[float] = None  # calibrated P(pneumonia); None where no assessment is given
    reason: str = ""  # why a file was not read, or not assessed
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    warnings: str = ""  # "; "-separated
    duplicate_of: str = ""  # the name of an earlier file with the same SOP Instance UID

    def decision(self, threshold: float) -> str:
        if self.probability is None:
            return ""
        return "pneumonia suspected" if self.probability >= threshold else "no pneumonia detected"

    def result(self, threshold: float) -> str:
        """The demo's wording of the row."""
        if self.verdict == UNREADABLE:
            return f"not analysed: {self.reason}"
        if self.verdict == NOT_AN_XRAY:
            return "does not look like a chest X-ray: no assessment"
        if self.verdict in (NOT_A_RADIOGRAPH, NOT_FRONTAL):
            return f"not assessed: {self.reason}"
        text = self.decision(threshold)
        return text + (" (unlike the training X-rays: may be wrong)" if self.verdict == UNLIKE_TRAINING else "")


def sort_key(entry: Entry) -> tuple:
    return (_GROUP[entry.verdict], -(entry.probability if entry.probability is not None else 0.0), entry.order)


def make_entry(order: int, name: str, probability: float, verdict: str, decimals: int = 6, **dicom: str) -> Entry:
    """An analysed image's entry: no probability is shown for what is not a chest X-ray. `dicom`: Entry's DICOM
    fields (study_uid, series_uid, sop_uid, warnings)."""
    shown = None if verdict == NOT_AN_XRAY else round(float(probability), decimals)
    return Entry(order, name, verdict, shown, **dicom)


def refused_entry(order: int, name: str, check: HeaderCheck) -> Entry:
    """The entry of a file its DICOM header refused: the header's verdict and reason, no probability."""
    return Entry(order, name, check.verdict, reason=check.reason, **header_fields(check))


def header_fields(check: Optional[HeaderCheck]) -> dict[str, str]:
    """Entry's DICOM fields from a header's check ({} for other formats)."""
    if check is None:
        return {}
    return {"study_uid": check.study_uid, "series_uid": check.series_uid, "sop_uid": check.sop_uid,
            "warnings": check.warning_text}


@dataclass
class Study:
    """The files of one DICOM study; a file without a study is a study of its own (study_uid "")."""

    study_uid: str
    entries: list[Entry] = field(default_factory=list)

    @property
    def counted(self) -> list[Entry]:
        return [e for e in self.entries if not e.duplicate_of]

    @property
    def assessed(self) -> int:
        return sum(e.verdict in ASSESSED for e in self.counted)

    @property
    def chosen(self) -> Entry:
        """The most suspicious assessed image; where none was assessed, the first in worklist order."""
        return min(self.counted or self.entries, key=sort_key)

    @property
    def warnings(self) -> str:
        """The chosen image's warnings, then a count of the study's images not assessed, with their reasons."""
        chosen, texts = self.chosen, []
        if chosen.warnings:
            texts.append(chosen.warnings)
        others = [e for e in self.entries if e is not chosen and e.verdict not in ASSESSED]
        if others and chosen.verdict in ASSESSED:
            reasons = sorted({e.reason or e.verdict for e in others})
            texts.append(f"{len(others)} other image(s) not assessed: " + "; ".join(reasons))
        return "; ".join(texts)

    def result(self, threshold: float) -> str:
        return self.chosen.result(threshold)


def studies(entries: Iterable[Entry]) -> list[Study]:
    """Entries grouped by study, in the worklist order of each study's chosen image."""
    grouped: dict[str, Study] = {}
    alone: list[Study] = []
    for entry in entries:
        if entry.study_uid:
            grouped.setdefault(entry.study_uid, Study(entry.study_uid)).entries.append(entry)
        else:
            alone.append(Study("", [entry]))
    return sorted([*grouped.values(), *alone], key=lambda study: sort_key(study.chosen))
