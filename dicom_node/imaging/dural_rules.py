"""The ``dural`` and ``dural_band`` blood rules: dense dura that the model calls blood.

``dural`` removes thin line-like candidate blood (the falx within the
midline zone, the tentorium and the inner table elsewhere) by an in-plane
opening; ``dural_band`` removes candidate blood that lies on a thin,
smooth, bilaterally symmetric dense band between brain
(:func:`dural_band_figures` measures it). What each rule does and why is in
the module docstring of :mod:`dicom_node.imaging.blood_rules`, which runs
them (:func:`~dicom_node.imaging.blood_rules.apply_blood_rules`) and
re-exports the public names of this module, split out of it.

References
----------
Osborn AG. Osborn's Brain. 2nd ed. Elsevier; 2017 (dense falx and
tentorium). Zhang TY, Suen CY. A fast parallel algorithm for thinning
digital patterns. Commun ACM 1984;27:236-239 (the skeleton).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from dicom_node.imaging.cavity_midline import MidsagittalLine, _mirror_pixels
from dicom_node.imaging.head_ct import CranialCavity
from dicom_node.series.kernels import disk_structuring_element

if TYPE_CHECKING:  # blood_rules imports this module to run the rules
    from dicom_node.imaging.blood_rules import BloodRuleSettings


def _drop_dural_lines(
    mask: np.ndarray,
    midline: MidsagittalLine,
    pixel_spacing_mm,
    settings: BloodRuleSettings,
    thin_ok: np.ndarray | None,
) -> np.ndarray:
    """Remove thin line-like blood: in the falx zone, and elsewhere unless thin is allowed.

    A pixel survives when it belongs to an in-plane opening of the blood mask
    with a disk of diameter ``dural_max_thickness_mm`` (falx zone) or
    ``line_max_thickness_mm`` (elsewhere): structures thinner than the disk
    vanish under the opening, thicker collections keep their shape.
    """
    out = mask.copy()
    rows, cols = mask.shape[1:]
    rr, cc = np.mgrid[0:rows, 0:cols]
    falx = np.abs(midline.distance_mm(rr, cc)) <= settings.falx_zone_mm
    falx_kernel = disk_structuring_element(settings.dural_max_thickness_mm / 2.0, pixel_spacing_mm)
    line_kernel = disk_structuring_element(settings.line_max_thickness_mm / 2.0, pixel_spacing_mm)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        m = mask[k].astype(np.uint8)
        thick_falx = cv2.morphologyEx(m, cv2.MORPH_OPEN, falx_kernel) > 0
        thick_line = cv2.morphologyEx(m, cv2.MORPH_OPEN, line_kernel) > 0
        drop = (falx & ~thick_falx) | (~falx & ~thick_line)
        if thin_ok is not None:
            drop &= ~thin_ok[k]
        out[k] &= ~drop
    return out


def dural_band_figures(
    band: np.ndarray,
    dense: np.ndarray,
    smooth_hu: np.ndarray,
    cavity_depth_mm: np.ndarray,
    midline: MidsagittalLine,
) -> dict[str, float]:
    """Measure one dense band on one slice: the figures of the ``dural_band`` rule.

    Parameters
    ----------
    band : numpy.ndarray
        bool (rows, columns): the dense band around one candidate (a local
        window of the slice's dense pixels, the parts that touch it).
    dense : numpy.ndarray
        bool (rows, columns): the slice's pixels dense enough to be the other
        half of a dural band (where the band's mirror image is looked for).
    smooth_hu : numpy.ndarray
        float32 (rows, columns): the slice's smoothed HU.
    cavity_depth_mm : numpy.ndarray
        float32 (rows, columns): in-plane distance (mm) to the inner table
        (:class:`~dicom_node.imaging.head_ct.CranialCavity` ``depth_mm``).
    midline : MidsagittalLine
        The stack's mid-sagittal line.

    Returns
    -------
    dict
        ``thickness_mm`` (area over skeleton length), ``length_mm`` (skeleton),
        ``depth_mm`` (median distance from the inner table), ``csf_fraction``
        (of the rim 1-3 mm outside the band) and ``symmetry`` (fraction of the
        band that, mirrored about the mid-sagittal line and shifted as a whole
        by up to :data:`BAND_MIRROR_SHIFT_MM` in rows and columns, lands within
        1.5 mm of a dense pixel; the best shift counts).

    References
    ----------
    Zhang TY, Suen CY. A fast parallel algorithm for thinning digital
    patterns. Commun ACM 1984;27:236-239 (the skeleton, via scikit-image).
    """
    from skimage.morphology import skeletonize

    row_mm, col_mm = midline.pixel_spacing_mm
    pixel_mm = float(np.sqrt(row_mm * col_mm))
    area_mm2 = float(band.sum()) * row_mm * col_mm
    length_mm = max(float(skeletonize(band).sum()) * pixel_mm, pixel_mm)
    m = band.astype(np.uint8)
    inner = cv2.dilate(m, disk_structuring_element(1.0, (row_mm, col_mm))) > 0
    outer = cv2.dilate(m, disk_structuring_element(3.0, (row_mm, col_mm))) > 0
    rim = outer & ~inner & (cavity_depth_mm > 0)
    rim_hu = smooth_hu[rim]
    csf = float(((rim_hu >= -5.0) & (rim_hu <= 15.0)).mean()) if rim_hu.size else 0.0
    rows, cols = np.nonzero(band)
    mr, mc = _mirror_pixels(rows.astype(np.float64), cols.astype(np.float64), midline)
    near = cv2.dilate(dense.astype(np.uint8), disk_structuring_element(1.5, (row_mm, col_mm))) > 0
    # The fitted mid-sagittal line and a real head's dura are symmetric to a few mm only:
    # the mirror image may shift as a whole by up to BAND_MIRROR_SHIFT_MM.
    best = 0.0
    steps = np.arange(-BAND_MIRROR_SHIFT_MM, BAND_MIRROR_SHIFT_MM + 0.01, 1.0)
    for dy in steps:
        for dx in steps:
            rr = np.rint(mr + dy / row_mm).astype(int)
            cc = np.rint(mc + dx / col_mm).astype(int)
            ok = (rr >= 0) & (rr < band.shape[0]) & (cc >= 0) & (cc < band.shape[1])
            if not ok.any():
                continue
            best = max(best, float(near[rr[ok], cc[ok]].sum()) / rows.size)
    return {
        "thickness_mm": area_mm2 / length_mm,
        "length_mm": length_mm,
        "depth_mm": float(np.median(cavity_depth_mm[band])),
        "csf_fraction": csf,
        "symmetry": best,
    }


def _is_dural_band(figures: dict[str, float], settings: BloodRuleSettings) -> bool:
    return (
        figures["thickness_mm"] <= settings.band_max_thickness_mm
        and figures["length_mm"] >= settings.band_min_length_mm
        and figures["depth_mm"] >= settings.band_min_depth_mm
        and figures["csf_fraction"] <= settings.band_max_csf_fraction
        and figures["symmetry"] >= settings.band_min_symmetry
    )


#: Largest shift (mm, rows and columns) of a band's mirror image onto its other half.
BAND_MIRROR_SHIFT_MM = 6.0
#: Radius (mm) of the window around a candidate in which its dense band is traced.
BAND_WINDOW_MM = 15.0
#: Smallest excess (HU) of a candidate's median over the surrounding brain for the band test.
BAND_MIN_CONTRAST_HU = 12.0
#: Fraction of the way from the brain's level to the candidate's at which the band is cut.
BAND_LEVEL_FRACTION = 0.6


def _drop_dural_bands(
    mask: np.ndarray,
    hu: np.ndarray,
    slab_of_slice: np.ndarray,
    cavity: CranialCavity,
    midline: MidsagittalLine,
    pixel_spacing_mm,
    settings: BloodRuleSettings,
) -> np.ndarray:
    """Remove candidate blood that lies on a symmetric thin dense band (see module docstring)."""
    out = mask.copy()
    pixel_mm = float(np.sqrt(pixel_spacing_mm[0] * pixel_spacing_mm[1]))
    ring_outer = disk_structuring_element(6.0, pixel_spacing_mm)
    ring_inner = disk_structuring_element(2.0, pixel_spacing_mm)
    window = disk_structuring_element(BAND_WINDOW_MM, pixel_spacing_mm)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        slab = int(slab_of_slice[k])
        inside = cavity.cavity[slab] & (cavity.depth_mm[slab] >= 2.0)
        depth = cavity.depth_mm[slab]
        s = cv2.GaussianBlur(np.ascontiguousarray(hu[k], dtype=np.float32), (0, 0), 0.75 / pixel_mm)
        count, blobs = cv2.connectedComponents(mask[k].astype(np.uint8), connectivity=8)
        for index in range(1, count):
            blob = blobs == index
            m = blob.astype(np.uint8)
            ring = (
                (cv2.dilate(m, ring_outer) > 0)
                & ~(cv2.dilate(m, ring_inner) > 0)
                & inside
                & (s >= 15.0)
                & (s <= 50.0)
            )
            if ring.sum() < 10:
                continue
            brain = float(np.median(s[ring]))
            level = float(np.median(s[blob]))
            if level - brain < BAND_MIN_CONTRAST_HU:
                continue
            cut = brain + BAND_LEVEL_FRACTION * (level - brain)
            dense = inside & (s >= cut) & (s <= settings.max_hu)
            local = dense & (cv2.dilate(m, window) > 0)
            n, parts = cv2.connectedComponents(local.astype(np.uint8), connectivity=8)
            touched = np.unique(parts[blob & local])
            touched = touched[touched > 0]
            if touched.size == 0:
                continue
            band = np.isin(parts, touched)
            # The other half of a dense tentorium may read less dense: its shape
            # is looked for at a lower level.
            mirror_cut = brain + settings.band_mirror_level_fraction * (level - brain)
            mirror = inside & (s >= mirror_cut) & (s <= settings.max_hu)
            if _is_dural_band(dural_band_figures(band, mirror, s, depth, midline), settings):
                out[k] &= ~blob
    return out
