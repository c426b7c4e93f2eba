"""TID 1500 Measurement Report (Comprehensive 3D SR) of a pipeline result.

The report is the machine-readable twin of the SEG: for every finding one
TID 1411 Volumetric ROI Measurements group that references the SEG segment,
carries the finding's Tracking ID and UID (the same as the SEG segment's),
names the finding type and site (with laterality when known), gives the
volume in mL (UCUM), the probability when the algorithm has one, and says
explicitly whether the finding is Present or Absent (an absent finding is
reported with 0 mL and "Absent", never left out). TID 4019 algorithm
identification is on every group and measurement. The observer is the device
(the node running the algorithm); the evidence is the source series and the
SEG; the report lives in the source study.

Every report also ends with the TID 1500 "Qualitative Evaluations"
container (rows 12-14): one coded statement per finding (Present/Absent)
and a text comment, for example "No intracranial hemorrhage detected", so a
viewer that shows only the top level of an SR still tells the radiologist
the study was looked at. :func:`build_not_analysable_report` writes a TID
1500 report with only that container, "Not Evaluated" and the reason, and no
SEG (DCMTK's TID 1500 validity check accepts Imaging Measurements *or*
Qualitative Evaluations).

A finding whose ``details["sr"]`` entry gives a ``"location_mm"`` (the CTA
pipeline's suspected occlusion) gets, right after its TID 1411 group, a
TID 1410 Planar ROI group with the same Tracking ID and UID, finding type,
site and laterality whose region is a SCOORD3D POINT (DCM 111030 "Image
Region") in the source series' Frame of Reference, with Geometric purpose of
region DCM 128140 "Representative point" (:func:`planar_roi_location_group`).
highdicom rejects coordinates inside a group that references a SEG segment,
so the point needs a group of its own.

When the source series has no Frame of Reference UID, the caller passes
source headers that carry the one the volume loader derived from the Series
Instance UID (:func:`dicom_node.series.volume.source_images_for`), the same
as the SEG's: coordinates are then in that derived frame of reference. The
evidence still lists every source instance.

This module checks the inputs and assembles the Measurement Report; the
content items both reports are made of (observer context, the TID 1411 and
TID 1410 groups, the Qualitative Evaluations container, the SR instance) are
in :mod:`dicom_node.results.sr_content`, the not-analysable report in
:mod:`dicom_node.results.sr_not_analysable`. Their public names are
importable from here too.

References
----------
PS3.3 A.35.13 Comprehensive 3D SR IOD, C.18.9 3D Spatial Coordinates Macro;
PS3.16 TID 1500 Measurement Report, TID 1410 Planar ROI Measurements and
Qualitative Evaluations, TID 1411 Volumetric ROI Measurements and Qualitative
Evaluations, TID 1419 ROI Measurements, TID 1001/1002/1004 Observation
Context, TID 4019 Algorithm Identification, TID 4108 Tracking Identifier;
CID 219, CID 240, CID 7150, CID 7151; IHE AIR.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicom_node.errors import ResultBuildError
from dicom_node.pipelines.base import PipelineResult, SegmentFinding
from dicom_node.results import codes
from dicom_node.results.equipment import EquipmentIdentity, algorithm_identification
from dicom_node.results.seg import (
    NOT_FOR_DIAGNOSTIC_USE,
    content_label_for,
    replay_warnings,
)
from dicom_node.results.source import prepare_source_images, uid_or_new

# The report's content items and the not-analysable report have modules of their own
# (issue 14); their names stay importable from here.
from dicom_node.results.sr_content import (
    NOT_FOR_DIAGNOSTIC_USE_SENTENCE as NOT_FOR_DIAGNOSTIC_USE_SENTENCE,
)
from dicom_node.results.sr_content import (
    _comprehensive_3d_sr,
    device_observer_context,
    planar_roi_location_group,
    qualitative_evaluations_container,
    result_statements,
    volumetric_roi_measurement_group,
)
from dicom_node.results.sr_not_analysable import (
    build_not_analysable_report as build_not_analysable_report,
)

logger = logging.getLogger(__name__)

_SEGMENTATION_SOP_CLASS_UIDS = (
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
)


def _check_finding_values(number: int, finding: SegmentFinding) -> None:
    """Raise ResultBuildError if a finding's volume or probability is not reportable."""
    volume_ml = finding.volume_ml
    if not isinstance(volume_ml, int | float | np.floating | np.integer) or not math.isfinite(
        volume_ml
    ):
        raise ResultBuildError(f"finding {number} ({finding.label}): volume_ml is not a number")
    if volume_ml < 0:
        raise ResultBuildError(f"finding {number} ({finding.label}): negative volume_ml")
    mask_empty = not np.asarray(finding.mask).any()
    if mask_empty and volume_ml != 0:
        raise ResultBuildError(
            f"finding {number} ({finding.label}): mask is empty but volume_ml is {volume_ml}"
        )
    if mask_empty and finding.present:
        logger.warning(
            "finding %d (%s) is reported present with an empty mask", number, finding.label
        )
    probability = finding.probability
    if probability is not None and not (0.0 <= float(probability) <= 1.0):
        raise ResultBuildError(
            f"finding {number} ({finding.label}): probability {probability} is outside [0, 1]"
        )


def described_segments(segmentation: Dataset) -> list[Dataset]:
    """Return the Segment Sequence items that describe findings (segment 0 left out).

    A Label Map Segmentation made by highdicom describes the background as
    segment 0; it is not a finding.

    Parameters
    ----------
    segmentation : pydicom.Dataset
        A Segmentation or Label Map Segmentation instance.

    Returns
    -------
    list of pydicom.Dataset
        Segment Sequence items with Segment Number >= 1, in order.

    References
    ----------
    PS3.3 C.8.20.2 Segment Description Macro; Supplement 243.
    """
    return [
        item for item in segmentation.get("SegmentSequence", []) if int(item.SegmentNumber) >= 1
    ]


def _as_instances(segmentation: Dataset | Sequence[Dataset]) -> list[Dataset]:
    """Return the SEG instances of one SEG series as a list."""
    if isinstance(segmentation, Dataset):
        return [segmentation]
    instances = list(segmentation)
    if not instances:
        raise ResultBuildError("no segmentation instance given")
    if len({str(i.SeriesInstanceUID) for i in instances}) != 1:
        raise ResultBuildError("segmentation instances belong to more than one series")
    return instances


def _instance_for_finding(
    instances: list[Dataset], finding: SegmentFinding, sources: Sequence[Dataset]
) -> Dataset:
    """The SEG instance whose source slices hold the finding's first segmented slice."""
    if len(instances) == 1:
        return instances[0]
    mask = np.asarray(finding.mask)
    occupied = np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))
    if occupied.size == 0:
        return instances[0]
    wanted = str(sources[int(occupied[0])].SOPInstanceUID)
    for instance in instances:
        for series in instance.get("ReferencedSeriesSequence", []):
            uids = {str(i.ReferencedSOPInstanceUID) for i in series.ReferencedInstanceSequence}
            if wanted in uids:
                return instance
    return instances[0]


def _check_segmentation(
    segmentation: Dataset, sources: Sequence[Dataset], result: PipelineResult
) -> None:
    """Raise ResultBuildError unless the SEG belongs to these sources and findings."""
    if segmentation.get("SOPClassUID") not in _SEGMENTATION_SOP_CLASS_UIDS:
        raise ResultBuildError("segmentation is not a Segmentation Storage instance")
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
        if segmentation.get(keyword) != sources[0].get(keyword):
            raise ResultBuildError(f"segmentation and source images differ in {keyword}")
    segments = described_segments(segmentation)
    if len(segments) != len(result.findings):
        raise ResultBuildError(
            f"segmentation has {len(segments)} segment(s) for {len(result.findings)} finding(s)"
        )
    for number, (segment, finding) in enumerate(zip(segments, result.findings, strict=True), 1):
        expected = codes.finding_codes(finding.label).segment_label
        if int(segment.SegmentNumber) != number or segment.SegmentLabel != expected:
            raise ResultBuildError(
                f"segment {number} of the segmentation is not {expected!r} "
                f"(found {segment.SegmentLabel!r} number {segment.SegmentNumber})"
            )
        if not segment.get("TrackingUID"):
            raise ResultBuildError(f"segment {number} of the segmentation has no Tracking UID")


def build_measurement_report(
    source_images: Sequence[Dataset],
    segmentation: Dataset | Sequence[Dataset],
    result: PipelineResult,
    *,
    equipment: EquipmentIdentity,
    series_number: int = 9902,
    series_description: str | None = None,
    procedure_reported: Code | None = None,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 Measurement Report of a result as a Comprehensive 3D SR.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        The single-frame source images the SEG was built from (headers
        suffice). Not modified.
    segmentation : pydicom.Dataset or sequence of pydicom.Dataset
        The SEG built from the same result (:func:`build_segmentation`, or
        read back), or every instance of a split SEG series
        (:func:`build_segmentations`); segment ``k`` must describe
        ``result.findings[k - 1]`` (a label map's background segment 0 is
        skipped). Each group references the instance holding its finding.
        A finding whose ``result.details["sr"]`` entry has ``"location_mm"``
        also gets a TID 1410 group with that point
        (:func:`planar_roi_location_group`).
    result : dicom_node.pipelines.base.PipelineResult
        Findings with ``volume_ml`` in mL, ``present`` and ``probability``.
    equipment : EquipmentIdentity
        The node: General Equipment, device observer, and (with the
        algorithm) the Contributing Equipment Sequence.
    series_number : int
        Series Number (0020,0011) of the new SR series, positive.
    series_description : str or None
        Series Description (0008,103E); default
        ``"AI <content label> report (not for diagnostic use)"``.
    procedure_reported : pydicom.sr.coding.Code or None
        TID 1500 "Procedure reported"; when None, the pipeline's entry of
        :data:`dicom_node.results.codes.PROCEDURES_REPORTED` (SCT
        582101000119108 "CT angiography of head with contrast" for ``cta``),
        else LN 24725-4 "CT Head".
    sop_instance_uid : str or None
        SOP Instance UID (0008,0018); a new UID when None.
    series_instance_uid : str or None
        Series Instance UID (0020,000E); a new UID when None.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        Completion Flag COMPLETE, Verification Flag UNVERIFIED, Preliminary
        Flag PRELIMINARY; same Study Instance UID as the source; the source
        instances and the SEG in the Current Requested Procedure Evidence
        Sequence; the Qualitative Evaluations container (TID 1500 rows
        12-14) with one Present/Absent statement per finding and a comment.
        Imaging Measurements holds one TID 1411 group per finding, each
        followed by its TID 1410 location group when there is one.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the segmentation does not match the source or the findings, a
        volume is negative, not finite or non-zero for an empty mask, a
        probability is outside [0, 1], a location is not three finite
        numbers or given for an absent finding, a label has no codes, or
        highdicom rejects the content.
    dicom_node.errors.InvalidUIDError
        If ``sop_instance_uid`` or ``series_instance_uid`` is not a valid UID.

    References
    ----------
    PS3.3 A.35.13 Comprehensive 3D SR IOD; PS3.16 TID 1500, TID 1411,
    TID 1410, TID 1419, TID 1001, TID 4019, CID 100, CID 240; IHE AIR.
    """
    started = time.perf_counter()
    if not result.findings:
        raise ResultBuildError(f"pipeline {result.pipeline!r} returned no findings to report")
    sources = prepare_source_images(source_images)
    instances = _as_instances(segmentation)
    for instance in instances:
        _check_segmentation(instance, sources, result)
    for number, finding in enumerate(result.findings, start=1):
        _check_finding_values(number, finding)
    sop_instance_uid = uid_or_new("SOPInstanceUID", sop_instance_uid)
    series_instance_uid = uid_or_new("SeriesInstanceUID", series_instance_uid)
    if series_description is None:
        label = content_label_for(result.pipeline)
        series_description = f"AI {label} report {NOT_FOR_DIAGNOSTIC_USE}"

    if procedure_reported is None:
        procedure_reported = codes.PROCEDURES_REPORTED.get(result.pipeline, codes.CT_HEAD)
    extras = (result.details or {}).get("sr") or {}
    algorithm_id = algorithm_identification(result.algorithm, equipment)
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    ] = []
    for finding, segment in zip(result.findings, described_segments(instances[0]), strict=True):
        instance = _instance_for_finding(instances, finding, sources)
        groups.append(
            volumetric_roi_measurement_group(
                finding,
                segment,
                instance,
                sources[0].SeriesInstanceUID,
                algorithm_id,
                extra=extras.get(finding.label),
            )
        )
        location_mm = (extras.get(finding.label) or {}).get("location_mm")
        if location_mm is not None:
            groups.append(
                planar_roi_location_group(
                    finding,
                    segment,
                    sources[0].FrameOfReferenceUID,
                    location_mm,
                    algorithm_id,
                )
            )
    try:
        report = hd.sr.MeasurementReport(
            observation_context=device_observer_context(equipment, result),
            procedure_reported=procedure_reported,
            imaging_measurements=groups,
            title=codes.IMAGING_MEASUREMENT_REPORT,
        )
        report[0].ContentSequence.append(
            qualitative_evaluations_container(result_statements(result))
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            document = _comprehensive_3d_sr(
                [*sources, *instances],
                report[0],
                equipment,
                result.algorithm,
                series_instance_uid=series_instance_uid,
                series_number=series_number,
                sop_instance_uid=sop_instance_uid,
                series_description=series_description,
            )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise ResultBuildError(f"highdicom rejected the measurement report: {err}") from err
    replay_warnings(caught, sop_instance_uid, logger)
    logger.info(
        "built SR %s (series %s): %d measurement group(s) for SEG series %s in %.2f s",
        sop_instance_uid,
        series_instance_uid,
        len(groups),
        instances[0].SeriesInstanceUID,
        time.perf_counter() - started,
    )
    return document
