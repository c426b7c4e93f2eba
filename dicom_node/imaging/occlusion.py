"""Large-vessel occlusion (LVO) on CT angiography by left-right comparison.

An occluded internal carotid terminus (ICA-T), M1 or proximal M2 segment of
the middle cerebral artery (MCA) shows on CTA as a vessel tree that stops
short and a hemisphere with fewer enhanced vessels than the other. This
module measures exactly that, on the vessel map of
:func:`dicom_node.imaging.vessels.segment_intracranial_vessels`:

1. **Mid-sagittal plane** from the intracranial mask
   (:func:`dicom_node.imaging.midline.estimate_midsagittal_plane`).
2. **Circle of Willis**: the centre of mass of the large enhanced vessel
   components, found by mean shift in an anatomical frame (left, posterior,
   superior) whose axial plane is the slice plane; its left-right position
   is put on the mid-sagittal plane.
3. **Territories**: boxes in that frame, mirrored for the two sides, around
   the terminal ICA, the M1 and the insular M2 segments, and the MCA
   territory as a whole (:data:`DEFAULT_REGIONS`). Each hemisphere's
   partial-volume corrected vessel volume (enhancement fraction times voxel
   volume, summed over voxels at least ``min_fraction`` enhanced) and
   centreline length (skeleton of the vessel mask, in mm) are measured in
   each box.
4. **Asymmetry**: the ratio lower/higher of the M2 (insular trunk) vessel
   volume decides; an LVO is suspected below ``trunk_ratio_threshold``, on
   the side with fewer vessels.
5. **Segment and location** (:class:`TrunkProfile`): along the M1 course
   each side's enhanced vessel volume is profiled in 1 mm slabs away from
   the midline, and up the supraclinoid carotid in 1 mm slabs. ICA-T when
   the suspected side's carotid stops at least 3 mm lower than the other;
   M1 when its trunk stops (a 4 mm run of empty slabs) within 30 mm of the
   midline or at least 10 mm short of the other side's; M2 otherwise. The
   location is the end of the enhanced stump (carotid top, M1 end), or for
   M2 the first point of the mirrored healthy M2 with no enhanced vessel
   within ``mirror_tolerance_mm``; it is moved to the nearest **abrupt
   termination** of a main trunk when there is one within 8 mm: an end
   point of the vessel-mask skeleton whose lumen is still at least
   ``termination_min_radius_mm`` wide (a normal artery tapers before it
   ends; a cut-off one does not).

Everything is computed on the source grid in patient millimetres; nothing
is resampled. The thresholds and boxes were set on synthetic angiograms
(:mod:`dicom_node.training.synthetic_cta`, seeds kept apart from the
evaluation) and have not been checked on real patients.

References
----------
Liu Y, et al. Robust midsagittal plane extraction from normal and
pathological 3-D neuroradiology images. IEEE Trans Med Imaging.
2001;20(3):175-192. Fukunaga K, Hostetler L. The estimation of the gradient
of a density function. IEEE Trans Inf Theory. 1975;21(1):32-40 (mean shift).
Menon BK, et al. Multiphase CT angiography: a new tool for the imaging
triage of patients with acute ischemic stroke. Radiology.
2015;275(2):510-520 (vessel cut-off and collateral filling on CTA).
Puetz V, et al. Extent of hypoattenuation on CT angiography source images
predicts functional outcome in patients with basilar artery occlusion. AJNR
2008 (CTA source images). Product anchors of the issue: Viz LVO
(sensitivity 0.81-0.91, specificity about 0.93), Brainomix e-CTA (proximal
LVO 0.92/0.98), RapidAI LVO.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from dicom_node.imaging.midline import HeadFrame, MidsagittalPlane, head_frame
from dicom_node.imaging.vessels import VesselMap, vessel_centreline, voxel_centres_mm
from dicom_node.series.volume import CTVolume

logger = logging.getLogger(__name__)

#: Occlusion sites reported, as the issue and the stroke literature name them.
SEGMENT_ICA_T = "ICA-T"
SEGMENT_M1 = "M1"
SEGMENT_M2 = "M2"
#: Patient sides.
LEFT, RIGHT = "left", "right"


@dataclass(frozen=True)
class Region:
    """A box in the head frame, defined for one side and mirrored for the other.

    Parameters
    ----------
    name : str
        Anatomical name.
    lateral_mm : tuple of float
        (min, max) distance from the mid-sagittal plane, mm, on the side measured.
    posterior_mm : tuple of float
        (min, max) along the posterior axis from the circle of Willis, mm.
    superior_mm : tuple of float
        (min, max) along the superior axis (slice normal) from the circle, mm.
    exclude_posterior_cerebral : bool
        Leave out the course of the posterior cerebral artery around the
        midbrain (posterior to 8 mm, within 30 mm of the midline, below 20 mm).
    exclude_ventricular_atrium : bool
        Leave out the atrium (trigone) of the lateral ventricle and its
        choroid plexus glomus (:data:`VENTRICULAR_ATRIUM_MM`): the commonest
        site of physiological intracranial calcification, which a single
        CTA cannot tell from contrast, and a place no MCA trunk runs through.
    """

    name: str
    lateral_mm: tuple[float, float]
    posterior_mm: tuple[float, float]
    superior_mm: tuple[float, float]
    exclude_posterior_cerebral: bool = False
    exclude_ventricular_atrium: bool = False

    def contains(self, local_mm: np.ndarray, side: str) -> np.ndarray:
        """Return which points lie in the region on one side.

        Parameters
        ----------
        local_mm : numpy.ndarray
            Array (n, 3) of head-frame coordinates (left, posterior,
            superior) in mm.
        side : {"left", "right"}
            Patient side.

        Returns
        -------
        numpy.ndarray
            Boolean array (n,).
        """
        lateral = local_mm[:, 0] * (1.0 if side == LEFT else -1.0)
        posterior, superior = local_mm[:, 1], local_mm[:, 2]
        inside = (
            (lateral >= self.lateral_mm[0])
            & (lateral <= self.lateral_mm[1])
            & (posterior >= self.posterior_mm[0])
            & (posterior <= self.posterior_mm[1])
            & (superior >= self.superior_mm[0])
            & (superior <= self.superior_mm[1])
        )
        if self.exclude_posterior_cerebral:
            inside &= ~((posterior > 8.0) & (lateral < 30.0) & (superior < 20.0))
        if self.exclude_ventricular_atrium:
            medial_of, posterior_to, above = VENTRICULAR_ATRIUM_MM
            inside &= ~((lateral < medial_of) & (posterior > posterior_to) & (superior > above))
        return inside


#: The atrium (trigone) of the lateral ventricle with the choroid plexus glomus, in the
#: head frame: medial to 34 mm from the midline, more than 15 mm posterior to and more than
#: 15 mm above the circle of Willis (lateral max, posterior min, superior min; mm). The
#: insular M2 trunks run lateral to it, over the insula (about 35-45 mm from the midline).
#: Calcified choroid plexus (about 100-300 HU, common in adults) lies here and, being as
#: dense as contrast-filled lumen, would pass for vessel on one side only.
VENTRICULAR_ATRIUM_MM = (34.0, 15.0, 15.0)


#: The territories compared, relative to the circle of Willis (mm).
DEFAULT_REGIONS: dict[str, Region] = {
    "terminal_internal_carotid_artery": Region(
        "terminal_internal_carotid_artery", (9.0, 19.0), (-12.0, 4.0), (-8.0, 3.0)
    ),
    "anterior_cerebral_artery_a1": Region(
        "anterior_cerebral_artery_a1", (3.0, 11.0), (-18.0, -2.0), (-4.0, 6.0)
    ),
    "middle_cerebral_artery_m1": Region(
        "middle_cerebral_artery_m1", (16.0, 38.0), (-25.0, 5.0), (-8.0, 8.0)
    ),
    "middle_cerebral_artery_m2": Region(
        "middle_cerebral_artery_m2",
        (30.0, 52.0),
        (-25.0, 30.0),
        (0.0, 40.0),
        exclude_ventricular_atrium=True,
    ),
    "middle_cerebral_artery_territory": Region(
        "middle_cerebral_artery_territory",
        (12.0, 80.0),
        (-60.0, 45.0),
        (-12.0, 65.0),
        exclude_posterior_cerebral=True,
        exclude_ventricular_atrium=True,
    ),
}
#: Approximate position of the carotid terminus in the head frame (lateral, posterior, superior).
CAROTID_TERMINUS_MM = (13.0, -3.0, 0.0)


@dataclass(frozen=True)
class HemisphereMeasures:
    """Vessel measurements of one hemisphere.

    Parameters
    ----------
    side : str
        ``"left"`` or ``"right"``.
    vessel_volume_ml : dict of str to float
        Partial-volume corrected vessel volume (mL) per region of
        :data:`DEFAULT_REGIONS`.
    centreline_length_mm : dict of str to float
        Skeleton length (mm) of the vessel mask per region.
    abrupt_terminations_mm : list of tuple of float
        Skeleton end points of wide trunks (LPS mm) in the M1/M2 and
        terminal ICA regions.
    """

    side: str
    vessel_volume_ml: dict[str, float]
    centreline_length_mm: dict[str, float]
    abrupt_terminations_mm: list[tuple[float, float, float]]


@dataclass(frozen=True, eq=False)
class OcclusionAnalysis:
    """The LVO assessment of one CT angiogram.

    Parameters
    ----------
    suspected : bool
        Whether a large-vessel occlusion is suspected.
    side : str or None
        ``"left"`` or ``"right"`` when suspected.
    segment : str or None
        ``"ICA-T"``, ``"M1"`` or ``"M2"`` (approximate) when suspected.
    asymmetry_ratio : float
        Vessel volume of the insular M2 trunks, lower side over higher side
        (1 = symmetric); the quantity the decision thresholds.
    territory_asymmetry_ratio : float
        The same ratio over the whole MCA territory box.
    centreline_asymmetry_ratio : float
        Centreline length ratio (lower over higher) in the MCA territory.
    location_mm : tuple of float or None
        Estimated proximal end of the occlusion in LPS mm, when suspected.
    willis_center_mm : tuple of float
        The circle of Willis estimate (LPS mm).
    plane : MidsagittalPlane
        The mid-sagittal plane used.
    hemispheres : dict of str to HemisphereMeasures
        Measurements of ``"left"`` and ``"right"``.
    trunk_figures : dict
        When suspected: the lateral distance (mm) where each side's trunk
        stops along the M1 course (``trunk_gap_mm``) and the highest enhanced
        level of each carotid (``carotid_top_mm``), which name the segment.
    details : dict
        JSON-serialisable figures for the job record.
    """

    suspected: bool
    side: str | None
    segment: str | None
    asymmetry_ratio: float
    territory_asymmetry_ratio: float
    centreline_asymmetry_ratio: float
    location_mm: tuple[float, float, float] | None
    willis_center_mm: tuple[float, float, float]
    plane: MidsagittalPlane
    hemispheres: dict[str, HemisphereMeasures]
    trunk_figures: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


def _ratio(a: float, b: float) -> float:
    high = max(a, b)
    return 1.0 if high <= 0 else float(min(a, b) / high)


def locate_circle_of_willis(
    volume: CTVolume,
    vessel_mask: np.ndarray,
    plane: MidsagittalPlane,
    *,
    component_fraction: float = 0.2,
    radius_mm: float = 25.0,
    iterations: int = 20,
    offset_mm: tuple[float, float, float] = (0.0, 2.0, 5.0),
) -> HeadFrame:
    """Find the circle of Willis as the centre of mass of the large vessel components.

    The 26-connected components of the vessel mask at least
    ``component_fraction`` as large as the largest one are kept (the
    circle, its trunks; not skull-base fragments or calcifications).
    Starting at their median position, a mean shift with a flat kernel of
    ``radius_mm`` (half weight on the left-right axis) converges to the
    densest cluster; its left-right position is set on the mid-sagittal
    plane, and ``offset_mm`` (posterior, superior) moves it from the centre
    of mass of the trunks, which the carotid and basilar arteries below pull
    down, to the carotid-terminus level.

    Parameters
    ----------
    volume : CTVolume
        The angiogram.
    vessel_mask : numpy.ndarray
        Boolean vessel mask (slices, rows, columns).
    plane : MidsagittalPlane
        The mid-sagittal plane.
    component_fraction : float
        Smallest component kept, relative to the largest.
    radius_mm : float
        Mean-shift radius in mm.
    iterations : int
        Mean-shift iterations.
    offset_mm : tuple of float
        (left, posterior, superior) correction in mm added to the mean-shift
        mode; set on synthetic angiograms.

    Returns
    -------
    HeadFrame
        The anatomical frame with its origin at the circle of Willis.

    Raises
    ------
    ValueError
        If the vessel mask is empty.

    References
    ----------
    Fukunaga K, Hostetler L. IEEE Trans Inf Theory. 1975;21(1):32-40.
    """
    provisional = head_frame(volume, plane, plane.point_mm)
    labels, count = ndimage.label(vessel_mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        raise ValueError("the vessel mask is empty")
    voxel_ml = np.broadcast_to(volume.voxel_volume_ml[:, None, None], volume.shape)
    sizes = ndimage.sum_labels(voxel_ml, labels, np.arange(count + 1))
    sizes[0] = 0.0
    keep = sizes >= component_fraction * sizes.max()
    indices = np.argwhere(keep[labels])
    local = provisional.to_local(voxel_centres_mm(volume, indices))
    weight = volume.voxel_volume_ml[indices[:, 0]]
    centre = np.array([0.0, np.median(local[:, 1]), np.median(local[:, 2])])
    scale = np.array([0.5, 1.0, 1.0])
    for _ in range(iterations):
        near = np.linalg.norm((local - centre) * scale, axis=1) < radius_mm
        if not near.any():
            break
        moved = np.array([0.0, *np.average(local[near][:, 1:], axis=0, weights=weight[near])])
        if np.linalg.norm(moved - centre) < 0.05:
            centre = moved
            break
        centre = moved
    origin = provisional.to_patient(centre + np.asarray(offset_mm))
    return head_frame(volume, plane, origin)


def _region_sums(
    local: np.ndarray, values: np.ndarray, regions: dict[str, Region]
) -> dict[str, dict[str, float]]:
    return {
        side: {
            name: float(values[region.contains(local, side)].sum())
            for name, region in regions.items()
        }
        for side in (LEFT, RIGHT)
    }


def analyse_large_vessel_occlusion(
    volume: CTVolume,
    vessel_map: VesselMap,
    plane: MidsagittalPlane,
    *,
    min_fraction: float = 0.2,
    trunk_ratio_threshold: float = 0.30,
    mirror_tolerance_mm: float = 3.5,
    termination_min_radius_mm: float = 1.0,
    min_trunk_volume_ml: float = 0.02,
    regions: dict[str, Region] | None = None,
) -> OcclusionAnalysis:
    """Assess a CT angiogram for a large-vessel occlusion of the anterior circulation.

    Parameters
    ----------
    volume : CTVolume
        The angiogram in HU.
    vessel_map : VesselMap
        Its vessel map (:func:`~dicom_node.imaging.vessels.segment_intracranial_vessels`).
    plane : MidsagittalPlane
        Its mid-sagittal plane.
    min_fraction : float
        Smallest enhancement fraction (of the arterial peak) counted in the
        partial-volume corrected vessel volume.
    trunk_ratio_threshold : float
        An LVO is suspected when the M2-trunk vessel volume of one side is
        below this fraction of the other side's.
    mirror_tolerance_mm : float
        A mirrored healthy-side vessel voxel is *present* on the suspected
        side when an enhanced voxel lies within this distance (mm).
    termination_min_radius_mm : float
        Smallest in-plane lumen radius (mm) at a skeleton end point that
        counts as an abrupt termination.
    min_trunk_volume_ml : float
        The side with more M2-trunk vessel volume must have at least this
        much (mL); otherwise neither MCA is enhanced and no comparison is made.
    regions : dict of str to Region or None
        Regions to use instead of :data:`DEFAULT_REGIONS` (same keys).

    Returns
    -------
    OcclusionAnalysis
        Decision, side, segment, asymmetry ratios, location and measures.

    Raises
    ------
    ValueError
        If the vessel map is empty or does not match the volume, or neither
        side has an enhanced MCA trunk (``min_trunk_volume_ml``).

    References
    ----------
    Menon BK, et al. Radiology. 2015;275(2):510-520; Liu Y, et al. IEEE
    Trans Med Imaging. 2001;20(3):175-192.
    """
    regions = dict(DEFAULT_REGIONS if regions is None else regions)
    if vessel_map.mask.shape != volume.shape:
        raise ValueError("vessel map and volume differ in shape")
    frame = locate_circle_of_willis(volume, vessel_map.mask, plane)

    # Partial-volume corrected vessel volume per hemisphere and region.
    enhanced = (vessel_map.enhancement_fraction >= min_fraction) & vessel_map.brain_mask
    enhanced_index = np.argwhere(enhanced)
    enhanced_local = frame.to_local(voxel_centres_mm(volume, enhanced_index))
    enhanced_ml = (
        vessel_map.enhancement_fraction[tuple(enhanced_index.T)]
        * volume.voxel_volume_ml[enhanced_index[:, 0]]
    )
    volumes = _region_sums(enhanced_local, enhanced_ml, regions)

    # Centreline length per hemisphere and region, and wide skeleton end points.
    centreline = vessel_centreline(volume, vessel_map.mask)
    midpoints_local = frame.to_local(centreline.edge_midpoint_mm)
    lengths = _region_sums(midpoints_local, centreline.edge_length_mm, regions)
    radius_mm = _in_plane_radius_mm(volume, vessel_map.mask)
    trunk_regions = (
        "terminal_internal_carotid_artery",
        "middle_cerebral_artery_m1",
        "middle_cerebral_artery_m2",
    )
    terminations: dict[str, list[tuple[float, float, float]]] = {LEFT: [], RIGHT: []}
    if len(centreline.endpoints):
        end_mm = voxel_centres_mm(volume, centreline.endpoints)
        end_local = frame.to_local(end_mm)
        wide = radius_mm[tuple(centreline.endpoints.T)] >= termination_min_radius_mm
        for hemisphere in (LEFT, RIGHT):
            in_trunk = np.zeros(len(end_mm), dtype=bool)
            for name in trunk_regions:
                in_trunk |= regions[name].contains(end_local, hemisphere)
            terminations[hemisphere] = [
                (float(p[0]), float(p[1]), float(p[2])) for p in end_mm[wide & in_trunk]
            ]

    hemispheres = {
        side: HemisphereMeasures(
            side=side,
            vessel_volume_ml={k: round(v, 4) for k, v in volumes[side].items()},
            centreline_length_mm={k: round(v, 1) for k, v in lengths[side].items()},
            abrupt_terminations_mm=terminations[side],
        )
        for side in (LEFT, RIGHT)
    }
    trunk = "middle_cerebral_artery_m2"
    territory = "middle_cerebral_artery_territory"
    trunk_ratio = _ratio(volumes[LEFT][trunk], volumes[RIGHT][trunk])
    territory_ratio = _ratio(volumes[LEFT][territory], volumes[RIGHT][territory])
    length_ratio = _ratio(lengths[LEFT][territory], lengths[RIGHT][territory])
    largest_trunk_ml = max(volumes[LEFT][trunk], volumes[RIGHT][trunk])
    if largest_trunk_ml < min_trunk_volume_ml:
        raise ValueError(
            "no enhanced middle cerebral artery trunk on either side (largest M2-region "
            f"vessel volume {largest_trunk_ml:.3f} mL, need {min_trunk_volume_ml} mL): "
            "no arterial contrast, or not an angiogram"
        )
    suspected = trunk_ratio < trunk_ratio_threshold
    side: str | None = None
    segment = None
    location = None
    figures: dict = {}
    if suspected:
        side = LEFT if volumes[LEFT][trunk] < volumes[RIGHT][trunk] else RIGHT
        healthy = RIGHT if side == LEFT else LEFT
        vessel_index = np.argwhere(vessel_map.mask)
        vessel_local = frame.to_local(voxel_centres_mm(volume, vessel_index))
        segment, location, figures = _segment_and_location(
            frame,
            enhanced_local,
            enhanced_ml,
            vessel_map.enhancement_fraction[tuple(enhanced_index.T)],
            vessel_local,
            side,
            healthy,
            regions,
            terminations[side],
            mirror_tolerance_mm,
        )
    details = {
        "willis_center_mm": [round(float(x), 2) for x in frame.origin_mm],
        "midsagittal_normal": [round(float(x), 4) for x in plane.normal],
        "midsagittal_residual_mm": round(plane.residual_mm, 2),
        "asymmetry_ratio_m2": round(trunk_ratio, 3),
        "asymmetry_ratio_mca_territory": round(territory_ratio, 3),
        "centreline_ratio_mca_territory": round(length_ratio, 3),
        "vessel_volume_ml": {s: hemispheres[s].vessel_volume_ml for s in (LEFT, RIGHT)},
        "centreline_length_mm": {s: hemispheres[s].centreline_length_mm for s in (LEFT, RIGHT)},
        "abrupt_terminations": {s: len(terminations[s]) for s in (LEFT, RIGHT)},
        **figures,
        "parameters": {
            "min_fraction": min_fraction,
            "trunk_ratio_threshold": trunk_ratio_threshold,
            "mirror_tolerance_mm": mirror_tolerance_mm,
            "termination_min_radius_mm": termination_min_radius_mm,
            "min_trunk_volume_ml": min_trunk_volume_ml,
        },
    }
    return OcclusionAnalysis(
        suspected=bool(suspected),
        side=side,
        segment=segment,
        asymmetry_ratio=trunk_ratio,
        territory_asymmetry_ratio=territory_ratio,
        centreline_asymmetry_ratio=length_ratio,
        location_mm=location,
        willis_center_mm=tuple(float(x) for x in frame.origin_mm),  # type: ignore[arg-type]
        plane=plane,
        hemispheres=hemispheres,
        trunk_figures=figures,
        details=details,
    )


def _in_plane_radius_mm(volume: CTVolume, mask: np.ndarray) -> np.ndarray:
    """In-plane distance (mm) of each mask voxel to the nearest background pixel."""
    radius = np.zeros(mask.shape, dtype=np.float32)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        radius[k] = ndimage.distance_transform_edt(mask[k], sampling=volume.pixel_spacing_mm)
    return radius


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


def occlusion_region_mask(
    volume: CTVolume, location_mm: tuple[float, float, float], radius_mm: float = 5.0
) -> np.ndarray:
    """Return a ball around a point as a mask on the volume's grid.

    Parameters
    ----------
    volume : CTVolume
        The grid.
    location_mm : tuple of float
        Centre in LPS mm.
    radius_mm : float
        Radius in mm (measured in patient space, so exact on sheared and
        unevenly spaced stacks). A slice the ball misses gets nothing; the
        slice nearest the centre always gets at least the centre voxel.

    Returns
    -------
    numpy.ndarray
        Boolean array (slices, rows, columns).

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
    """
    centre = np.asarray(location_mm, dtype=np.float64)
    mask = np.zeros(volume.shape, dtype=bool)
    row_mm, col_mm = volume.pixel_spacing_mm
    for k in range(volume.shape[0]):
        relative = centre - volume.image_positions_mm[k]
        height = float(relative @ volume.normal)
        if abs(height) > radius_mm:
            continue
        in_plane = (radius_mm**2 - height**2) ** 0.5
        r0 = relative @ volume.column_direction / row_mm
        c0 = relative @ volume.row_direction / col_mm
        rows = np.arange(volume.shape[1])[:, None]
        cols = np.arange(volume.shape[2])[None, :]
        mask[k] = ((rows - r0) * row_mm) ** 2 + ((cols - c0) * col_mm) ** 2 <= in_plane**2
    index = volume.nearest_voxel_indices(centre[None, :])[0]
    if index[0] >= 0:
        mask[tuple(index)] = True
    return mask
