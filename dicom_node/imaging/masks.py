"""Anatomical masks computed from CT numbers, and mask arithmetic.

The intracranial mask is the region the skull encloses, slice by slice, kept
to soft-tissue CT numbers. It is what the hemorrhage pipeline searches and
where the synthetic-lesion engine places lesions.

References
----------
Muschelli J, Ullman NL, Mould WA, et al. Validated automatic brain extraction
of head CT images. NeuroImage. 2015;114:379-385 (threshold, fill and
largest-component approach to CT brain extraction).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy import ndimage

from dicom_node.series.kernels import disk_structuring_element
from dicom_node.series.volume import CTVolume

logger = logging.getLogger(__name__)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component of a 3D boolean mask.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean array of shape (slices, rows, columns).

    Returns
    -------
    numpy.ndarray
        Boolean array of the same shape; all False when ``mask`` is empty.

    References
    ----------
    Rosenfeld A, Pfaltz JL. Sequential operations in digital picture
    processing. J ACM. 1966;13(4):471-494 (connected component labelling).
    """
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def in_plane_depth_mm(mask: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """Return, slice by slice, the in-plane distance of each mask pixel to the mask edge.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean array of shape (slices, rows, columns).
    pixel_spacing_mm : tuple of float
        (row spacing, column spacing) in mm, as Pixel Spacing.

    Returns
    -------
    numpy.ndarray
        float64 array of the same shape: Euclidean distance in mm from each
        pixel inside ``mask`` to the nearest pixel outside it in the same
        slice; 0 outside the mask.

    References
    ----------
    Maurer CR, Qi R, Raghavan V. A linear time algorithm for computing exact
    Euclidean distance transforms. IEEE TPAMI. 2003;25(2):265-270.
    """
    depth = np.zeros(mask.shape, dtype=np.float64)
    for k in range(mask.shape[0]):
        if mask[k].any():
            depth[k] = ndimage.distance_transform_edt(mask[k], sampling=pixel_spacing_mm)
    return depth


def intracranial_mask(
    volume: CTVolume,
    *,
    bone_min_hu: float = 150.0,
    soft_tissue_min_hu: float = -15.0,
    soft_tissue_max_hu: float = 120.0,
    smoothing_sigma_mm: float = 0.5,
    skull_closing_mm: float = 5.0,
    erosion_mm: float = 2.5,
) -> np.ndarray:
    """Segment the intracranial space (brain, CSF, blood) inside the skull.

    Per slice: light Gaussian smoothing; bone = HU above ``bone_min_hu``; gaps
    in the skull narrower than about twice ``skull_closing_mm`` (sutures,
    foramina, thin partial-volume walls at the skull base) closed; the region
    the skull encloses filled (hole filling); soft-tissue HU inside it kept.
    Then the largest 3D component, an in-plane erosion of ``erosion_mm``
    (exact in mm, by the Euclidean distance transform with the pixel
    spacing) to drop the partial-volume bone edge, and the largest 3D
    component again. A slice without a closed skull ring (vertex, skull base,
    neck) contributes nothing rather than the whole head.

    The bone threshold is low (150 HU) on purpose: in 4-7 mm slices the thin
    walls of the skull base and orbits are partial-volumed well below
    cortical bone values, and a higher threshold lets the posterior and
    middle cranial fossae leak to the outside through them.

    Parameters
    ----------
    volume : CTVolume
        The head CT.
    bone_min_hu : float
        Lower HU bound of bone, after smoothing.
    soft_tissue_min_hu, soft_tissue_max_hu : float
        HU range kept inside the skull (CSF, brain, acute blood).
    smoothing_sigma_mm : float
        In-plane Gaussian sigma in mm applied before thresholding.
    skull_closing_mm : float
        Radius in mm of the in-plane closing that seals gaps in the skull ring
        before hole filling; the closed bone itself is not part of the mask.
    erosion_mm : float
        In-plane erosion in mm of the final mask.

    Returns
    -------
    numpy.ndarray
        Boolean array of shape (slices, rows, columns) on the volume's grid.

    References
    ----------
    Muschelli J, et al. NeuroImage. 2015;114:379-385; DICOM PS3.3 C.7.6.2.1.2
    Pixel Spacing (mm per pixel).
    """
    row_mm, col_mm = volume.pixel_spacing_mm
    sigma = (0.0, smoothing_sigma_mm / row_mm, smoothing_sigma_mm / col_mm)
    smoothed = ndimage.gaussian_filter(volume.hu, sigma=sigma)
    bone = (smoothed > bone_min_hu).astype(np.uint8)
    closing_kernel = disk_structuring_element(skull_closing_mm, volume.pixel_spacing_mm)
    enclosed = np.zeros(bone.shape, dtype=bool)
    for k in range(bone.shape[0]):
        skull = cv2.morphologyEx(bone[k], cv2.MORPH_CLOSE, closing_kernel) > 0
        enclosed[k] = ndimage.binary_fill_holes(skull) & ~skull
    candidate = enclosed & (smoothed >= soft_tissue_min_hu) & (smoothed <= soft_tissue_max_hu)
    candidate = largest_component(candidate)
    eroded = in_plane_depth_mm(candidate, volume.pixel_spacing_mm) > erosion_mm
    mask = largest_component(eroded)
    logger.debug(
        "intracranial mask: %.1f mL on %d of %d slices",
        volume.mask_volume_ml(mask),
        int(mask.any(axis=(1, 2)).sum()),
        mask.shape[0],
    )
    return mask


def dice_coefficient(a: np.ndarray, b: np.ndarray) -> float:
    """Return the Dice similarity coefficient of two masks on the same grid.

    Parameters
    ----------
    a, b : numpy.ndarray
        Boolean arrays of the same shape.

    Returns
    -------
    float
        2 |a & b| / (|a| + |b|) in [0, 1]; 1.0 when both are empty.

    Raises
    ------
    ValueError
        If the shapes differ.

    References
    ----------
    Dice LR. Measures of the amount of ecologic association between species.
    Ecology. 1945;26(3):297-302.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} and {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total
