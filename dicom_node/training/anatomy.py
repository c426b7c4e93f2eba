"""Head anatomy derived from CT numbers, for placing synthetic hemorrhages.

The synthetic-lesion engine (:mod:`dicom_node.training.lesions`) needs to
know where the inner table of the skull is, which voxels are parenchyma,
which are cerebrospinal fluid (CSF) in the ventricles and which in the sulci
and cisterns, and where the mid-sagittal line (falx) runs. This module
derives all of them once per base series from the HU alone: the intracranial
mask of :func:`dicom_node.imaging.masks.intracranial_mask`, then tissue
classes by CT number after a light in-plane smoothing, then ventricles as the
deep, central CSF components.

The classes are approximate (a threshold segmentation of one scan, not an
atlas); they are meant to put synthetic blood in anatomically plausible
places, not to measure anatomy.

References
----------
Muschelli J, Ullman NL, Mould WA, et al. Validated automatic brain extraction
of head CT images. NeuroImage. 2015;114:379-385. Osborn AG. Osborn's Brain:
Imaging, Pathology, and Anatomy. 2nd ed. Elsevier; 2017 (CT numbers of
parenchyma about 20-45 HU and of CSF about 0-15 HU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dicom_node.imaging.masks import in_plane_depth_mm, intracranial_mask
from dicom_node.series.volume import CTVolume

logger = logging.getLogger(__name__)

#: HU range (after smoothing) of brain parenchyma.
BRAIN_HU_RANGE = (18.0, 45.0)
#: HU range (after smoothing) of cerebrospinal fluid.
CSF_HU_RANGE = (-5.0, 15.0)
#: In-plane Gaussian sigma (mm) applied before classifying tissue by HU.
CLASSIFY_SIGMA_MM = 1.0
#: A ventricle component lies at least this far (mm) inside the inner table on average.
VENTRICLE_MIN_DEPTH_MM = 25.0
#: ... and its centroid at most this far (mm) from the mid-sagittal line.
VENTRICLE_MAX_MIDLINE_MM = 30.0
#: ... and is at least this large (mL).
VENTRICLE_MIN_VOLUME_ML = 0.15


@dataclass(frozen=True, eq=False)
class HeadAnatomy:
    """Tissue classes and landmarks of one head CT, on the volume's grid.

    Every array has the shape (slices, rows, columns) of the volume, slices in
    :func:`dicom_node.series.volume.load_ct_volume` order, except
    ``midline_column`` (slices,).

    Parameters
    ----------
    intracranial : numpy.ndarray
        bool: inside the inner table of the skull
        (:func:`dicom_node.imaging.masks.intracranial_mask`).
    brain : numpy.ndarray
        bool: parenchyma (about 18-45 HU after smoothing) inside ``intracranial``.
    csf : numpy.ndarray
        bool: CSF density (about -5-15 HU after smoothing) inside ``intracranial``.
    ventricles : numpy.ndarray
        bool: deep, central CSF components (lateral and third ventricles).
    sulci_cisterns : numpy.ndarray
        bool: CSF that is not ventricle (sulci, basal cisterns, fissures).
    depth_mm : numpy.ndarray
        float32: in-plane distance in mm from the inner table (the edge of
        ``intracranial``) inside ``intracranial``, 0 outside.
    midline_column : numpy.ndarray
        float64 (slices,): column index (may be fractional) of the
        mid-sagittal line (falx) in each slice.

    References
    ----------
    Osborn AG. Osborn's Brain. 2nd ed. Elsevier; 2017.
    """

    intracranial: np.ndarray
    brain: np.ndarray
    csf: np.ndarray
    ventricles: np.ndarray
    sulci_cisterns: np.ndarray
    depth_mm: np.ndarray
    midline_column: np.ndarray


def midline_columns(intracranial: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """Estimate the column of the mid-sagittal line in each slice.

    In each slice, the midpoint between the leftmost and rightmost
    intracranial pixel of every row at least 40 mm wide is taken, and the
    median over rows is the midline column. Slices without such rows take the
    value of the nearest slice that has one (the image centre if none has).

    Parameters
    ----------
    intracranial : numpy.ndarray
        bool (slices, rows, columns).
    pixel_spacing_mm : tuple of float
        (row spacing, column spacing) in mm.

    Returns
    -------
    numpy.ndarray
        float64 (slices,): column index of the midline.

    References
    ----------
    Liu R, Li S, Su B, et al. Automatic detection and quantification of brain
    midline shift using anatomical marker model. Comput Med Imaging Graph.
    2014;38(1):1-14 (midline from the symmetry of the skull).
    """
    slices, _, columns = intracranial.shape
    min_width = 40.0 / pixel_spacing_mm[1]
    result = np.full(slices, np.nan)
    col_index = np.arange(columns)
    for k in range(slices):
        rows_any = intracranial[k].any(axis=1)
        if not rows_any.any():
            continue
        m = intracranial[k][rows_any]
        left = np.argmax(m, axis=1)
        right = columns - 1 - np.argmax(m[:, ::-1], axis=1)
        wide = (right - left) >= min_width
        if wide.sum() >= 3:
            result[k] = float(np.median(0.5 * (left[wide] + right[wide])))
        elif m.any():
            result[k] = float(np.mean(col_index[np.nonzero(m)[1]]))
    known = np.flatnonzero(~np.isnan(result))
    if known.size == 0:
        return np.full(slices, (columns - 1) / 2.0)
    missing = np.flatnonzero(np.isnan(result))
    for gap in missing:
        result[gap] = result[known[np.argmin(np.abs(known - gap))]]
    return result


def split_csf(
    csf: np.ndarray,
    intracranial: np.ndarray,
    depth_mm: np.ndarray,
    midline_column: np.ndarray,
    voxel_volume_ml: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Split CSF into ventricles and sulci/cisterns.

    CSF is opened in plane by about 1 mm (thin sulci drop out), labelled in
    3D, and a component is a ventricle when it is large enough, its mean
    depth from the inner table is large and its centroid lies near the
    midline. The ventricle mask is the (unopened) CSF connected in plane to
    those components; the rest is sulci and cisterns.

    Parameters
    ----------
    csf, intracranial : numpy.ndarray
        bool (slices, rows, columns).
    depth_mm : numpy.ndarray
        float (slices, rows, columns): in-plane depth from the inner table in mm.
    midline_column : numpy.ndarray
        float (slices,): midline column per slice.
    voxel_volume_ml : numpy.ndarray
        float (slices,): voxel volume of each slice in mL.
    pixel_spacing_mm : tuple of float
        (row spacing, column spacing) in mm.

    Returns
    -------
    tuple of numpy.ndarray
        (ventricles, sulci_cisterns), bool (slices, rows, columns), disjoint,
        their union is ``csf``.

    References
    ----------
    Rosenfeld A, Pfaltz JL. J ACM. 1966;13(4):471-494 (connected components).
    """
    row_mm, col_mm = pixel_spacing_mm
    radius = max(int(round(0.75 / min(row_mm, col_mm))), 1)
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    disk = (y * row_mm) ** 2 + (x * col_mm) ** 2 <= (radius * min(row_mm, col_mm)) ** 2 + 1e-9
    opened = ndimage.binary_opening(csf, structure=disk[None, :, :])
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    labels, count = ndimage.label(opened, structure=structure)
    ventricles = np.zeros(csf.shape, dtype=bool)
    if count:
        index = np.arange(1, count + 1)
        ks, _, cs = np.nonzero(labels)
        lab = labels[ks, _, cs]
        vox = voxel_volume_ml[ks]
        volume = np.bincount(lab, weights=vox, minlength=count + 1)[1:]
        n = np.bincount(lab, minlength=count + 1)[1:].astype(np.float64)
        depth = np.bincount(lab, weights=depth_mm[ks, _, cs], minlength=count + 1)[1:]
        offset = np.bincount(
            lab, weights=np.abs(cs - midline_column[ks]) * col_mm, minlength=count + 1
        )[1:]
        n = np.maximum(n, 1.0)
        keep = (
            (volume >= VENTRICLE_MIN_VOLUME_ML)
            & (depth / n >= VENTRICLE_MIN_DEPTH_MM)
            & (offset / n <= VENTRICLE_MAX_MIDLINE_MM)
        )
        seeds = np.isin(labels, index[keep])
        # Grow back into the unopened CSF that touches the kept components, in plane.
        plane = np.zeros((3, 3, 3), dtype=bool)
        plane[1] = True
        grown_labels, _count = ndimage.label(csf, structure=plane)
        touched = np.unique(grown_labels[seeds])
        touched = touched[touched > 0]
        ventricles = np.isin(grown_labels, touched) & (depth_mm >= 0.5 * VENTRICLE_MIN_DEPTH_MM)
    return ventricles, csf & ~ventricles


def derive_anatomy(volume: CTVolume) -> HeadAnatomy:
    """Derive the intracranial space, tissue classes, ventricles and midline of a head CT.

    Computed once per base series (about 1-2 s for 512 x 512 x 28 on one
    core); :func:`dicom_node.training.augment.deform_case` warps the result
    together with the HU instead of deriving it again.

    Parameters
    ----------
    volume : CTVolume
        A non-contrast head CT, HU (slices, rows, columns).

    Returns
    -------
    HeadAnatomy
        Masks on the volume's grid.

    Raises
    ------
    ValueError
        If no intracranial space is found (not a head CT, or no closed skull).

    References
    ----------
    Muschelli J, et al. NeuroImage. 2015;114:379-385; Osborn AG. Osborn's
    Brain. 2nd ed. Elsevier; 2017.
    """
    intracranial = intracranial_mask(volume)
    if not intracranial.any():
        raise ValueError(f"no intracranial space found in series {volume.series_instance_uid}")
    row_mm, col_mm = volume.pixel_spacing_mm
    sigma = (0.0, CLASSIFY_SIGMA_MM / row_mm, CLASSIFY_SIGMA_MM / col_mm)
    smoothed = ndimage.gaussian_filter(volume.hu.astype(np.float32), sigma=sigma)
    brain = intracranial & (smoothed >= BRAIN_HU_RANGE[0]) & (smoothed <= BRAIN_HU_RANGE[1])
    csf = intracranial & (smoothed >= CSF_HU_RANGE[0]) & (smoothed < CSF_HU_RANGE[1])
    depth = in_plane_depth_mm(intracranial, volume.pixel_spacing_mm).astype(np.float32)
    midline = midline_columns(intracranial, volume.pixel_spacing_mm)
    ventricles, sulci = split_csf(
        csf, intracranial, depth, midline, volume.voxel_volume_ml, volume.pixel_spacing_mm
    )
    anatomy = HeadAnatomy(
        intracranial=intracranial,
        brain=brain,
        csf=csf,
        ventricles=ventricles,
        sulci_cisterns=sulci,
        depth_mm=depth,
        midline_column=midline,
    )
    logger.debug(
        "anatomy of series %s: intracranial %.0f mL, brain %.0f mL, csf %.1f mL, "
        "ventricles %.1f mL",
        volume.series_instance_uid,
        volume.mask_volume_ml(intracranial),
        volume.mask_volume_ml(brain),
        volume.mask_volume_ml(csf),
        volume.mask_volume_ml(ventricles),
    )
    return anatomy
