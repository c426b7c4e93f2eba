"""What every pipeline returns: findings with masks on the source grid.

A pipeline takes a :class:`dicom_node.series.volume.CTVolume` and returns a
:class:`PipelineResult`. Masks share the volume's voxel grid exactly (same
slice order, rows and columns), so the results layer can reference each mask
frame back to its source SOP instance without any resampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class AlgorithmIdentity:
    """Identity of the algorithm that produced a result.

    Written into the SEG segment descriptions (Segment Algorithm Name, Type)
    and into the Contributing Equipment Sequence of every result object, as
    IHE Radiology AI Results (AIR) asks.

    Parameters
    ----------
    name : str
        Algorithm name, for example ``"ich-baseline"``.
    version : str
        Algorithm version; changes whenever behaviour or weights change.
    family : str
        Coded-concept key of the algorithm family in :mod:`dicom_node.results.codes`,
        ``"artificial intelligence"`` or ``"image processing"`` (CID 7162).
    """

    name: str
    version: str
    family: str = "image processing"


@dataclass(frozen=True)
class SegmentFinding:
    """One finding with its segmentation mask.

    Parameters
    ----------
    label : str
        Clinical term of the finding, a key of the codes in
        :mod:`dicom_node.results.codes` (for example ``"intracranial hemorrhage"``).
    present : bool
        Whether the pipeline judges the finding present in the series.
    volume_ml : float
        Volume of ``mask`` in mL (1 mL = 1000 mm^3), integrated with the
        volume's per-slice spacing (Cavalieri estimator).
    mask : numpy.ndarray
        Boolean array of shape (slices, rows, columns) on the source grid, slice
        axis in the order of ``CTVolume.sop_instance_uids``.
    probability : float or None
        Probability of presence in [0, 1] when the algorithm provides one.
    laterality : {"left", "right", "bilateral"} or None
        Side of the finding in the patient when known (CID 244); written as the
        TID 1411 Finding Site laterality and the SEG Anatomic Region Modifier.
    finding_site : str or None
        Anatomic site key of :data:`dicom_node.results.codes.ANATOMIC_SITES`
        (for example ``"basilar artery"``) replacing the label's default site.
    tracking_id : str or None
        Tracking Identifier (TID 4108) of the finding; ``"<ABBR>-<n>"`` when None.
    tracking_uid : str or None
        Tracking Unique Identifier (TID 4108); a new UID when None. Keep it
        stable to follow one finding across reports.
    """

    label: str
    present: bool
    volume_ml: float
    mask: np.ndarray
    probability: float | None = None
    laterality: str | None = None
    finding_site: str | None = None
    tracking_id: str | None = None
    tracking_uid: str | None = None


@dataclass(frozen=True)
class PipelineResult:
    """The output of one pipeline run on one series.

    Parameters
    ----------
    pipeline : str
        Pipeline name as used in the selection rules, for example ``"ich"``.
    algorithm : AlgorithmIdentity
        Which algorithm produced the findings.
    findings : list of SegmentFinding
        One entry per segment; the results layer writes one SEG segment and one
        TID 1411 measurement group per entry, in this order.
    details : dict
        JSON-serialisable extra figures (thresholds used, component counts...),
        stored with the job for the dashboard and CLI.
    """

    pipeline: str
    algorithm: AlgorithmIdentity
    findings: list[SegmentFinding]
    details: dict = field(default_factory=dict)
