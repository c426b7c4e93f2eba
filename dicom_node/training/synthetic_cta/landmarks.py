"""Where a circle of Willis belongs in a non-contrast head CT (:func:`locate_head_landmarks`).

The mid-sagittal plane and the suprasellar level are estimated from the
intracranial mask; the generator anchors its template there.

References
----------
Osborn AG. Diagnostic Cerebral Angiography, 2nd ed. Lippincott Williams &
Wilkins; 1999 (circle of Willis in the suprasellar cistern).
"""

from __future__ import annotations

import logging

import numpy as np

from dicom_node.imaging.masks import intracranial_mask
from dicom_node.imaging.midline import estimate_midsagittal_plane, head_frame
from dicom_node.series.volume import CTVolume
from dicom_node.training.synthetic_cta.model import (
    WILLIS_AP_FRACTION,
    WILLIS_LEVEL_AREA_FRACTION,
    HeadLandmarks,
)

logger = logging.getLogger(__name__)


def locate_head_landmarks(volume: CTVolume) -> HeadLandmarks:
    """Estimate where a circle of Willis belongs in a non-contrast head CT.

    The mid-sagittal plane is fitted to the intracranial mask
    (:func:`~dicom_node.imaging.midline.estimate_midsagittal_plane`). The
    suprasellar level is taken as the lowest slice whose mask area reaches
    85 % of the largest one (above it the cerebrum is cut broadly, below it
    the middle cranial fossae narrow); on that slice the centre is placed on
    the mid-sagittal plane at 43 % of the mask's anterior-posterior extent
    from the front. These fractions were read off the GE head
    (``head-ct-ge``: suprasellar cistern on slice 12) and are only a
    heuristic for other heads.

    Parameters
    ----------
    volume : CTVolume
        The base head CT, axial (with or without gantry tilt).

    Returns
    -------
    HeadLandmarks
        The mask and the anatomical frame at the estimated centre.

    Raises
    ------
    ValueError
        If no intracranial region is found.

    References
    ----------
    Osborn AG. Diagnostic Cerebral Angiography. 1999 (circle of Willis in
    the suprasellar cistern).
    """
    brain = intracranial_mask(volume)
    if not brain.any():
        raise ValueError("no intracranial region in the base series")
    plane = estimate_midsagittal_plane(volume, brain)
    areas = brain.sum(axis=(1, 2))
    level = int(np.flatnonzero(areas >= WILLIS_LEVEL_AREA_FRACTION * areas.max())[0])
    provisional = head_frame(volume, plane, plane.point_mm)
    points = volume.patient_coordinates(level)[brain[level]]
    near_midline = np.abs(plane.signed_distance_mm(points)) < 5.0
    posterior = (points[near_midline] - plane.point_mm) @ provisional.posterior
    front, back = float(posterior.min()), float(posterior.max())
    slice_centre = points[near_midline].mean(axis=0)
    origin = (
        slice_centre
        + (
            (front + WILLIS_AP_FRACTION * (back - front))
            - (slice_centre - plane.point_mm) @ provisional.posterior
        )
        * provisional.posterior
    )
    origin = origin - plane.signed_distance_mm(origin) * plane.normal
    frame = head_frame(volume, plane, origin)
    logger.debug("circle of Willis placed at slice %d, %s mm", level, np.round(origin, 1).tolist())
    return HeadLandmarks(volume=volume, brain_mask=brain, frame=frame)
