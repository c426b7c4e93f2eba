"""Which segment is occluded, and where: trunk profiles along the M1 course and the carotid.

Each side's enhanced vessel volume profiled in 1 mm slabs away from the
midline and up the supraclinoid carotid (:class:`TrunkProfile`,
:func:`trunk_profile`), and from the two sides' profiles the segment (ICA-T,
M1 or M2) and the proximal end of the occlusion, moved to a nearby abrupt
termination (:func:`_segment_and_location`): step 5 of the LVO assessment in
:mod:`dicom_node.imaging.occlusion`, which still exports every name here.
Split from that module (issue 14). The thresholds were set on synthetic
angiograms (:mod:`dicom_node.training.synthetic_cta`).

References
----------
Menon BK, et al. Multiphase CT angiography: a new tool for the imaging
triage of patients with acute ischemic stroke. Radiology.
2015;275(2):510-520 (vessel cut-off on CTA).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from dicom_node.imaging.midline import HeadFrame
from dicom_node.imaging.occlusion_regions import CAROTID_TERMINUS_MM, LEFT, Region

#: Occlusion sites reported, as the issue and the stroke literature name them.
SEGMENT_ICA_T = "ICA-T"
SEGMENT_M1 = "M1"
SEGMENT_M2 = "M2"


#: Band around the M1 course in the head frame: (posterior min, max), (superior min, max), mm.
M1_BAND_MM = ((-25.0, 8.0), (-8.0, 10.0))
#: Column around the supraclinoid carotid: (lateral min, max), (posterior min, max), mm.
CAROTID_COLUMN_MM = ((8.0, 21.0), (-14.0, 4.0))
#: Lateral (mm) where the search for a gap in the trunk starts (lateral to the P1 and PComm).
TRUNK_SEARCH_START_MM = 12.0


@dataclass(frozen=True)
class TrunkProfile:
    """Enhanced vessel volume of one side along the M1 course and up the carotid.

    Parameters
    ----------
    side : str
        ``"left"`` or ``"right"``.
    lateral_ml : numpy.ndarray
        float64 array (60,): partial-volume corrected vessel volume (mL) in
        1 mm slabs at 0-60 mm from the mid-sagittal plane, within
        :data:`M1_BAND_MM`.
    superior_ml : numpy.ndarray
        float64 array (32,): the same in 1 mm slabs from 20 mm below to
        12 mm above the circle of Willis, within :data:`CAROTID_COLUMN_MM`.
    """

    side: str
    lateral_ml: np.ndarray
    superior_ml: np.ndarray

    def trunk_gap_mm(self, reference_ml: float, *, run_mm: int = 4, fraction: float = 0.1) -> int:
        """Return where the trunk first stops: the start of a run of empty lateral slabs.

        Parameters
        ----------
        reference_ml : float
            Typical slab volume of a continuous trunk (mL); a slab holding at
            most ``fraction`` of it (or 0.5 uL) is empty.
        run_mm : int
            Number of consecutive empty 1 mm slabs that make a gap.
        fraction : float
            Fraction of ``reference_ml`` below which a slab is empty.

        Returns
        -------
        int
            Distance (mm) from the mid-sagittal plane where the gap starts,
            searched from :data:`TRUNK_SEARCH_START_MM`; 60 when none.
        """
        empty = self.lateral_ml <= max(fraction * reference_ml, 0.5e-3)
        for start in range(int(TRUNK_SEARCH_START_MM), len(empty) - run_mm):
            if empty[start : start + run_mm].all():
                return start
        return len(empty)

    def carotid_top_mm(self, *, fraction: float = 0.15) -> int:
        """Return the highest level (mm from the circle) where the carotid column is enhanced.

        Parameters
        ----------
        fraction : float
            A slab counts when it holds more than this fraction of the
            column's largest slab (and at least 0.5 uL).

        Returns
        -------
        int
            Superior coordinate (mm) of the highest enhanced slab; -20 when none.
        """
        present = self.superior_ml > max(fraction * float(self.superior_ml.max()), 0.5e-3)
        index = np.flatnonzero(present)
        return int(index.max()) - 20 if index.size else -20


def trunk_profile(local_mm: np.ndarray, volume_ml: np.ndarray, side: str) -> TrunkProfile:
    """Measure one side's :class:`TrunkProfile` from enhanced voxels in head-frame coordinates.

    Parameters
    ----------
    local_mm : numpy.ndarray
        Array (n, 3): enhanced voxels as (left, posterior, superior) mm.
    volume_ml : numpy.ndarray
        Array (n,): their partial-volume corrected volume in mL.
    side : {"left", "right"}
        Patient side.

    Returns
    -------
    TrunkProfile
        The lateral and superior profiles.
    """
    lateral = local_mm[:, 0] * (1.0 if side == LEFT else -1.0)
    posterior, superior = local_mm[:, 1], local_mm[:, 2]
    (p_lo, p_hi), (s_lo, s_hi) = M1_BAND_MM
    band = (posterior >= p_lo) & (posterior <= p_hi) & (superior >= s_lo) & (superior <= s_hi)
    lateral_ml = np.bincount(
        np.clip(lateral[band & (lateral >= 0) & (lateral < 60)], 0, 59).astype(np.int64),
        weights=volume_ml[band & (lateral >= 0) & (lateral < 60)],
        minlength=60,
    )
    (l_lo, l_hi), (p_lo, p_hi) = CAROTID_COLUMN_MM
    column = (lateral >= l_lo) & (lateral <= l_hi) & (posterior >= p_lo) & (posterior <= p_hi)
    column &= (superior >= -20) & (superior < 12)
    superior_ml = np.bincount(
        np.clip(superior[column] + 20, 0, 31).astype(np.int64),
        weights=volume_ml[column],
        minlength=32,
    )
    return TrunkProfile(side=side, lateral_ml=lateral_ml, superior_ml=superior_ml)


def _strongest_centre(points: np.ndarray, fraction: np.ndarray, selected: np.ndarray):
    """Centre of the most enhanced selected voxels: the widest lumen there, not its branches."""
    if not selected.any():
        return None
    strongest = selected & (fraction >= 0.8 * float(fraction[selected].max()))
    return points[strongest].mean(axis=0)


def _segment_and_location(
    frame: HeadFrame,
    enhanced_local: np.ndarray,
    enhanced_ml: np.ndarray,
    enhanced_fraction: np.ndarray,
    vessel_local: np.ndarray,
    side: str,
    healthy: str,
    regions: dict[str, Region],
    terminations: list[tuple[float, float, float]],
    tolerance_mm: float,
) -> tuple[str, tuple[float, float, float], dict]:
    """Name the occluded segment from the trunk profiles; locate the proximal end of the gap."""
    affected_profile = trunk_profile(enhanced_local, enhanced_ml, side)
    healthy_profile = trunk_profile(enhanced_local, enhanced_ml, healthy)
    reference_ml = float(np.median(healthy_profile.lateral_ml[12:30]))
    gap_affected = affected_profile.trunk_gap_mm(reference_ml)
    gap_healthy = healthy_profile.trunk_gap_mm(reference_ml)
    top_affected = affected_profile.carotid_top_mm()
    top_healthy = healthy_profile.carotid_top_mm()
    sign = 1.0 if side == LEFT else -1.0
    lateral = enhanced_local[:, 0] * sign
    posterior, superior = enhanced_local[:, 1], enhanced_local[:, 2]
    location_local = None
    if top_affected <= top_healthy - 3:
        segment = SEGMENT_ICA_T
        # The affected carotid top often lies in the skull base, outside the brain mask:
        # mirror the healthy side's carotid terminus instead.
        (l_lo, l_hi), (p_lo, p_hi) = CAROTID_COLUMN_MM
        healthy_lateral = -lateral
        terminus = (
            (healthy_lateral >= l_lo)
            & (healthy_lateral <= l_hi)
            & (posterior >= p_lo)
            & (posterior <= p_hi)
            & (superior >= top_healthy - 2)
            & (superior <= top_healthy + 1)
        )
        centre = _strongest_centre(enhanced_local, enhanced_fraction, terminus)
        if centre is not None:
            location_local = centre * np.array([-1.0, 1.0, 1.0])
    elif gap_affected < 30 or gap_affected <= gap_healthy - 10:
        segment = SEGMENT_M1
        (p_lo, p_hi), (s_lo, s_hi) = M1_BAND_MM
        stump = (
            (lateral >= gap_affected - 4)
            & (lateral < gap_affected)
            & (posterior >= p_lo)
            & (posterior <= p_hi)
            & (superior >= s_lo)
            & (superior <= s_hi)
        )
        location_local = _strongest_centre(enhanced_local, enhanced_fraction, stump)
    else:
        segment = SEGMENT_M2
        # The healthy side's M2 trunk mirrored: the missing point nearest the bifurcation.
        m2 = regions["middle_cerebral_artery_m2"]
        reference = vessel_local[m2.contains(vessel_local, healthy)]
        on_side = enhanced_local[:, 0] * sign > 0
        if len(reference) and on_side.any():
            mirrored = reference * np.array([-1.0, 1.0, 1.0])
            distance, _ = cKDTree(enhanced_local[on_side]).query(
                mirrored, distance_upper_bound=tolerance_mm
            )
            absent = mirrored[~np.isfinite(distance)]
            if len(absent):
                bifurcation = np.array([sign * 33.0, -9.0, 2.0])
                location_local = absent[np.argmin(np.linalg.norm(absent - bifurcation, axis=1))]
    if location_local is None:
        location_local = np.array(CAROTID_TERMINUS_MM) * np.array([sign, 1.0, 1.0])
    location = frame.to_patient(location_local)
    if terminations:
        ends = np.asarray(terminations)
        distance = np.linalg.norm(ends - location, axis=1)
        if distance.min() <= 8.0:
            location = ends[int(np.argmin(distance))]
    figures = {
        "trunk_gap_mm": {side: gap_affected, healthy: gap_healthy},
        "carotid_top_mm": {side: top_affected, healthy: top_healthy},
    }
    return segment, (float(location[0]), float(location[1]), float(location[2])), figures
