"""DICOM Segmentation (SEG) of a pipeline result.

One Segmentation per pipeline run and SEG encoding, one segment per
:class:`~dicom_node.pipelines.base.SegmentFinding`, in the source study and
frame of reference, in a new series. Every frame references its source CT
instance (highdicom writes the Derivation Image Sequence per frame) and the
Referenced Series Sequence lists the source series, which OHIF needs to
attach the SEG to its series.

Each segment carries its coded category and type (CID 7150/7151), the
anatomic region (with the laterality as Anatomic Region Modifier), a
Tracking ID and Tracking UID (the same UID as the SR's TID 1411 group, so a
finding can be followed across objects), a recommended display colour in
CIELab and the Segmentation Algorithm Identification; the node and the
algorithm are the General and Contributing Equipment (IHE AIR).

Encodings (see :class:`dicom_node.results.profiles.SegEncoding`): BINARY
(Segmentation Storage) or LABELMAP (Label Map Segmentation Storage, one
frame per slice, pixel value = segment number); uncompressed, JPEG 2000
Lossless or (LABELMAP only) RLE Lossless; empty frames kept or omitted; and
split into several instances of one series when a receiver limits the number
of frames (:func:`build_segmentations`).

A finding with an empty mask still yields a valid segment (the "absent"
result): all frames are encoded when every mask is empty, so the object never
has zero frames.

The Frame of Reference UID is the source images'. When the source series has
none (some anonymisers remove it), the volume loader derives one from its
Series Instance UID (:func:`dicom_node.series.volume.derived_frame_of_reference_uid`)
and the caller passes copies of the source headers that carry it
(:func:`dicom_node.series.volume.source_images_for`): the SEG is then in that
derived frame of reference, which no source instance names; it still
references every source instance.

The segment descriptions (tracking, anatomic region, coded type) are built in
:mod:`dicom_node.results.seg_segments`, the pixel data and the split into
instances in :mod:`dicom_node.results.seg_frames`; their names are
importable from here too.

References
----------
PS3.3 A.51 Segmentation IOD; PS3.3 C.8.20 Segmentation Image Module and
C.8.20.2 Segment Description Macro; PS3.3 C.12.2 Common Instance Reference
Module; PS3.16 CID 7150, CID 7151, CID 4, CID 7162; IHE AIR.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import warnings
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicom_node.errors import ResultBuildError
from dicom_node.pipelines.base import PipelineResult
from dicom_node.results.equipment import (
    EquipmentIdentity,
    algorithm_identification_sequence,
    contributing_equipment_for_algorithm,
)

# The pixel data and frames, and the segment descriptions, have modules of their own
# (issue 14); their names stay importable from here.
from dicom_node.results.seg_frames import (
    _frames_per_slice,
    _label_map_pixels,
    _stack_masks,
    split_slices,
)
from dicom_node.results.seg_segments import anatomic_region_item as anatomic_region_item
from dicom_node.results.seg_segments import segment_descriptions, with_tracking
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
    segmentation_type: str = "BINARY",
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    instance_number: int = 1,
    grid: str = "source",
) -> hd.seg.Segmentation:
    """Build a Segmentation (BINARY or LABELMAP) with one segment per finding.

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
    segmentation_type : {"BINARY", "LABELMAP"}
        Segmentation Type (0062,0001). LABELMAP writes one frame per slice
        whose pixel values are segment numbers (Label Map Segmentation
        Storage, with highdicom's background segment 0).
    transfer_syntax_uid : str
        Explicit VR Little Endian, JPEG 2000 Lossless, or (LABELMAP only)
        RLE Lossless.
    instance_number : int
        Instance Number (0020,0013); increases over the instances of a split SEG.
    grid : {"source", "regular"}
        ``"source"``: one frame per source image, at its position (what a
        viewer overlays on the CT). ``"regular"``: the masks resampled onto a
        regular, untilted grid (:mod:`dicom_node.results.seg_grid`), for
        readers such as dcmqi / 3D Slicer that refuse sheared or unevenly
        spaced frames.

    Returns
    -------
    highdicom.seg.Segmentation
        The SEG instance: same Study Instance UID and Frame of Reference UID
        as the source (the derived one when the source has none, see the
        module docstring).

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If there are no findings, a finding label, site or laterality has no
        codes, a mask does not match the source grid or is not binary,
        LABELMAP masks overlap, the source images are not one series on one
        grid, or highdicom rejects the input (for example a transfer syntax
        it cannot encode for this type).
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

    segmentation_type = str(segmentation_type).upper()
    if segmentation_type not in ("BINARY", "LABELMAP"):
        raise ResultBuildError(f"segmentation type {segmentation_type!r} is not BINARY or LABELMAP")
    algorithm_sequence = algorithm_identification_sequence(result.algorithm, equipment)
    descriptions = segment_descriptions(result, algorithm_sequence)

    geometry: dict = {}
    if grid == "regular":
        from dicom_node.results.seg_grid import resample_to_regular_grid

        regular = resample_to_regular_grid(sources, pixel_array)
        pixel_array = regular.pixel_array
        geometry = {
            "plane_positions": regular.plane_positions,
            "plane_orientation": regular.plane_orientation,
            "pixel_measures": regular.pixel_measures,
        }
    elif grid != "source":
        raise ResultBuildError(f"SEG grid {grid!r} is not 'source' or 'regular'")
    all_empty = not pixel_array.any()
    if omit_empty_frames and all_empty:
        logger.info("every mask is empty: encoding all frames of %s", sop_instance_uid)
        omit_empty_frames = False
    if segmentation_type == "LABELMAP":
        pixel_array = _label_map_pixels(pixel_array, result)

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            segmentation = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=pixel_array,
                segmentation_type=hd.seg.SegmentationTypeValues(segmentation_type),
                segment_descriptions=descriptions,
                series_instance_uid=series_instance_uid,
                series_number=series_number,
                sop_instance_uid=sop_instance_uid,
                instance_number=instance_number,
                transfer_syntax_uid=UID(transfer_syntax_uid),
                **equipment.general_equipment_kwargs(),
                content_label=label,
                content_description=_content_description(result),
                series_description=series_description,
                omit_empty_frames=omit_empty_frames,
                **geometry,
                contributing_equipment=[
                    contributing_equipment_for_algorithm(equipment, result.algorithm)
                ],
            )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise ResultBuildError(f"highdicom rejected the segmentation: {err}") from err
    replay_warnings(caught, sop_instance_uid)
    _ensure_referenced_series(segmentation, sources)
    if "ContentCreatorName" not in segmentation:
        # Type 2 in the Content Identification Macro (PS3.3 C.10.9): an algorithm, not a
        # person, made the content, so the name is present and empty.
        segmentation.ContentCreatorName = None

    logger.info(
        "built SEG %s (%s, series %s, %s): %d segment(s), %d frame(s)%s in %.2f s",
        sop_instance_uid,
        segmentation_type,
        series_instance_uid,
        UID(transfer_syntax_uid).keyword,
        len(descriptions),
        int(segmentation.NumberOfFrames),
        ", all empty" if all_empty else "",
        time.perf_counter() - started,
    )
    return segmentation


def build_segmentations(
    source_images: Sequence[Dataset],
    result: PipelineResult,
    *,
    equipment: EquipmentIdentity,
    segmentation_type: str = "BINARY",
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    max_frames: int = 0,
    grid: str = "source",
    omit_empty_frames: bool = False,
    series_number: int = 9901,
    series_description: str | None = None,
    series_instance_uid: str | None = None,
) -> list[hd.seg.Segmentation]:
    """Build the SEG series of a result: one instance, or several when frames are limited.

    When the SEG would have more than ``max_frames`` frames, the source slices
    are split into contiguous runs and each run becomes one instance of the
    same series (Instance Number 1, 2, ...), every instance with all segment
    descriptions and the same Tracking UIDs. Each instance references its own
    source instances.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        Single-frame source images in the slice order of the masks.
    result : dicom_node.pipelines.base.PipelineResult
        Findings with masks of shape (slices, rows, columns).
    equipment : EquipmentIdentity
        The node.
    segmentation_type : {"BINARY", "LABELMAP"}
        Segmentation Type.
    transfer_syntax_uid : str
        Transfer syntax (see :func:`build_segmentation`).
    grid : {"source", "regular"}
        Frame geometry (see :func:`build_segmentation`); ``"regular"`` needs
        ``max_frames`` = 0 (one instance).
    max_frames : int
        Largest Number of Frames per instance; 0 = no limit (Weasis needs 400).
    omit_empty_frames : bool
        Leave out frames without segmented pixels.
    series_number : int
        Series Number of the SEG series.
    series_description : str or None
        Series Description; see :func:`build_segmentation`.
    series_instance_uid : str or None
        Series Instance UID shared by the instances; new when None.

    Returns
    -------
    list of highdicom.seg.Segmentation
        The instances, in slice order.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        As :func:`build_segmentation`; also when one slice alone needs more
        than ``max_frames`` frames.
    dicom_node.errors.InvalidUIDError
        If ``series_instance_uid`` is not a valid UID.

    References
    ----------
    PS3.3 A.51 Segmentation IOD; C.7.6.16 Multi-frame Functional Groups
    (Number of Frames).
    """
    if not result.findings:
        raise ResultBuildError(f"pipeline {result.pipeline!r} returned no findings to encode")
    result = with_tracking(result)
    series_instance_uid = uid_or_new("SeriesInstanceUID", series_instance_uid)
    if grid == "regular" and max_frames:
        raise ResultBuildError("a regular-grid SEG is one instance: max_frames must be 0")
    runs = split_slices(
        _frames_per_slice(result, str(segmentation_type).upper(), omit_empty_frames), max_frames
    )
    instances = []
    for number, run in enumerate(runs, start=1):
        part = dataclasses.replace(
            result,
            findings=[
                dataclasses.replace(f, mask=np.asarray(f.mask)[run]) for f in result.findings
            ],
        )
        instances.append(
            build_segmentation(
                list(source_images)[run],
                part,
                equipment=equipment,
                series_number=series_number,
                series_description=series_description,
                omit_empty_frames=omit_empty_frames,
                series_instance_uid=series_instance_uid,
                segmentation_type=segmentation_type,
                transfer_syntax_uid=transfer_syntax_uid,
                instance_number=number,
                grid=grid,
            )
        )
    if len(instances) > 1:
        logger.info(
            "SEG series %s split into %d instances of at most %d frames",
            series_instance_uid,
            len(instances),
            max_frames,
        )
    return instances
