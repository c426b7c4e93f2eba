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

The territories and the circle of Willis (steps 2 and 3) are in
:mod:`dicom_node.imaging.occlusion_regions`, the trunk profiles that name
the segment and locate it (step 5) in
:mod:`dicom_node.imaging.occlusion_segments`; this module measures the
hemispheres and decides (step 4), and exports the names of both.

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

from dicom_node.imaging.midline import MidsagittalPlane
from dicom_node.imaging.occlusion_regions import (
    CAROTID_TERMINUS_MM,
    DEFAULT_REGIONS,
    LEFT,
    RIGHT,
    VENTRICULAR_ATRIUM_MM,
    Region,
    _region_sums,
    locate_circle_of_willis,
)
from dicom_node.imaging.occlusion_segments import (
    CAROTID_COLUMN_MM,
    M1_BAND_MM,
    SEGMENT_ICA_T,
    SEGMENT_M1,
    SEGMENT_M2,
    TRUNK_SEARCH_START_MM,
    TrunkProfile,
    _segment_and_location,
    trunk_profile,
)
from dicom_node.imaging.occlusion_segments import _strongest_centre as _strongest_centre
from dicom_node.imaging.vessels import VesselMap, vessel_centreline, voxel_centres_mm
from dicom_node.series.volume import CTVolume

__all__ = [
    "CAROTID_COLUMN_MM",
    "CAROTID_TERMINUS_MM",
    "DEFAULT_REGIONS",
    "LEFT",
    "M1_BAND_MM",
    "RIGHT",
    "SEGMENT_ICA_T",
    "SEGMENT_M1",
    "SEGMENT_M2",
    "TRUNK_SEARCH_START_MM",
    "VENTRICULAR_ATRIUM_MM",
    "HemisphereMeasures",
    "OcclusionAnalysis",
    "Region",
    "TrunkProfile",
    "analyse_large_vessel_occlusion",
    "locate_circle_of_willis",
    "occlusion_region_mask",
    "trunk_profile",
]

logger = logging.getLogger(__name__)


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
