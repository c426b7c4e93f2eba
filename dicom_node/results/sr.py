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
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
from dicom_node.results import codes
from dicom_node.results.equipment import (
    EquipmentIdentity,
    algorithm_identification,
    contributing_equipment_for_algorithm,
)
from dicom_node.results.seg import (
    NOT_FOR_DIAGNOSTIC_USE,
    content_label_for,
    replay_warnings,
)
from dicom_node.results.source import prepare_source_images, uid_or_new

# TID 1204 default language: English (RFC 5646 "en-US"), as highdicom's MeasurementReport.
_DEFAULT_LANGUAGE = hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")

#: The sentence every comment ends with.
NOT_FOR_DIAGNOSTIC_USE_SENTENCE = "AI result, not for diagnostic use."

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


def device_observer_context(
    equipment: EquipmentIdentity, result: PipelineResult
) -> hd.sr.ObservationContext:
    """Build the observation context: the node running the algorithm observed.

    Parameters
    ----------
    equipment : EquipmentIdentity
        The node; gives the Device Observer UID, manufacturer, model name and
        serial number.
    result : dicom_node.pipelines.base.PipelineResult
        Its algorithm name becomes the Device Observer Name.

    Returns
    -------
    highdicom.sr.ObservationContext
        TID 1001 content with a TID 1002 device observer (TID 1004).

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If highdicom rejects a value.

    References
    ----------
    PS3.16 TID 1001 Observation Context, TID 1002 Observer Context,
    TID 1004 Device Observer Identifying Attributes, CID 270.
    """
    try:
        return hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                # highdicom types it CodedConcept; its CodeContentItem takes a Code too
                observer_type=codes.DEVICE_OBSERVER,  # type: ignore[arg-type]
                observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                    uid=equipment.device_observer_uid,
                    name=result.algorithm.name,
                    manufacturer_name=equipment.manufacturer,
                    model_name=equipment.manufacturer_model_name,
                    serial_number=equipment.device_serial_number,
                ),
            )
        )
    except (TypeError, ValueError) as err:
        raise ResultBuildError(f"cannot build the observation context: {err}") from err


def _finding_group_items(
    finding: SegmentFinding, segment: Dataset, algorithm_id: hd.sr.AlgorithmIdentification
) -> dict:
    """The rows a finding's TID 1410 and TID 1411 groups share, as constructor arguments.

    Tracking identifier and UID of the SEG segment (TID 4108), finding
    category and type, finding site (``finding.finding_site`` or the label's
    site) with ``finding.laterality`` as its Laterality modifier, and the
    algorithm identification (TID 4019).

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the label, site or laterality has no codes.
    """
    finding_codes = codes.finding_codes(finding.label)
    site = (
        codes.anatomic_site_code(finding.finding_site)
        if finding.finding_site
        else finding_codes.finding_site
    )
    laterality = codes.laterality_code(finding.laterality) if finding.laterality else None
    return {
        "tracking_identifier": hd.sr.TrackingIdentifier(
            uid=segment.TrackingUID, identifier=segment.get("TrackingID")
        ),
        "finding_type": finding_codes.finding_type,
        "finding_category": finding_codes.segmented_property_category,
        "finding_sites": [hd.sr.FindingSite(anatomic_location=site, laterality=laterality)],
        "algorithm_id": algorithm_id,
    }


def volumetric_roi_measurement_group(
    finding: SegmentFinding,
    segment: Dataset,
    segmentation: Dataset,
    source_series_instance_uid: str,
    algorithm_id: hd.sr.AlgorithmIdentification,
    extra: dict | None = None,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """Build the TID 1411 group of one finding, referencing its SEG segment.

    Parameters
    ----------
    finding : dicom_node.pipelines.base.SegmentFinding
        The finding: ``volume_ml`` in mL (1 mL = 1000 mm^3), ``present``,
        optional ``probability`` in [0, 1].
    segment : pydicom.Dataset
        Its item of the SEG Segment Sequence (number, Tracking ID and UID).
    segmentation : pydicom.Dataset
        The SEG instance the segment belongs to.
    source_series_instance_uid : str
        Series Instance UID of the source images (Source Series for
        Segmentation).
    algorithm_id : highdicom.sr.AlgorithmIdentification
        TID 4019 content for the group and its measurements.
    extra : dict or None
        The finding's entry of ``PipelineResult.details["sr"]``:
        ``"measurements"``, a list of ``{"name": key, "value": float}`` with
        ``key`` in :data:`dicom_node.results.codes.EXTRA_MEASUREMENTS`
        (for example the LVO ``"volume ratio"``, UCUM ``{ratio}``). Its
        ``"location_mm"`` is not written here (highdicom 0.28 rejects
        coordinates in a TID 1411 group whose region is a SEG segment) but in
        a TID 1410 group of its own (:func:`planar_roi_location_group`).

    Returns
    -------
    highdicom.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        Tracking identifier, Referenced Segment, finding category, type and
        site (``finding.finding_site`` or the label's site, with
        ``finding.laterality`` as its Laterality modifier), Volume (mL),
        Probability if given, and a presence evaluation whose name is the
        finding and whose value is Present or Absent.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the finding label, site or laterality has no codes or highdicom
        rejects a value.

    References
    ----------
    PS3.16 TID 1411, TID 1419, TID 4108, CID 240, CID 244, CID 7150, CID 7151.
    """
    finding_codes = codes.finding_codes(finding.label)
    measurements = [
        hd.sr.Measurement(
            name=codes.VOLUME,
            value=float(finding.volume_ml),
            unit=codes.MILLILITER,
            algorithm_id=algorithm_id,
        )
    ]
    extra = extra or {}
    for item in extra.get("measurements", []):
        if item.get("name") not in codes.EXTRA_MEASUREMENTS or not math.isfinite(
            float(item.get("value", math.nan))
        ):
            raise ResultBuildError(f"finding {finding.label!r}: bad extra measurement {item!r}")
        name, unit = codes.EXTRA_MEASUREMENTS[item["name"]]
        measurements.append(
            hd.sr.Measurement(
                name=name, value=float(item["value"]), unit=unit, algorithm_id=algorithm_id
            )
        )
    # Only a present finding carries its probability: "Absent, probability 0.14" reads as a
    # hedge. The series score of a negative series stays in the job's details.
    if finding.probability is not None and finding.present:
        measurements.append(
            hd.sr.Measurement(
                name=codes.PROBABILITY,
                value=float(finding.probability),
                unit=codes.NO_UNITS,
                algorithm_id=algorithm_id,
            )
        )
    presence: Code = codes.PRESENT if finding.present else codes.ABSENT
    try:
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            **_finding_group_items(finding, segment, algorithm_id),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=segmentation.SOPClassUID,
                sop_instance_uid=segmentation.SOPInstanceUID,
                segment_number=int(segment.SegmentNumber),
                source_series=hd.sr.SourceSeriesForSegmentation(source_series_instance_uid),
            ),
            measurements=measurements,
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(name=finding_codes.finding_type, value=presence)
            ],
        )
    except (TypeError, ValueError) as err:
        raise ResultBuildError(f"cannot build the TID 1411 group: {err}") from err


def planar_roi_location_group(
    finding: SegmentFinding,
    segment: Dataset,
    frame_of_reference_uid: str,
    location_mm: Sequence[float],
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """Build the TID 1410 group that gives a finding's location as a 3D point.

    Parameters
    ----------
    finding : dicom_node.pipelines.base.SegmentFinding
        The finding located; must be present. Its label gives the finding
        type and category, ``finding_site`` (or the label's site) and
        ``laterality`` the finding site.
    segment : pydicom.Dataset
        Its item of the SEG Segment Sequence: the group carries the same
        Tracking ID and Tracking UID, so that a reader links the point to the
        TID 1411 group and the SEG segment of the same finding.
    frame_of_reference_uid : str
        Frame of Reference UID of the source series, in which the point lies.
    location_mm : sequence of float
        The point (x, y, z) in patient coordinates (LPS, mm) of that Frame of
        Reference, shape (3,).
    algorithm_id : highdicom.sr.AlgorithmIdentification
        TID 4019 content of the group.

    Returns
    -------
    highdicom.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        Tracking identifier, finding category, type and site (with
        laterality), Geometric purpose of region DCM 128140 "Representative
        point", algorithm identification, and an Image Region (DCM 111030)
        SCOORD3D with Graphic Type POINT, the location as Graphic Data and
        the Referenced Frame of Reference UID. No measurement.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the finding is absent, the location is not three finite numbers,
        the Frame of Reference UID is empty, a code is missing, or highdicom
        rejects a value.

    References
    ----------
    PS3.3 C.18.9 3D Spatial Coordinates Macro; PS3.16 TID 1410, TID 4108,
    TID 4019, CID 219, CID 244.
    """
    if not finding.present:
        raise ResultBuildError(f"finding {finding.label!r}: a location is given but it is absent")
    try:
        point = np.asarray(location_mm, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ResultBuildError(f"finding {finding.label!r}: bad location {location_mm!r}") from err
    if point.shape != (3,) or not np.isfinite(point).all():
        raise ResultBuildError(f"finding {finding.label!r}: bad location {location_mm!r}")
    if not frame_of_reference_uid:
        raise ResultBuildError("the source images have no Frame of Reference UID")
    try:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            **_finding_group_items(finding, segment, algorithm_id),
            referenced_region=hd.sr.ImageRegion3D(
                graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                graphic_data=point.reshape(1, 3),
                frame_of_reference_uid=str(frame_of_reference_uid),
            ),
            geometric_purpose=codes.REPRESENTATIVE_POINT,
        )
    except (TypeError, ValueError) as err:
        raise ResultBuildError(f"cannot build the TID 1410 location group: {err}") from err


def _comprehensive_3d_sr(
    evidence,
    content,
    equipment,
    algorithm,
    *,
    series_instance_uid: str,
    series_number: int,
    sop_instance_uid: str,
    series_description: str,
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR instance both report builders emit (preliminary, unverified).

    Contributing Equipment names the algorithm (IHE AIR); highdicom's own
    ValueError/TypeError propagate to the caller, which turns them into
    :class:`~dicom_node.errors.ResultBuildError`.

    References
    ----------
    PS3.3 A.35.13 Comprehensive 3D SR IOD; PS3.3 C.17.2 SR Document General Module.
    """
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=content,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        **equipment.general_equipment_kwargs(),
        series_description=series_description,
        is_complete=True,
        is_final=False,
        is_verified=False,
        contributing_equipment=[contributing_equipment_for_algorithm(equipment, algorithm)],
    )


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


def result_statements(result: PipelineResult) -> list[tuple[Code, Code, str]]:
    """Return the report-level statements of a result: (finding, value, sentence).

    Parameters
    ----------
    result : dicom_node.pipelines.base.PipelineResult
        Findings with ``present``, ``volume_ml`` and ``laterality``.

    Returns
    -------
    list of tuple
        One per distinct finding type: its code, SCT Present or Absent
        (CID 240), and a sentence such as ``"Intracranial hemorrhage detected:
        8.46 mL (left)."`` or ``"No intracranial hemorrhage detected."``.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If a label has no codes.
    """
    statements: dict[str, tuple[Code, Code, list[str]]] = {}
    for finding in result.findings:
        finding_codes = codes.finding_codes(finding.label)
        key = finding_codes.segment_label
        code, value, parts = statements.get(key, (finding_codes.finding_type, codes.ABSENT, []))
        if finding.present:
            value = codes.PRESENT
            side = f" ({finding.laterality})" if finding.laterality else ""
            parts.append(f"{float(finding.volume_ml):.2f} mL{side}")
        statements[key] = (code, value, parts)
    out = []
    for label, (code, value, parts) in statements.items():
        if value == codes.PRESENT:
            sentence = f"{label} detected: {', '.join(parts)}."
        else:
            sentence = f"No {label[0].lower()}{label[1:]} detected."
        out.append((code, value, sentence))
    return out


def qualitative_evaluations_container(
    statements: Sequence[tuple[Code, Code, str]], *, comment: str | None = None
) -> hd.sr.ContainerContentItem:
    """Build the TID 1500 "Qualitative Evaluations" container of a report.

    Parameters
    ----------
    statements : sequence of tuple
        (concept name, coded value, sentence) per statement (row 13 CODE);
        the sentences are joined into the row 14 TEXT comment.
    comment : str or None
        Comment text replacing the joined sentences.

    Returns
    -------
    highdicom.sr.ContainerContentItem
        CONTAINER (C0034375, UMLS, "Qualitative Evaluations"), CONTAINS one
        CODE item per statement and one TEXT (121106, DCM, "Comment") ending
        with "AI result, not for diagnostic use."

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If highdicom rejects a value (for example a comment over the UT limit).

    References
    ----------
    PS3.16 TID 1500 rows 12-14; CID 240.
    """
    text = comment if comment is not None else " ".join(s for _, _, s in statements)
    text = f"{text} {NOT_FOR_DIAGNOSTIC_USE_SENTENCE}".strip()
    try:
        container = hd.sr.ContainerContentItem(
            name=codes.QUALITATIVE_EVALUATIONS,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        container.ContentSequence = hd.sr.ContentSequence()
        for name, value, _ in statements:
            container.ContentSequence.append(
                hd.sr.CodeContentItem(
                    name=name,
                    value=value,
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            )
        container.ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.COMMENT,
                value=text,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    except (TypeError, ValueError) as err:
        raise ResultBuildError(
            f"cannot build the Qualitative Evaluations container: {err}"
        ) from err
    return container


def build_not_analysable_report(
    source_images: Sequence[Dataset],
    *,
    pipeline: str,
    algorithm: AlgorithmIdentity,
    finding_labels: Sequence[str],
    reason: str,
    equipment: EquipmentIdentity,
    series_number: int = 9902,
    series_description: str | None = None,
    procedure_reported: Code | None = None,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 report that says a series could not be analysed, and why.

    There is no SEG and no measurement: the root container holds the
    language, the device observer context, the procedure reported and the
    Qualitative Evaluations container (rows 12-14) with, for each finding
    the pipeline looks for, the statement "<finding>: Not Evaluated" (SCT
    373121007) and the comment "Not analysable: <reason>.". TID 1500 makes
    Imaging Measurements (row 6) conditional; DCMTK's implementation of TID
    1500 accepts a report with Qualitative Evaluations instead.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        The series' images (headers suffice), listed as evidence; not modified.
    pipeline : str
        Pipeline name (for the series description), for example ``"ich"``.
    algorithm : dicom_node.pipelines.base.AlgorithmIdentity
        The algorithm that would have run (device observer name and
        Contributing Equipment).
    finding_labels : sequence of str
        Labels of the findings the pipeline reports (for example
        ``["intracranial hemorrhage"]``).
    reason : str
        Why the series is not analysable, in words a radiologist understands
        (no patient identifiers).
    equipment : EquipmentIdentity
        The node.
    series_number : int
        Series Number of the SR series.
    series_description : str or None
        Series Description; default ``"AI <label> report (not for diagnostic use)"``.
    procedure_reported : pydicom.sr.coding.Code or None
        TID 1500 "Procedure reported"; when None, as :func:`build_measurement_report`.
    sop_instance_uid, series_instance_uid : str or None
        UIDs; new when None.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        COMPLETE, UNVERIFIED, PRELIMINARY; in the source study.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the reason is empty, a label has no codes, the source images are not
        one series, or highdicom rejects the content.
    dicom_node.errors.InvalidUIDError
        If a given UID is not valid.

    References
    ----------
    PS3.3 A.35.13 Comprehensive 3D SR IOD; PS3.16 TID 1500 (rows 1-5, 12-14),
    TID 1001, TID 1204; IHE AIR.
    """
    started = time.perf_counter()
    reason = " ".join(str(reason).split())
    if not reason:
        raise ResultBuildError("a not-analysable report needs a reason")
    if not finding_labels:
        raise ResultBuildError("a not-analysable report needs the findings it could not evaluate")
    sources = prepare_source_images(source_images, require_geometry=False)
    sop_instance_uid = uid_or_new("SOPInstanceUID", sop_instance_uid)
    series_instance_uid = uid_or_new("SeriesInstanceUID", series_instance_uid)
    if series_description is None:
        series_description = f"AI {content_label_for(pipeline)} report {NOT_FOR_DIAGNOSTIC_USE}"
    seen: dict[str, Code] = {}
    for label in finding_labels:
        code = codes.finding_codes(label).finding_type
        seen.setdefault(code.value, code)
    statements = [(code, codes.NOT_EVALUATED, "") for code in seen.values()]
    stub = PipelineResult(pipeline, algorithm, [])
    if procedure_reported is None:
        procedure_reported = codes.PROCEDURES_REPORTED.get(pipeline, codes.CT_HEAD)
    try:
        root = hd.sr.ContainerContentItem(name=codes.IMAGING_MEASUREMENT_REPORT, template_id="1500")
        root.ContentSequence = hd.sr.ContentSequence()
        root.ContentSequence.extend(hd.sr.LanguageOfContentItemAndDescendants(_DEFAULT_LANGUAGE))
        root.ContentSequence.extend(device_observer_context(equipment, stub))
        root.ContentSequence.append(
            hd.sr.CodeContentItem(
                name=hd.sr.CodedConcept("121058", "DCM", "Procedure reported"),
                value=procedure_reported,
                relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
            )
        )
        root.ContentSequence.append(
            qualitative_evaluations_container(statements, comment=f"Not analysable: {reason}.")
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            document = _comprehensive_3d_sr(
                sources,
                root,
                equipment,
                algorithm,
                series_instance_uid=series_instance_uid,
                series_number=series_number,
                sop_instance_uid=sop_instance_uid,
                series_description=series_description,
            )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise ResultBuildError(f"highdicom rejected the not-analysable report: {err}") from err
    replay_warnings(caught, sop_instance_uid, logger)
    logger.info(
        "built not-analysable SR %s (series %s) in %.2f s",
        sop_instance_uid,
        series_instance_uid,
        time.perf_counter() - started,
    )
    return document
