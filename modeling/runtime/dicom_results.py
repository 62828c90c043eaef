"""Results where radiologists read them: a DICOM Structured Report per study and a Secondary Capture per heat map.

The IHE AI Results profile puts an AI finding into the study as an SR and a map as a Secondary Capture. Both are
written with highdicom, in the study of their source images (patient and study modules copied from them).

The SR follows TID 1500 (Measurement Report): one measurement group (TID 1501) per image of the study, which
references that image by its SOP Instance UID and holds
- the finding: pneumonia suspected, or not detected, at the model's threshold;
- the calibrated P(pneumonia) and the threshold, as measurements, with the threshold rule, the model's name and
  version and its weights' SHA-256 as the algorithm's identification (TID 4019);
- the verdict on the input (a chest X-ray like the training ones, unlike them, not a chest X-ray, or refused by its
  header: not a radiograph, not a frontal view) and the header's warnings, as qualitative evaluations.
An image refused or unreadable has a group with its verdict and no finding. The device observer is the model; the
report is PRELIMINARY and UNVERIFIED (a machine result, not a diagnosis), and its series says so.
Codes that no standard vocabulary has are in the local scheme `99PNXR` (DICOM PS3.16 8.2 allows "99" schemes).
UIDs are derived from the study, the images and the weights, so a rerun writes the same objects again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .dicom import (
    AGE_WARNING,
    BODY_PART_WARNING,
    MULTI_FRAME_WARNING,
    NO_STUDY_WARNING,
    NOT_A_RADIOGRAPH,
    NOT_FRONTAL,
    check_header,
)
from .files import file_written_whole
from .ood import IN_DISTRIBUTION, NOT_AN_XRAY, UNLIKE_TRAINING
from .worklist import UNREADABLE

SCHEME = "99PNXR"
MANUFACTURER = "pneumonia-xray (open-source research software)"
SR_SERIES_NUMBER = 9701
SC_SERIES_NUMBER = 9702
SERIES_DESCRIPTION = "AI result, not a diagnosis: {name}"
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root, under which generate_uid derives UIDs

_VERDICT_MEANINGS = {
    IN_DISTRIBUTION: ("XR-LIKE-TRAINING", "Chest X-ray like the training X-rays"),
    UNLIKE_TRAINING: ("XR-UNLIKE-TRAIN", "Chest X-ray unlike the training X-rays"),
    NOT_AN_XRAY: ("NOT-CHEST-XRAY", "Not a chest X-ray: not assessed"),
    NOT_A_RADIOGRAPH: ("NOT-RADIOGRAPH", "Not a radiograph (DICOM header): not assessed"),
    NOT_FRONTAL: ("NOT-FRONTAL", "Not a frontal view (DICOM header): not assessed"),
    UNREADABLE: ("UNREADABLE", "Pixel data could not be read: not assessed"),
}
_WARNING_MEANINGS = {
    AGE_WARNING: ("AGE-OUTSIDE", "Patient age outside the training population (1 to 5 years)"),
    BODY_PART_WARNING: ("NOT-CHEST", "Body part examined is not the chest"),
    MULTI_FRAME_WARNING: ("MULTI-FRAME", "Multi-frame image: the first frame was read"),
    NO_STUDY_WARNING: ("NO-STUDY-UID", "No Study Instance UID"),
}


@dataclass(frozen=True)
class ModelIdentity:
    """What an SR says about the model that wrote it."""

    name: str  # the model folder's name or Hub id
    version: str  # the package's version
    weights_sha256: str
    threshold: float
    threshold_rule: str

    @property
    def device_uid(self) -> str:
        from pydicom.uid import generate_uid
        return generate_uid(prefix=UID_PREFIX, entropy_srcs=["device", self.name, self.weights_sha256])


@dataclass(frozen=True)
class ImageResult:
    """One image of a study as predict.py assessed it."""

    header: object  # the pydicom Dataset of its header (pixels not needed)
    verdict: str
    probability: Optional[float]  # calibrated P(pneumonia); None where not assessed


def _code(value: str, meaning: str, scheme: str = SCHEME):
    from highdicom.sr import CodedConcept
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=list(parts))


def _group(result: ImageResult, identity: ModelIdentity, index: int):
    """TID 1501 for one image."""
    from highdicom.sr import (
        AlgorithmIdentification,
        Measurement,
        MeasurementsAndQualitativeEvaluations,
        QualitativeEvaluation,
        SourceImageForMeasurementGroup,
        TrackingIdentifier,
    )
    header = result.header
    algorithm = AlgorithmIdentification(
        name=identity.name, version=identity.version,
        parameters=[f"weights sha256 {identity.weights_sha256}", f"threshold {identity.threshold:.4f}",
                    f"threshold rule: {identity.threshold_rule} (chosen on validation; the model card says why)"])
    unit = _code("1", "no units", "UCUM")
    measurements, evaluations = [], []
    if result.probability is not None:
        measurements = [
            Measurement(name=_code("P-PNEUMONIA", "Calibrated probability of pneumonia"),
                        value=float(result.probability), unit=unit),
            Measurement(name=_code("THRESHOLD", "Decision threshold"), value=float(identity.threshold), unit=unit),
        ]
        suspected = result.probability >= identity.threshold
        evaluations.append(QualitativeEvaluation(
            name=_code("233604007", "Pneumonia", "SCT"),
            value=_code("SUSPECTED", "Pneumonia suspected") if suspected
            else _code("NOT-DETECTED", "No pneumonia detected")))
    evaluations.append(QualitativeEvaluation(name=_code("INPUT-VERDICT", "Input assessment"),
                                             value=_code(*_VERDICT_MEANINGS[result.verdict])))
    for warning in check_header(header).warnings:
        evaluations.append(QualitativeEvaluation(name=_code("INPUT-WARNING", "Input warning"),
                                                 value=_code(*_WARNING_MEANINGS[warning.kind])))
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=_uid("group", header.SOPInstanceUID, identity.weights_sha256),
                                               identifier=f"image {index}"),
        finding_type=_code("233604007", "Pneumonia", "SCT"),
        algorithm_id=algorithm,
        source_images=[SourceImageForMeasurementGroup(header.SOPClassUID, header.SOPInstanceUID)],
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
    )


def study_report(results: Sequence[ImageResult], identity: ModelIdentity):
    """The SR of one study (every result's header must carry the same StudyInstanceUID)."""
    from highdicom.sr import (
        ComprehensiveSR,
        DeviceObserverIdentifyingAttributes,
        MeasurementReport,
        ObservationContext,
        ObserverContext,
    )
    from pydicom.sr.codedict import codes
    headers = [result.header for result in results]
    observer = ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=identity.device_uid, name=identity.name, manufacturer_name=MANUFACTURER, model_name=identity.name,
            serial_number=identity.weights_sha256[:16]))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=_code("399208008", "Plain chest X-ray", "SCT"),
        imaging_measurements=[_group(result, identity, i) for i, result in enumerate(results, 1)],
    )
    study = headers[0].StudyInstanceUID
    sop_uids = sorted(header.SOPInstanceUID for header in headers)
    sr = ComprehensiveSR(
        evidence=headers, content=report[0],
        series_instance_uid=_uid("sr-series", study, identity.weights_sha256), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid("sr", study, identity.weights_sha256, *sop_uids), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=SERIES_DESCRIPTION.format(name=identity.name)[:64],
    )
    sr.SoftwareVersions = identity.version
    sr.ManufacturerModelName = identity.name[:64]
    sr.CodingSchemeIdentificationSequence = [_local_scheme()]
    return sr


def _local_scheme():
    from pydicom import Dataset
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "pneumonia-xray result codes"
    scheme.CodingSchemeResponsibleOrganization = "pneumonia-xray project"
    return scheme


def heatmap_capture(header, overlay: np.ndarray, identity: ModelIdentity):
    """A Secondary Capture of `overlay` (H, W, 3 uint8) in the study of `header`, referencing that image."""
    from highdicom.sc import SCImage
    from pydicom import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    sc = SCImage.from_ref_dataset(
        ref_dataset=header, pixel_array=np.ascontiguousarray(overlay, dtype=np.uint8), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT",
        series_instance_uid=_uid("sc-series", header.StudyInstanceUID, identity.weights_sha256),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=_uid("sc", header.SOPInstanceUID, identity.weights_sha256), instance_number=1,
        manufacturer=MANUFACTURER, patient_orientation=_orientation(header),
        series_description=SERIES_DESCRIPTION.format(name=identity.name)[:64],
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = header.SOPClassUID
    reference.ReferencedSOPInstanceUID = header.SOPInstanceUID
    sc.SourceImageSequence = DicomSequence([reference])
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = f"Grad-CAM heat map of {identity.name} over the source image"
    sc.BurnedInAnnotation = "NO"
    sc.ImageLaterality = "U"  # the chest is unpaired
    return sc


def _orientation(header) -> tuple[str, str]:
    """The source's PatientOrientation, else a frontal chest view's as displayed (columns to the patient's left,
    rows to the feet)."""
    value = header.get("PatientOrientation")
    return (str(value[0]), str(value[1])) if value is not None and len(value) == 2 else ("L", "F")


def write_atomic(dataset, path: Path) -> None:
    """Write a DICOM file whole or not at all: no half-written object is ever left at `path`."""
    with file_written_whole(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
