"""Content items of the node's TID 1500 reports, shared by both report builders.

:mod:`dicom_node.results.sr` (the Measurement Report of a result's findings)
and :mod:`dicom_node.results.sr_not_analysable` (the report that a series
could not be analysed) build their documents from these parts:

* :func:`device_observer_context`: the observation context, with the node
  running the algorithm as device observer (TID 1001, 1002, 1004);
* :func:`volumetric_roi_measurement_group`: a finding's TID 1411 group, which
  references its SEG segment and gives volume, probability and presence
  (TID 1411, 1419, 4108, 4019);
* :func:`planar_roi_location_group`: a finding's TID 1410 group with its
  location as a SCOORD3D POINT (TID 1410; PS3.3 C.18.9);
* :func:`result_statements` and :func:`qualitative_evaluations_container`:
  the TID 1500 "Qualitative Evaluations" container (rows 12-14), one coded
  statement per finding and a comment;
* ``_comprehensive_3d_sr``: the Comprehensive 3D SR instance (preliminary,
  unverified, the algorithm as Contributing Equipment).

All are importable from :mod:`dicom_node.results.sr` too.

References
----------
PS3.3 A.35.13 Comprehensive 3D SR IOD, C.17.2 SR Document General Module,
C.18.9 3D Spatial Coordinates Macro; PS3.16 TID 1500 rows 12-14, TID 1410
Planar ROI Measurements and Qualitative Evaluations, TID 1411 Volumetric ROI
Measurements and Qualitative Evaluations, TID 1419 ROI Measurements,
TID 1001/1002/1004 Observation Context, TID 4019 Algorithm Identification,
TID 4108 Tracking Identifier; CID 219, CID 240, CID 244, CID 270, CID 7150,
CID 7151; IHE AIR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicom_node.errors import ResultBuildError
from dicom_node.pipelines.base import PipelineResult, SegmentFinding
from dicom_node.results import codes
from dicom_node.results.equipment import EquipmentIdentity, contributing_equipment_for_algorithm

#: The sentence every comment ends with.
NOT_FOR_DIAGNOSTIC_USE_SENTENCE = "AI result, not for diagnostic use."


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
