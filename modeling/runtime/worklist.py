"""A reading worklist: one order and one wording for the demo's batch tab and for predict.py.

Highest P(pneumonia) first among the chest X-rays like the training ones; then those unlike the training
X-rays (still by P(pneumonia)), then the images that are not chest X-rays, then the files that could not be
read, each with its reason; ties keep the input order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .ood import IN_DISTRIBUTION, NOT_AN_XRAY, UNLIKE_TRAINING

UNREADABLE = "unreadable"
_GROUP = {IN_DISTRIBUTION: 0, UNLIKE_TRAINING: 1, NOT_AN_XRAY: 2, UNREADABLE: 3}


@dataclass
class Entry:
    order: int  # position in the input (0-based)
    name: str  # what the user calls the file: its name, or its path below the input root
    verdict: str  # one of modeling.runtime.ood.VERDICTS, or UNREADABLE
    probability: Optional[float] = None  # calibrated P(pneumonia); None where no assessment is given
    reason: str = ""  # why a file was not read
    study_uid: str = ""
    series_uid: str = ""

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
        text = self.decision(threshold)
        return text + (" (unlike the training X-rays: may be wrong)" if self.verdict == UNLIKE_TRAINING else "")


def sort_key(entry: Entry) -> tuple:
    return (_GROUP[entry.verdict], -(entry.probability if entry.probability is not None else 0.0), entry.order)


def make_entry(order: int, name: str, probability: float, verdict: str, decimals: int = 6, **dicom: str) -> Entry:
    """An analysed image's entry: no probability is shown for what is not a chest X-ray."""
    shown = None if verdict == NOT_AN_XRAY else round(float(probability), decimals)
    return Entry(order, name, verdict, shown, **dicom)
