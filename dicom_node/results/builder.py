"""The results step of a job: SEG and TID 1500 SR from one pipeline result.

References
----------
PS3.3 A.51 Segmentation IOD; PS3.3 A.35.13 Comprehensive 3D SR IOD;
PS3.16 TID 1500, TID 1411; IHE AIR.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset

from dicom_node.pipelines.base import PipelineResult
from dicom_node.results.equipment import EquipmentIdentity
from dicom_node.results.seg import build_segmentation
from dicom_node.results.sr import build_measurement_report

logger = logging.getLogger(__name__)


def build_results(
    source_images: Sequence[Dataset],
    result: PipelineResult,
    *,
    equipment: EquipmentIdentity,
    seg_series_number: int = 9901,
    sr_series_number: int = 9902,
    omit_empty_frames: bool = False,
) -> tuple[hd.seg.Segmentation, hd.sr.Comprehensive3DSR]:
    """Build the SEG and the TID 1500 SR that report one pipeline result.

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
