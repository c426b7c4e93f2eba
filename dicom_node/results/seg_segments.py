"""Segment descriptions of the node's SEG: tracking, anatomic region, coded type.

* :func:`with_tracking`: a Tracking ID and Tracking UID on every finding,
  shared by every SEG variant and SR of a job (TID 4108);
* :func:`anatomic_region_item`: the Anatomic Region Sequence item of a
  segment, with the laterality as Anatomic Region Modifier;
* :func:`segment_descriptions`: one Segment Description per finding, with
  its coded category and type, algorithm identification, tracking, region
  and recommended display colour (CIELab).

Split from :mod:`dicom_node.results.seg` (issue 14), which builds the
Segmentation and still exports every name defined here.

References
----------
PS3.3 C.8.20.2 Segment Description Macro; PS3.3 10.5 General Anatomy
Mandatory Macro; PS3.16 TID 4108 Tracking Identifier; PS3.16 CID 2, CID 4,
CID 244, CID 7150, CID 7151, CID 7162.
"""

from __future__ import annotations

import dataclasses

import highdicom as hd

from dicom_node.pipelines.base import PipelineResult, SegmentFinding
from dicom_node.results import codes


def with_tracking(result: PipelineResult) -> PipelineResult:
    """Return the result with a Tracking ID and Tracking UID on every finding.

    Findings that already carry them keep theirs; the others get
    ``"<ABBR>-<n>"`` (n = segment number) and a new UID. Building every object
    of a job from the returned result gives one finding the same Tracking UID
    in every SEG variant and SR.

    Parameters
    ----------
    result : dicom_node.pipelines.base.PipelineResult
        The pipeline output (not modified).

    Returns
    -------
    dicom_node.pipelines.base.PipelineResult
        A copy whose findings all have ``tracking_id`` and ``tracking_uid``.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If a label has no codes.

    References
    ----------
    PS3.16 TID 4108 Tracking Identifier; PS3.3 C.8.20.2 (Tracking ID, Tracking UID).
    """
    findings = []
    for number, finding in enumerate(result.findings, start=1):
        abbreviation = codes.finding_codes(finding.label).abbreviation
        findings.append(
            dataclasses.replace(
                finding,
                tracking_id=finding.tracking_id or f"{abbreviation}-{number}",
                tracking_uid=finding.tracking_uid or str(hd.UID()),
            )
        )
    return dataclasses.replace(result, findings=findings)


def anatomic_region_item(finding: SegmentFinding) -> hd.sr.CodedConcept:
    """Return the Anatomic Region Sequence item of a finding's segment.

    Parameters
    ----------
    finding : dicom_node.pipelines.base.SegmentFinding
        Its ``finding_site`` (if set) replaces the label's default region; its
        ``laterality`` (if set) becomes the Anatomic Region Modifier Sequence.

    Returns
    -------
    highdicom.sr.CodedConcept
        The region code, with AnatomicRegionModifierSequence when lateral.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the label, site or laterality is unknown.

    References
    ----------
    PS3.3 10.5 General Anatomy Mandatory Macro (Anatomic Region Modifier
    Sequence); PS3.16 CID 2, CID 4, CID 244.
    """
    finding_codes = codes.finding_codes(finding.label)
    region = (
        codes.anatomic_site_code(finding.finding_site)
        if finding.finding_site
        else finding_codes.anatomic_region
    )
    item = hd.sr.CodedConcept(region.value, region.scheme_designator, region.meaning)
    if finding.laterality:
        side = codes.laterality_code(finding.laterality)
        item.AnatomicRegionModifierSequence = [
            hd.sr.CodedConcept(side.value, side.scheme_designator, side.meaning)
        ]
    return item


def segment_descriptions(
    result: PipelineResult, algorithm_identification: hd.AlgorithmIdentificationSequence
) -> list[hd.seg.SegmentDescription]:
    """Return the Segment Descriptions of a result, segment ``k`` for ``result.findings[k - 1]``.

    Parameters
    ----------
    result : dicom_node.pipelines.base.PipelineResult
        The findings; one without a Tracking ID or UID gets ``"<ABBR>-<n>"``
        and a new UID (see :func:`with_tracking`).
    algorithm_identification : highdicom.AlgorithmIdentificationSequence
        The Segmentation Algorithm Identification Sequence, the same on every segment.

    Returns
    -------
    list of highdicom.seg.SegmentDescription
        One per finding, in order (Segment Number 1, 2, ...).

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If a finding label, site or laterality has no codes.

    References
    ----------
    PS3.3 C.8.20.2 Segment Description Macro; PS3.16 CID 7150, CID 7151,
    CID 4, CID 7162.
    """
    descriptions = []
    for number, finding in enumerate(result.findings, start=1):
        finding_codes = codes.finding_codes(finding.label)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=finding_codes.segment_label,
                segmented_property_category=finding_codes.segmented_property_category,
                segmented_property_type=finding_codes.segmented_property_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_identification,
                tracking_uid=finding.tracking_uid or str(hd.UID()),
                tracking_id=finding.tracking_id or f"{finding_codes.abbreviation}-{number}",
                anatomic_regions=[anatomic_region_item(finding)],
                display_color=hd.color.CIELabColor.from_rgb(*finding_codes.recommended_display_rgb),
            )
        )
    return descriptions
