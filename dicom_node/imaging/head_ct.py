"""Input plausibility: is this volume a non-contrast human head CT in Hounsfield units?

A hemorrhage model asked about a plastic phantom, a zero-filled or
skull-stripped export, an 8-bit screenshot or a contrast-enhanced study will
answer anyway, and usually with blood. :func:`check_head_ct` runs before the
model and raises :class:`~dicom_node.errors.NotAnalysableError` with the
check and the reason, so the node reports "not analysable: <reason>" instead
of a finding. The checks, in order:

``hu_scale``
    The values span what a CT of a head in HU spans: air near -1000 HU and
    bone above 300 HU somewhere in the volume. An 8-bit windowed image
    (0-255) or one clipped to a window fails here.
``background``
    Air surrounds the head: at least :attr:`HeadCtLimits.min_air_fraction`
    of all voxels below -500 HU. A background zero-filled to 0 HU (or any
    constant) fails here, as does a skull-stripped export.
``skull``
    A closed bone ring encloses a cranial cavity of at least
    :attr:`HeadCtLimits.min_cavity_ml`.
``brain_content``
    The cavity holds brain: at least :attr:`HeadCtLimits.min_brain_fraction`
    of it in the parenchyma range 15-50 HU (after light smoothing) and at
    most :attr:`HeadCtLimits.max_cavity_air_fraction` of it air. A head
    phantom (air and plastic inserts inside a bone-like shell) fails here.
``contrast``
    No iodinated contrast: the header names no Contrast/Bolus Agent, and
    the cavity holds less than :attr:`HeadCtLimits.max_enhanced_ml` of
    voxels at 150-600 HU more than 4 mm inside the inner table and more than
    3 mm from any voxel above 600 HU (enhanced arteries and venous sinuses;
    physiologic calcifications are far smaller, and bone's partial-volume
    rim is left out).

Everything runs on the slab grid of the ICH model
(:func:`~dicom_node.imaging.ich_input.slab_grid`), at source pixel spacing.

References
----------
DICOM PS3.3 C.8.2.1 CT Image Module (Rescale to HU), C.7.6.4 Contrast/Bolus
Module. CT numbers of air, CSF, grey and white matter, blood and bone:
Hounsfield GN. Br J Radiol 1973;46:1016-1022; Osborn AG. Osborn's Brain. 2nd
ed. Elsevier; 2017. Skull-fill approach to the cavity: Muschelli J, et al.
NeuroImage 2015;114:379-385. Quality control of AI inputs: Kahn CE Jr, et
al., "Checklist for AI in medical imaging" (CLAIM), Radiol Artif Intell 2020.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from dicom_node.errors import NotAnalysableError
from dicom_node.series.kernels import disk_structuring_element

logger = logging.getLogger(__name__)

#: Parenchyma range (HU): white matter about 20-30, grey matter 35-45.
BRAIN_HU_RANGE = (15.0, 50.0)
#: Depth (mm) of the vault's outer table to its inner table, generously.
SKULL_DEPTH_MM = 12.0
#: Slabs whose cavity is at least this fraction of the largest lie above the skull base.
SUPRATENTORIAL_AREA_FRACTION = 0.6
#: A slab with this many pixels above 600 HU deep inside the outline cuts the skull base.
DEEP_BONE_MIN_PIXELS = 50
#: Dense voxels this close (mm) to one above 600 HU are bone's partial volume.
BONE_MARGIN_MM = 3.0
#: Enhanced lumen range (HU) of the contrast check.
ENHANCED_HU_RANGE = (150.0, 600.0)


@dataclass(frozen=True)
class HeadCtLimits:
    """Limits of :func:`check_head_ct`.

    Parameters
    ----------
    min_air_fraction : float
        Fewest voxels below -500 HU, as a fraction of the volume.
    min_bone_hu : float
        The brightest voxels (99.9th percentile) must reach this (HU).
    bone_min_hu : float
        HU above which a pixel is bone when the skull ring is traced.
    skull_closing_mm : float
        Radius (mm) of the closing that seals sutures and foramina.
    min_cavity_ml : float
        Smallest cranial cavity (mL).
    min_brain_fraction : float
        Fewest cavity voxels in :data:`BRAIN_HU_RANGE`.
    max_cavity_air_fraction : float
        Most cavity voxels below -200 HU.
    max_enhanced_ml : float
        Most cavity volume (mL) in :data:`ENHANCED_HU_RANGE` deeper than
        ``enhanced_depth_mm``.
    enhanced_depth_mm : float
        Depth (mm) inside the cavity edge below which dense voxels are left
        to the skull's partial volume.
    """

    min_air_fraction: float = 0.05
    min_bone_hu: float = 300.0
    bone_min_hu: float = 150.0
    skull_closing_mm: float = 5.0
    min_cavity_ml: float = 300.0
    min_brain_fraction: float = 0.5
    max_cavity_air_fraction: float = 0.10
    max_enhanced_ml: float = 2.0
    enhanced_depth_mm: float = 4.0


@dataclass(frozen=True, eq=False)
class HeadCtMeasures:
    """What :func:`check_head_ct` measured; kept for the job details and the blood rules.

    Parameters
    ----------
    cavity : CranialCavity
        The region enclosed by the skull, per slab, with its depth maps.
    figures : dict
        JSON-serialisable figures: ``air_fraction``, ``bone_p999_hu``,
        ``cavity_ml``, ``brain_fraction``, ``cavity_air_fraction``,
        ``enhanced_ml``.
    """

    cavity: CranialCavity
    figures: dict


def _fill_holes(ring: np.ndarray) -> np.ndarray:
    """Pixels enclosed by ``ring`` (uint8 0/1), ring excluded; flood from the border."""
    padded = np.pad(ring, 1).astype(np.uint8)
    flood = padded.copy()
    mask = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), dtype=np.uint8)
    cv2.floodFill(flood, mask, (0, 0), 1)
    return flood[1:-1, 1:-1] == 0


@dataclass(frozen=True, eq=False)
class CranialCavity:
    """The cranial cavity of a stack of slabs, with two depth maps.

    Parameters
    ----------
    cavity : numpy.ndarray
        bool (slabs, rows, columns): inside a closed bone ring, bone excluded.
    depth_mm : numpy.ndarray
        float32 (slabs, rows, columns): in-plane distance (mm) of each cavity
        pixel to the nearest pixel outside the cavity (the inner table, or a
        dense focus); 0 outside it.
    outline_depth_mm : numpy.ndarray
        float32 (slabs, rows, columns): in-plane distance (mm) to the outside
        of the head's bony outline (skull included); dense foci deep inside
        it are calcifications or skull-base bone, not the vault.
    """

    cavity: np.ndarray
    depth_mm: np.ndarray
    outline_depth_mm: np.ndarray


def cranial_cavity(
    hu: np.ndarray, pixel_spacing_mm: tuple[float, float], limits: HeadCtLimits | None = None
) -> CranialCavity:
    """Trace the cranial cavity slab by slab and measure depth from the inner table.

    Parameters
    ----------
    hu : numpy.ndarray
        float32 array (slabs, rows, columns) in HU.
    pixel_spacing_mm : tuple of float
        (row, column) spacing in mm.
    limits : HeadCtLimits or None
        ``bone_min_hu`` and ``skull_closing_mm``; defaults when None.

    Returns
    -------
    CranialCavity
        The cavity and its depth maps.

    References
    ----------
    Muschelli J, et al. NeuroImage 2015;114:379-385.
    """
    limits = limits or HeadCtLimits()
    kernel = disk_structuring_element(limits.skull_closing_mm, pixel_spacing_mm)
    cavity = np.zeros(hu.shape, dtype=bool)
    depth = np.zeros(hu.shape, dtype=np.float32)
    outline = np.zeros(hu.shape, dtype=np.float32)
    row_mm, col_mm = pixel_spacing_mm
    pixel_mm = float(np.sqrt(row_mm * col_mm))
    for k in range(hu.shape[0]):
        bone = (hu[k] > limits.bone_min_hu).astype(np.uint8)
        if not bone.any():
            continue
        ring = cv2.morphologyEx(bone, cv2.MORPH_CLOSE, kernel)
        head = _fill_holes(ring) | (ring > 0)
        inside = head & (ring == 0)
        if not inside.any():
            continue
        cavity[k] = inside
        outline[k] = cv2.distanceTransform(head.astype(np.uint8), cv2.DIST_L2, 5) * pixel_mm
        depth[k] = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5) * pixel_mm
    return CranialCavity(cavity=cavity, depth_mm=depth, outline_depth_mm=outline)


def enhanced_voxels(
    smoothed: np.ndarray,
    traced: CranialCavity,
    pixel_spacing_mm: tuple[float, float],
    limits: HeadCtLimits | None = None,
) -> np.ndarray:
    """Voxels that look like contrast-filled lumen inside the head.

    Dense voxels (:data:`ENHANCED_HU_RANGE`) inside the bony outline, more
    than ``enhanced_depth_mm`` deeper than the outer table plus
    :data:`SKULL_DEPTH_MM`, on slabs whose cavity is at least
    :data:`SUPRATENTORIAL_AREA_FRACTION` of the largest cross-section (above
    the skull base, whose thin bone walls read 150-600 HU in thick slabs),
    and farther than :data:`BONE_MARGIN_MM` from any voxel above 600 HU.
    Enhanced arteries are denser than the 150 HU bone threshold of the cavity
    tracing, so they are looked for in the whole outline, not in the cavity.

    Parameters
    ----------
    smoothed : numpy.ndarray
        float32 (slabs, rows, columns): HU smoothed with sigma 0.75 mm.
    traced : CranialCavity
        From :func:`cranial_cavity`.
    pixel_spacing_mm : tuple of float
        (row, column) spacing in mm.
    limits : HeadCtLimits or None
        ``enhanced_depth_mm``; defaults when None.

    Returns
    -------
    numpy.ndarray
        bool (slabs, rows, columns).

    References
    ----------
    Lev MH, et al. CT angiography in the rapid triage of patients with
    hyperacute stroke. AJNR 2001;22:1478-1485 (arterial enhancement 200-400 HU).
    """
    limits = limits or HeadCtLimits()
    area = traced.cavity.reshape(traced.cavity.shape[0], -1).sum(axis=1)
    upper = area >= SUPRATENTORIAL_AREA_FRACTION * max(1, int(area.max()))
    margin = disk_structuring_element(BONE_MARGIN_MM, pixel_spacing_mm)
    out = np.zeros(smoothed.shape, dtype=bool)
    for k in np.flatnonzero(upper):
        deep = traced.outline_depth_mm[k] > SKULL_DEPTH_MM + limits.enhanced_depth_mm
        if (deep & (smoothed[k] > ENHANCED_HU_RANGE[1])).sum() >= DEEP_BONE_MIN_PIXELS:
            continue  # skull-base level: orbital roofs, sphenoid, petrous bone in the slab
        dense = (smoothed[k] >= ENHANCED_HU_RANGE[0]) & (smoothed[k] <= ENHANCED_HU_RANGE[1]) & deep
        if dense.any():
            near_bone = cv2.dilate((smoothed[k] > ENHANCED_HU_RANGE[1]).astype(np.uint8), margin)
            out[k] = dense & (near_bone == 0)
    return out


def _smooth(hu: np.ndarray, sigma_px: float) -> np.ndarray:
    out = np.empty_like(hu, dtype=np.float32)
    for k in range(hu.shape[0]):
        out[k] = cv2.GaussianBlur(np.ascontiguousarray(hu[k], dtype=np.float32), (0, 0), sigma_px)
    return out


def check_head_ct(
    hu: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    voxel_volume_ml: np.ndarray,
    *,
    contrast_bolus_agent: str | None = None,
    limits: HeadCtLimits | None = None,
) -> HeadCtMeasures:
    """Check that a volume is a non-contrast human head CT in HU (see module docstring).

    Parameters
    ----------
    hu : numpy.ndarray
        float32 array (slabs, rows, columns) in HU, the slab grid of the
        series (or its slices).
    pixel_spacing_mm : tuple of float
        (row, column) spacing in mm.
    voxel_volume_ml : numpy.ndarray
        float array (slabs,): volume of one voxel of each slab (mL).
    contrast_bolus_agent : str or None
        Contrast/Bolus Agent (0018,0010) of the series, when present.
    limits : HeadCtLimits or None
        Limits; defaults when None.

    Returns
    -------
    HeadCtMeasures
        The cavity, its depth map and the figures, when every check passes.

    Raises
    ------
    NotAnalysableError
        With ``gate`` one of ``hu_scale``, ``background``, ``skull``,
        ``brain_content``, ``contrast`` and the reason in words.

    References
    ----------
    DICOM PS3.3 C.7.6.4 Contrast/Bolus Module; Osborn AG. Osborn's Brain.
    2nd ed. Elsevier; 2017 (CT numbers of normal tissue).
    """
    limits = limits or HeadCtLimits()
    if hu.ndim != 3 or hu.shape[0] < 1:
        raise NotAnalysableError("hu_scale", f"not a volume: array of shape {hu.shape}")
    sample = hu[:, ::4, ::4]
    air_fraction = float((sample < -500.0).mean())
    bone_p999 = float(np.percentile(sample, 99.9))
    low_p01 = float(np.percentile(sample, 0.1))
    figures: dict = {"air_fraction": round(air_fraction, 4), "bone_p999_hu": round(bone_p999, 1)}
    if bone_p999 < limits.min_bone_hu or low_p01 > -500.0:
        raise NotAnalysableError(
            "hu_scale",
            f"the values are not Hounsfield units of a head CT: they span {low_p01:.0f} to "
            f"{bone_p999:.0f} HU, where air (-1000 HU) and bone (above "
            f"{limits.min_bone_hu:.0f} HU) are expected (an 8-bit, windowed or clipped image?)",
        )
    if air_fraction < limits.min_air_fraction:
        raise NotAnalysableError(
            "background",
            f"no air around the head: {air_fraction:.1%} of the voxels are below -500 HU, at "
            f"least {limits.min_air_fraction:.0%} expected (zero-filled or skull-stripped "
            "background?)",
        )
    traced = cranial_cavity(hu, pixel_spacing_mm, limits)
    cavity = traced.cavity
    per_slab = cavity.reshape(cavity.shape[0], -1).sum(axis=1)
    cavity_ml = float(per_slab @ np.asarray(voxel_volume_ml, dtype=np.float64))
    figures["cavity_ml"] = round(cavity_ml, 1)
    if cavity_ml < limits.min_cavity_ml:
        raise NotAnalysableError(
            "skull",
            f"no closed skull found: the bone encloses {cavity_ml:.0f} mL, at least "
            f"{limits.min_cavity_ml:.0f} mL expected (not a head, or the skull is cut)",
        )
    row_mm, col_mm = pixel_spacing_mm
    smoothed = _smooth(hu, 0.75 / float(np.sqrt(row_mm * col_mm)))
    inside = smoothed[cavity]
    brain_fraction = float(((inside >= BRAIN_HU_RANGE[0]) & (inside < BRAIN_HU_RANGE[1])).mean())
    cavity_air = float((inside < -200.0).mean())
    figures["brain_fraction"] = round(brain_fraction, 4)
    figures["cavity_air_fraction"] = round(cavity_air, 4)
    if brain_fraction < limits.min_brain_fraction or cavity_air > limits.max_cavity_air_fraction:
        raise NotAnalysableError(
            "brain_content",
            f"the skull does not hold brain: {brain_fraction:.0%} of the cranial cavity is in "
            f"the parenchyma range {BRAIN_HU_RANGE[0]:.0f}-{BRAIN_HU_RANGE[1]:.0f} HU (at least "
            f"{limits.min_brain_fraction:.0%} expected) and {cavity_air:.0%} is air (at most "
            f"{limits.max_cavity_air_fraction:.0%}): a phantom, an empty skull or not a human head",
        )
    agent = (contrast_bolus_agent or "").strip()
    enhanced = enhanced_voxels(smoothed, traced, pixel_spacing_mm, limits)
    per_slab = enhanced.reshape(enhanced.shape[0], -1).sum(axis=1)
    enhanced_ml = float(per_slab @ np.asarray(voxel_volume_ml, dtype=np.float64))
    figures["enhanced_ml"] = round(enhanced_ml, 3)
    if agent:
        raise NotAnalysableError(
            "contrast",
            f"a contrast-enhanced study (Contrast/Bolus Agent '{agent[:32]}'): the hemorrhage "
            "model reads non-contrast head CT only",
        )
    if enhanced_ml > limits.max_enhanced_ml:
        raise NotAnalysableError(
            "contrast",
            f"looks contrast-enhanced: {enhanced_ml:.1f} mL inside the skull at "
            f"{ENHANCED_HU_RANGE[0]:.0f}-{ENHANCED_HU_RANGE[1]:.0f} HU (at most "
            f"{limits.max_enhanced_ml:g} mL of calcification expected); the hemorrhage model "
            "reads non-contrast head CT only",
        )
    return HeadCtMeasures(cavity=traced, figures=figures)
