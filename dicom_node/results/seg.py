"""DICOM Segmentation (SEG) of a pipeline result.

One BINARY Segmentation instance per pipeline run, one segment per
:class:`~dicom_node.pipelines.base.SegmentFinding`, in the source study and
frame of reference, in a new series. Every frame references its source CT
instance (highdicom writes the Derivation Image Sequence per frame) and the
Referenced Series Sequence lists the whole source series, which OHIF needs to
attach the SEG to its series.

A finding with an empty mask still yields a valid segment (the "absent"
result): all frames are encoded when every mask is empty, so the object never
has zero frames.

References
----------
PS3.3 A.51 Segmentation IOD; PS3.3 C.8.20 Segmentation Image Module and
C.8.20.2 Segment Description Macro; PS3.3 C.12.2 Common Instance Reference
Module; PS3.16 CID 7150, CID 7151, CID 4, CID 7162; IHE AIR.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from dicom_node.errors import ResultBuildError
from dicom_node.pipelines.base import PipelineResult
from dicom_node.results import codes
from dicom_node.results.equipment import (
    EquipmentIdentity,
    algorithm_identification_sequence,
    contributing_equipment_for_algorithm,
)
from dicom_node.results.source import prepare_source_images, uid_or_new

logger = logging.getLogger(__name__)

#: Suffix of every result series description: these objects are not a diagnosis.
NOT_FOR_DIAGNOSTIC_USE = "(not for diagnostic use)"

_PERSON_NAME_WARNING = re.compile(r"person name", re.IGNORECASE)
_VALUE_WARNING = re.compile(r"invalid value|value of argument", re.IGNORECASE)
_QUOTED = re.compile(r"(['\"]).*?\1")


def content_label_for(pipeline: str) -> str:
    """Derive a Content Label (CS, at most 16 characters) from a pipeline name.

    Parameters
    ----------
    pipeline : str
        Pipeline name, for example ``"ich"``.

    Returns
    -------
    str
        Upper-case label made of ``A-Z``, ``0-9`` and ``_``, for example
        ``"ICH"``; ``"SEG"`` if nothing is left.

    References
    ----------
    PS3.3 C.10.9 Content Identification Macro; PS3.5 6.2 (CS).
    """
    label = re.sub(r"[^A-Z0-9_]", "_", pipeline.upper()).strip("_")[:16]
    return label or "SEG"


def replay_warnings(
    caught: Sequence[warnings.WarningMessage],
    sop_instance_uid: str,
    log: logging.Logger = logger,
) -> None:
    """Log warnings raised by highdicom while building, without patient data.

    Person-name warnings quote the patient's name: only their kind is
    logged, at INFO; quoted values in invalid-value warnings are redacted.

    Parameters
    ----------
    caught : sequence of warnings.WarningMessage
        Warnings recorded with ``warnings.catch_warnings(record=True)``.
    sop_instance_uid : str
        SOP Instance UID of the object being built, for context.
    log : logging.Logger
        Logger of the calling builder.
    """
    for item in caught:
        message = str(item.message)
        level = logging.WARNING
        if _PERSON_NAME_WARNING.search(message):
            # A property of the source data, repeated on every build: not ours to fix.
            message = "a person name in the source is in a dubious form (value not logged)"
            level = logging.INFO
        elif _VALUE_WARNING.search(message):
            message = _QUOTED.sub(r"\1<redacted>\1", message)
        log.log(level, "building %s: %s: %s", sop_instance_uid, item.category.__name__, message)


def _content_description(result: PipelineResult) -> str:
    """Return the Content Description (LO): the algorithm and the use warning."""
    text = f"{result.algorithm.name} {result.algorithm.version} {NOT_FOR_DIAGNOSTIC_USE}"
    return text if len(text) <= 64 else f"AI result {NOT_FOR_DIAGNOSTIC_USE}"


def _stack_masks(result: PipelineResult, shape: tuple[int, int, int]) -> np.ndarray:
    """Return the findings' masks as one (slices, rows, columns, segments) uint8 array."""
    masks = []
    for number, finding in enumerate(result.findings, start=1):
        mask = np.asarray(finding.mask)
        if mask.shape != shape:
            raise ResultBuildError(
                f"mask of segment {number} ({finding.label}) has shape {mask.shape}, "
                f"expected (slices, rows, columns) = {shape}"
            )
        if mask.dtype != bool:
            if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
                raise ResultBuildError(
                    f"mask of segment {number} ({finding.label}) is not binary (dtype {mask.dtype})"
                )
        masks.append(mask.astype(np.uint8, copy=False))
    return np.stack(masks, axis=-1)


def _ensure_referenced_series(
    segmentation: hd.seg.Segmentation, sources: Sequence[Dataset]
) -> None:
    """Add the Referenced Series Sequence if highdicom did not write it."""
    if "ReferencedSeriesSequence" in segmentation:
        return
    series_item = Dataset()
    series_item.SeriesInstanceUID = sources[0].SeriesInstanceUID
    instances = []
    for source in sources:
        instance_item = Dataset()
        instance_item.ReferencedSOPClassUID = source.SOPClassUID
        instance_item.ReferencedSOPInstanceUID = source.SOPInstanceUID
        instances.append(instance_item)
    series_item.ReferencedInstanceSequence = instances
    segmentation.ReferencedSeriesSequence = [series_item]
    logger.debug("added Referenced Series Sequence to %s", segmentation.SOPInstanceUID)


def build_segmentation(
    source_images: Sequence[Dataset],
    result: PipelineResult,
    *,
    equipment: EquipmentIdentity,
    series_number: int = 9901,
    series_description: str | None = None,
    content_label: str | None = None,
    omit_empty_frames: bool = False,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> hd.seg.Segmentation:
    """Build a BINARY Segmentation with one segment per finding.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        Single-frame CT images of one series, in the slice order of the
        masks; headers suffice (pixel data need not be loaded). Not modified.
    result : dicom_node.pipelines.base.PipelineResult
        Findings; each ``mask`` is a bool array of shape (slices, rows,
        columns) with ``mask[i]`` lying on ``source_images[i]``. Segment
        ``k`` (1-based) is ``result.findings[k - 1]``.
    equipment : EquipmentIdentity
        The node, written as General Equipment; the algorithm is added to the
        Contributing Equipment Sequence.
    series_number : int
        Series Number (0020,0011) of the new SEG series, positive.
    series_description : str or None
        Series Description (0008,103E); default
        ``"AI <content label> SEG (not for diagnostic use)"``.
    content_label : str or None
        Content Label (0070,0080), CS; default derived from the pipeline name
        (``"ICH"`` for ``"ich"``).
    omit_empty_frames : bool
        Leave out frames without any segmented pixel. Ignored (all frames are
        kept) when every mask is empty, so an absent finding still yields a
        valid SEG.
    sop_instance_uid : str or None
        SOP Instance UID (0008,0018); a new UID when None.
    series_instance_uid : str or None
        Series Instance UID (0020,000E); a new UID when None.

    Returns
    -------
    highdicom.seg.Segmentation
        The SEG instance: same Study Instance UID and Frame of Reference UID
        as the source, Instance Number 1, Explicit VR Little Endian.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If there are no findings, a finding label has no codes, a mask does
        not match the source grid or is not binary, the source images are not
        one series on one grid, or highdicom rejects the input.
    dicom_node.errors.InvalidUIDError
        If ``sop_instance_uid`` or ``series_instance_uid`` is not a valid UID.

    References
    ----------
    PS3.3 A.51 Segmentation IOD; C.8.20 Segmentation Image Module; C.8.20.2
    Segment Description Macro; PS3.16 CID 7150, CID 7151, CID 4, CID 7162;
    IHE AIR.
    """
    started = time.perf_counter()
    if not result.findings:
        raise ResultBuildError(f"pipeline {result.pipeline!r} returned no findings to encode")
    sources = prepare_source_images(source_images)
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    pixel_array = _stack_masks(result, shape)
    sop_instance_uid = uid_or_new("SOPInstanceUID", sop_instance_uid)
    series_instance_uid = uid_or_new("SeriesInstanceUID", series_instance_uid)
    label = content_label if content_label is not None else content_label_for(result.pipeline)
    if series_description is None:
        series_description = f"AI {label} SEG {NOT_FOR_DIAGNOSTIC_USE}"

    algorithm_sequence = algorithm_identification_sequence(result.algorithm, equipment)
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
                algorithm_identification=algorithm_sequence,
                tracking_uid=str(hd.UID()),
                tracking_id=f"{finding_codes.abbreviation}-{number}",
                anatomic_regions=[finding_codes.anatomic_region],
                display_color=hd.color.CIELabColor.from_rgb(*finding_codes.recommended_display_rgb),
            )
        )

    all_empty = not pixel_array.any()
    if omit_empty_frames and all_empty:
        logger.info("every mask is empty: encoding all frames of %s", sop_instance_uid)
        omit_empty_frames = False

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            segmentation = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=pixel_array,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=series_instance_uid,
                series_number=series_number,
                sop_instance_uid=sop_instance_uid,
                instance_number=1,
                manufacturer=equipment.manufacturer,
                manufacturer_model_name=equipment.manufacturer_model_name,
                software_versions=equipment.software_versions,
                device_serial_number=equipment.device_serial_number,
                institution_name=equipment.institution_name,
                institutional_department_name=equipment.institutional_department_name,
                content_label=label,
                content_description=_content_description(result),
                series_description=series_description,
                omit_empty_frames=omit_empty_frames,
                contributing_equipment=[
                    contributing_equipment_for_algorithm(equipment, result.algorithm)
                ],
            )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise ResultBuildError(f"highdicom rejected the segmentation: {err}") from err
    replay_warnings(caught, sop_instance_uid)
    _ensure_referenced_series(segmentation, sources)

    logger.info(
        "built SEG %s (series %s): %d segment(s), %d frame(s)%s in %.2f s",
        sop_instance_uid,
        series_instance_uid,
        len(descriptions),
        int(segmentation.NumberOfFrames),
        ", all empty" if all_empty else "",
        time.perf_counter() - started,
    )
    return segmentation
