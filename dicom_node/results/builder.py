"""The results step of a job: the objects each destination's profile names.

:func:`build_results_for_profiles` builds the union of what the configured
destinations need from one pipeline result: one SEG series per distinct SEG
encoding (BINARY or LABELMAP, compression, frame limit, empty frames), one
TID 1500 SR per SEG series it references, and one Secondary Capture overlay
series; each object lists the destinations that receive it.
:func:`build_not_analysable_results` does the same for a series the quality
gates or the volume loader rejected: the "not analysable" SR and, for
destinations that want an overlay, a one-image SC saying why. Every finding
keeps one Tracking UID across all objects of the job.

References
----------
PS3.3 A.51 Segmentation IOD; PS3.3 A.35.13 Comprehensive 3D SR IOD;
PS3.3 A.8.1 Secondary Capture Image IOD; PS3.16 TID 1500, TID 1411; IHE AIR.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from dicom_node.errors import ResultBuildError
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult
from dicom_node.results.equipment import EquipmentIdentity
from dicom_node.results.profiles import ResultProfile, SegEncoding
from dicom_node.results.sc import build_not_analysable_overlay, build_overlay_series
from dicom_node.results.seg import build_segmentation, build_segmentations, with_tracking
from dicom_node.results.sr import build_measurement_report, build_not_analysable_report

logger = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
SC_SERIES_NUMBER = 9903


@dataclass(frozen=True)
class BuiltObject:
    """One result object and the destinations whose profile names it.

    Parameters
    ----------
    kind : {"SEG", "SR", "SC"}
        Object type (the ``result_object.kind`` column).
    dataset : pydicom.Dataset
        The object.
    destinations : tuple of str
        Names of the destinations that receive it; empty when it is only kept
        in the outbox (no destination configured, or an SR's SEG that its
        destination does not take).
    variant : str
        The SEG encoding it belongs to (``SegEncoding.key``), or ``""``.
    """

    kind: str
    dataset: Dataset
    destinations: tuple[str, ...]
    variant: str = ""


def _profiles_or_default(
    profiles: Mapping[str, ResultProfile],
) -> dict[str | None, ResultProfile]:
    """Destination -> profile; one anonymous default when there is no destination."""
    if profiles:
        return {name: profile for name, profile in profiles.items()}
    return {None: ResultProfile()}


def _names(destinations: Sequence[str | None]) -> tuple[str, ...]:
    return tuple(name for name in destinations if name is not None)


def build_results_for_profiles(
    source_images: Sequence[Dataset],
    result: PipelineResult,
    *,
    equipment: EquipmentIdentity,
    profiles: Mapping[str, ResultProfile],
    hu: np.ndarray | None = None,
    max_key_slices: int = 3,
) -> list[BuiltObject]:
    """Build every object the destinations' profiles name, each object once.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        Single-frame CT images of one series in the slice order of the masks
        (headers suffice for SEG and SR). Not modified.
    result : dicom_node.pipelines.base.PipelineResult
        Findings with bool masks of shape (slices, rows, columns) and
        volumes in mL.
    equipment : EquipmentIdentity
        The node creating the objects.
    profiles : mapping of str to ResultProfile
        Destination name -> its profile. Empty: the default profile, and the
        objects go to no destination (outbox only).
    hu : numpy.ndarray or None
        float array (slices, rows, columns) in HU, same order; needed only
        when a profile sends the overlay.
    max_key_slices : int
        Largest number of key-slice images in the overlay.

    Returns
    -------
    list of BuiltObject
        SEG instances, SRs and SC images with their destinations.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If an object cannot be built, or an overlay is asked for without HU.

    References
    ----------
    PS3.3 A.51, A.35.13, A.8.1; PS3.16 TID 1500; IHE AIR.
    """
    by_destination = _profiles_or_default(profiles)
    result = with_tracking(result)
    objects: list[BuiltObject] = []
    encodings: dict[SegEncoding, list[str | None]] = {}
    for name, profile in by_destination.items():
        if profile.send_seg or profile.send_sr:
            encodings.setdefault(profile.seg_encoding, []).append(name)
    for encoding, names in encodings.items():
        segs = build_segmentations(
            source_images,
            result,
            equipment=equipment,
            segmentation_type=encoding.segmentation_type,
            transfer_syntax_uid=encoding.transfer_syntax_uid,
            max_frames=encoding.max_frames,
            omit_empty_frames=encoding.omit_empty_frames,
            grid=encoding.grid,
            series_number=SEG_SERIES_NUMBER,
        )
        seg_to = _names([n for n in names if by_destination[n].send_seg])
        objects += [BuiltObject("SEG", seg, seg_to, encoding.key) for seg in segs]
        sr_to = _names([n for n in names if by_destination[n].send_sr])
        if sr_to or any(n is None for n in names):
            report = build_measurement_report(
                source_images,
                segs,
                result,
                equipment=equipment,
                series_number=SR_SERIES_NUMBER,
            )
            objects.append(BuiltObject("SR", report, sr_to, encoding.key))
    overlay_to = _names([n for n, p in by_destination.items() if p.send_overlay])
    if overlay_to or any(n is None and p.send_overlay for n, p in by_destination.items()):
        if hu is None:
            raise ResultBuildError("an overlay series needs the HU volume")
        images = build_overlay_series(
            source_images,
            hu,
            result,
            equipment=equipment,
            max_key_slices=max_key_slices,
            series_number=SC_SERIES_NUMBER,
        )
        objects += [BuiltObject("SC", image, overlay_to) for image in images]
    logger.info(
        "built %d result object(s) for %d destination(s): %s",
        len(objects),
        len(_names(list(by_destination))),
        ", ".join(f"{o.kind}->{'/'.join(o.destinations) or 'outbox'}" for o in objects),
    )
    return objects


def build_not_analysable_results(
    source_images: Sequence[Dataset],
    *,
    pipeline: str,
    algorithm: AlgorithmIdentity,
    finding_labels: Sequence[str],
    reason: str,
    equipment: EquipmentIdentity,
    profiles: Mapping[str, ResultProfile],
) -> list[BuiltObject]:
    """Build the objects that tell each destination the series was not analysable.

    The TID 1500 "not analysable" SR goes to destinations whose profile sends
    the SR, a one-image SC summary to those that send the overlay; there is
    no SEG. With no destination, the SR is kept in the outbox.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        The series' images (headers suffice). Not modified.
    pipeline : str
        Pipeline name, for example ``"ich"``.
    algorithm : dicom_node.pipelines.base.AlgorithmIdentity
        The algorithm that would have run.
    finding_labels : sequence of str
        The findings the pipeline reports (each gets "Not Evaluated").
    reason : str
        Why the series is not analysable (no patient identifiers).
    equipment : EquipmentIdentity
        The node.
    profiles : mapping of str to ResultProfile
        Destination name -> profile.

    Returns
    -------
    list of BuiltObject
        The SR and, when asked for, the SC.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If an object cannot be built.

    References
    ----------
    PS3.16 TID 1500 rows 12-14; PS3.3 A.8.1.
    """
    by_destination = _profiles_or_default(profiles)
    objects: list[BuiltObject] = []
    sr_to = _names([n for n, p in by_destination.items() if p.send_sr])
    if sr_to or None in by_destination:
        report = build_not_analysable_report(
            source_images,
            pipeline=pipeline,
            algorithm=algorithm,
            finding_labels=finding_labels,
            reason=reason,
            equipment=equipment,
            series_number=SR_SERIES_NUMBER,
        )
        objects.append(BuiltObject("SR", report, sr_to))
    overlay_to = _names([n for n, p in by_destination.items() if p.send_overlay])
    if overlay_to:
        images = build_not_analysable_overlay(
            source_images,
            pipeline=pipeline,
            algorithm=algorithm,
            reason=reason,
            equipment=equipment,
            series_number=SC_SERIES_NUMBER,
        )
        objects += [BuiltObject("SC", image, overlay_to) for image in images]
    return objects


def build_results(
    source_images: Sequence[Dataset],
    result: PipelineResult,
    *,
    equipment: EquipmentIdentity,
    seg_series_number: int = SEG_SERIES_NUMBER,
    sr_series_number: int = SR_SERIES_NUMBER,
    omit_empty_frames: bool = False,
) -> tuple[hd.seg.Segmentation, hd.sr.Comprehensive3DSR]:
    """Build one BINARY SEG and the TID 1500 SR that reports one pipeline result.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        Single-frame CT images of one series in the slice order of the masks
        (headers suffice). Not modified.
    result : dicom_node.pipelines.base.PipelineResult
        Findings with bool masks of shape (slices, rows, columns), slice axis
        in the order of ``source_images``, and volumes in mL.
    equipment : EquipmentIdentity
        The node creating both objects.
    seg_series_number : int
        Series Number of the SEG series.
    sr_series_number : int
        Series Number of the SR series.
    omit_empty_frames : bool
        Leave empty frames out of the SEG (all are kept when every mask is
        empty).

    Returns
    -------
    tuple of (highdicom.seg.Segmentation, highdicom.sr.Comprehensive3DSR)
        The SEG and the SR that references its segments; both in the source
        study, each in a new series with new UIDs.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If either object cannot be built (see :func:`build_segmentation` and
        :func:`build_measurement_report`).

    References
    ----------
    PS3.3 A.51 Segmentation IOD; PS3.16 TID 1500, TID 1411; IHE AIR.
    """
    result = with_tracking(result)
    segmentation = build_segmentation(
        source_images,
        result,
        equipment=equipment,
        series_number=seg_series_number,
        omit_empty_frames=omit_empty_frames,
    )
    report = build_measurement_report(
        source_images,
        segmentation,
        result,
        equipment=equipment,
        series_number=sr_series_number,
    )
    return segmentation, report
