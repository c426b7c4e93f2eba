"""Intracranial arteries on CT angiography: brain mask, vessel map and centrelines.

The classical vessel map of CTA, in the order applied by
:func:`segment_intracranial_vessels`:

1. **Intracranial mask** that keeps the enhanced vessels
   (:func:`cta_intracranial_mask`): the non-contrast mask of
   :func:`dicom_node.imaging.masks.intracranial_mask` treats everything above
   150 HU as skull, which would carve every artery (250-450 HU) out of the
   brain. Here only bright structures that contain cortical-bone densities
   (:data:`DENSE_BONE_MIN_HU`) count as bone; other bright pixels are given a
   brain value before the mask is computed, so vessels stay inside it while
   skull and scalp stay out.
2. **Gaussian blur** in-plane (denoising).
3. **Per-slice baseline**: the median HU of the brain in each slice (thick
   slices through the skull base and vertex are biased by partial volume).
4. **Arterial peak**: a robust maximum of the enhancement inside the mask,
   the CT number of a vessel lumen fully filled with contrast.
5. **CLAHE** (contrast-limited adaptive histogram equalisation, OpenCV) of
   the enhancement windowed from the baseline to the peak, outside the mask
   set to zero.
6. **Adaptive thresholding** (OpenCV, Gaussian-weighted local mean) of the
   CLAHE image inside the mask, combined with a half-maximum floor on the
   enhancement: a voxel is vessel where it is brighter than its
   neighbourhood *and* at least half filled with contrast (the
   full-width-at-half-maximum boundary of a lumen blurred by the scanner's
   point-spread function and by partial volume across the slice).
7. **3D connectivity cleanup**: 26-connected components smaller than
   ``min_component_mm3`` are removed (noise, small calcifications), and so
   are components with voxels far denser than the arterial peak (bone).

The mask is on the source grid (slices, rows, columns) with the slice order of
:class:`~dicom_node.series.volume.CTVolume`; nothing is resampled.

:func:`vessel_centreline` skeletonises a vessel mask (Lee's 3D thinning)
and measures the skeleton in patient mm along its 26-neighbour steps, so the
anisotropic, sheared grid is measured exactly; it and
:func:`voxel_centres_mm` live in :mod:`dicom_node.imaging.vessels_centreline`
and are importable from here.

References
----------
Zuiderveld K. Contrast limited adaptive histogram equalization. In: Graphics
Gems IV. Academic Press; 1994:474-485 (CLAHE). Pizer SM, et al. Adaptive
histogram equalization and its variations. Comput Vis Graph Image Process.
1987;39:355-368. Gonzalez RC, Woods RE. Digital Image Processing, 4th ed.,
section 10.3 (adaptive/local thresholding). Hoffmann KR, et al. Vessel size
measurements in angiograms: manual measurements. Med Phys. 2002 (FWHM lumen
boundary); Lee TC, Kashyap RL, Chu CN. Building skeleton models via 3-D medial
surface/axis thinning algorithms. CVGIP Graph Models Image Process.
1994;56(6):462-478 (3D skeletonisation). Muschelli J, et al. NeuroImage.
2015;114:379-385 (CT brain mask).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from dicom_node.imaging.masks import intracranial_mask

# The centrelines have a module of their own (issue 14); their names stay importable from here.
from dicom_node.imaging.vessels_centreline import _FORWARD_OFFSETS as _FORWARD_OFFSETS
from dicom_node.imaging.vessels_centreline import Centreline as Centreline
from dicom_node.imaging.vessels_centreline import vessel_centreline as vessel_centreline
from dicom_node.imaging.vessels_centreline import voxel_centres_mm as voxel_centres_mm
from dicom_node.series.volume import CTVolume

logger = logging.getLogger(__name__)

#: Bright structures containing pixels at least this dense are skull, not contrast (HU).
DENSE_BONE_MIN_HU = 750.0
#: Lower bound of "bright" pixels that may be bone or enhanced vessel (HU).
BRIGHT_MIN_HU = 150.0
#: Brain value given to bright non-bone pixels before the brain mask is computed (HU).
BRAIN_FILL_HU = 30.0


@dataclass(frozen=True, eq=False)
class VesselMap:
    """The result of :func:`segment_intracranial_vessels`.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean array (slices, rows, columns): the vessel lumen on the
        source grid.
    brain_mask : numpy.ndarray
        Boolean array (slices, rows, columns): the intracranial mask searched.
    enhancement_fraction : numpy.ndarray
        float32 array (slices, rows, columns) in [0, 1]: the smoothed
        enhancement above the slice baseline divided by the arterial peak
        enhancement, inside ``brain_mask`` (0 outside). For a vessel voxel it
        estimates the fraction of the voxel filled with contrast (partial
        volume); summed times the voxel volume it gives a partial-volume
        corrected vessel volume.
    baseline_hu : numpy.ndarray
        float32 array (slices,): median smoothed HU of the brain per slice
        (0 where the slice has no brain).
    arterial_peak_hu : float
        Estimated enhancement (HU above baseline) of a lumen fully filled
        with contrast.
    threshold_hu : float
        Half-maximum enhancement floor used (HU above baseline).
    noise_hu : float
        Robust SD (HU) of the brain after smoothing.
    parameters : dict
        The parameters used, with units in the names.

    References
    ----------
    Zuiderveld K. Graphics Gems IV. 1994:474-485.
    """

    mask: np.ndarray
    brain_mask: np.ndarray
    enhancement_fraction: np.ndarray
    baseline_hu: np.ndarray
    arterial_peak_hu: float
    threshold_hu: float
    noise_hu: float
    parameters: dict


def _skull_pixels(smoothed_slice: np.ndarray, dense_bone_min_hu: float) -> np.ndarray:
    """Bright 8-connected regions of one slice that contain cortical-bone density."""
    bright = (smoothed_slice >= BRIGHT_MIN_HU).astype(np.uint8)
    count, labels = cv2.connectedComponents(bright, connectivity=8)
    if count <= 1:
        return np.zeros(bright.shape, dtype=bool)
    dense = smoothed_slice >= dense_bone_min_hu
    has_dense = np.zeros(count, dtype=bool)
    has_dense[np.unique(labels[dense])] = True
    has_dense[0] = False
    return has_dense[labels]


def cta_intracranial_mask(
    volume: CTVolume,
    *,
    dense_bone_min_hu: float = DENSE_BONE_MIN_HU,
    smoothing_sigma_mm: float = 0.5,
    erosion_mm: float = 2.5,
) -> np.ndarray:
    """Segment the intracranial space of a CT angiogram, enhanced vessels included.

    Per slice, bright (at least 150 HU) 8-connected regions that contain no
    pixel of ``dense_bone_min_hu`` or more are contrast (vessels, sinuses,
    calcifications), not skull; they are set to 30 HU in a copy of the
    volume, and :func:`dicom_node.imaging.masks.intracranial_mask` runs on
    that copy. Vessels touching the skull (the carotid siphon in the skull
    base) stay with the skull and outside the mask.

    Parameters
    ----------
    volume : CTVolume
        The CT angiogram in HU.
    dense_bone_min_hu : float
        Smallest smoothed HU taken as cortical bone; above the densest
        arterial enhancement expected (about 600 HU).
    smoothing_sigma_mm : float
        In-plane Gaussian sigma (mm) used before classifying bright pixels.
    erosion_mm : float
        In-plane erosion (mm) of the mask, as in ``intracranial_mask``.

    Returns
    -------
    numpy.ndarray
        Boolean array (slices, rows, columns) on the volume's grid.

    References
    ----------
    Muschelli J, et al. NeuroImage. 2015;114:379-385.
    """
    row_mm, col_mm = volume.pixel_spacing_mm
    sigma = (0.0, smoothing_sigma_mm / row_mm, smoothing_sigma_mm / col_mm)
    smoothed = ndimage.gaussian_filter(volume.hu, sigma=sigma)
    hu = volume.hu.copy()
    replaced = 0
    for k in range(hu.shape[0]):
        bright = smoothed[k] >= BRIGHT_MIN_HU
        if not bright.any():
            continue
        contrast = bright & ~_skull_pixels(smoothed[k], dense_bone_min_hu)
        # Include the partial-volume rim of each vessel, which the bone test did not see.
        contrast = cv2.dilate(contrast.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        contrast &= hu[k] > BRAIN_FILL_HU
        hu[k][contrast] = BRAIN_FILL_HU
        replaced += int(contrast.sum())
    devesseled = dataclasses.replace(volume, hu=hu)
    mask = intracranial_mask(devesseled, erosion_mm=erosion_mm)
    logger.debug("CTA intracranial mask: %d bright non-bone voxels given brain HU", replaced)
    return mask


def arterial_peak_enhancement_hu(
    enhancement: np.ndarray,
    brain_mask: np.ndarray,
    *,
    floor_hu: float = 100.0,
    percentile: float = 99.5,
    components: int = 5,
    min_component_voxels: int = 20,
) -> float:
    """Estimate the enhancement of an artery lumen fully filled with contrast.

    The large arteries (carotid, basilar, M1) are wide enough to be fully
    filled in some voxels. Voxels enhanced by at least ``floor_hu`` are
    grouped into 26-connected components; for each of the ``components``
    largest a high ``percentile`` of its enhancement is taken, and the
    *second* highest of these values is the peak. Taking the second, not
    the first, makes the estimate robust to one bright fragment of skull
    base or a calcification that the brain mask keeps, which would
    otherwise set the peak (and so the half-maximum threshold) far too high.

    Parameters
    ----------
    enhancement : numpy.ndarray
        float array (slices, rows, columns): smoothed HU minus the slice's
        brain baseline.
    brain_mask : numpy.ndarray
        Boolean array of the same shape: where to look.
    floor_hu : float
        Smallest enhancement (HU) counted as contrast-filled lumen.
    percentile : float
        Percentile (0-100) of the enhancement within each component.
    components : int
        Number of largest components considered.
    min_component_voxels : int
        Components with fewer voxels are ignored.

    Returns
    -------
    float
        Peak enhancement in HU above the baseline; ``floor_hu`` if nothing is
        enhanced that much.

    References
    ----------
    Rosenfeld A, Pfaltz JL. J ACM. 1966;13(4):471-494 (connected components).
    """
    candidate = brain_mask & (enhancement >= floor_hu)
    if not candidate.any():
        return float(floor_hu)
    labels, _ = ndimage.label(candidate, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = [int(i) for i in np.argsort(sizes)[::-1][:components] if sizes[i] > 0]
    kept = [i for i in largest if sizes[i] >= min_component_voxels] or largest[:1]
    values = sorted(
        (float(np.percentile(enhancement[labels == i], percentile)) for i in kept), reverse=True
    )
    return values[1] if len(values) > 1 else values[0]


def segment_intracranial_vessels(
    volume: CTVolume,
    brain_mask: np.ndarray | None = None,
    *,
    smoothing_sigma_mm: float = 0.4,
    peak_floor_hu: float = 100.0,
    peak_percentile: float = 99.5,
    clahe_clip_limit: float = 2.0,
    clahe_tile_mm: float = 40.0,
    adaptive_block_mm: float = 9.0,
    adaptive_offset: float = 8.0,
    half_maximum_fraction: float = 0.42,
    min_enhancement_hu: float = 60.0,
    min_component_mm3: float = 4.0,
    max_peak_ratio: float = 1.5,
) -> VesselMap:
    """Segment enhanced intracranial arteries of a CT angiogram on its own grid.

    Parameters
    ----------
    volume : CTVolume
        The CT angiogram in HU, slices ascending along the normal.
    brain_mask : numpy.ndarray or None
        Boolean intracranial mask (slices, rows, columns); computed with
        :func:`cta_intracranial_mask` when None.
    smoothing_sigma_mm : float
        In-plane Gaussian sigma (mm) of the blur.
    peak_floor_hu, peak_percentile : float
        Arterial peak estimation, see :func:`arterial_peak_enhancement_hu`.
    clahe_clip_limit : float
        CLAHE clip limit (OpenCV ``clipLimit``, relative to a uniform histogram).
    clahe_tile_mm : float
        Edge (mm) of the CLAHE contextual tiles.
    adaptive_block_mm : float
        Edge (mm) of the neighbourhood of the adaptive threshold.
    adaptive_offset : float
        Grey levels (of 255) a pixel must exceed its Gaussian-weighted local
        mean by, after CLAHE.
    half_maximum_fraction : float
        Fraction of the arterial peak enhancement a voxel must reach. 0.5 is
        the full-width-at-half-maximum lumen boundary; the default is a
        little lower because the in-plane blur (scanner and
        ``smoothing_sigma_mm``) lowers the profile of small arteries.
    min_enhancement_hu : float
        Lowest enhancement floor (HU above baseline), whatever the peak.
    min_component_mm3 : float
        26-connected components smaller than this (mm^3) are removed.
    max_peak_ratio : float
        Components whose brightest voxel is enhanced more than this multiple
        of the arterial peak are removed: denser than any contrast-filled
        lumen, they are fragments of skull base or calcifications.

    Returns
    -------
    VesselMap
        The vessel mask and the quantities used to derive it.

    Raises
    ------
    ValueError
        If ``brain_mask`` does not match the volume.

    References
    ----------
    Zuiderveld K. Graphics Gems IV. 1994:474-485 (CLAHE); Gonzalez RC, Woods
    RE. Digital Image Processing, section 10.3 (adaptive thresholding); FWHM
    lumen boundary (see the module docstring).
    """
    if brain_mask is None:
        brain_mask = cta_intracranial_mask(volume)
    brain_mask = np.asarray(brain_mask, dtype=bool)
    if brain_mask.shape != volume.shape:
        raise ValueError(
            f"brain mask shape {brain_mask.shape} differs from volume shape {volume.shape}"
        )
    row_mm, col_mm = volume.pixel_spacing_mm
    sigma = (0.0, smoothing_sigma_mm / row_mm, smoothing_sigma_mm / col_mm)
    smoothed = ndimage.gaussian_filter(volume.hu, sigma=sigma)

    slices = volume.shape[0]
    baseline = np.zeros(slices, dtype=np.float32)
    enhancement = np.zeros(volume.shape, dtype=np.float32)
    noise_values: list[np.ndarray] = []
    for k in np.flatnonzero(brain_mask.any(axis=(1, 2))):
        values = smoothed[k][brain_mask[k]]
        baseline[k] = float(np.median(values))
        enhancement[k][brain_mask[k]] = values - baseline[k]
        tissue = values[np.abs(values - baseline[k]) < 40.0]
        if tissue.size > 100:
            noise_values.append(tissue - baseline[k])
    inside = enhancement[brain_mask]
    if inside.size == 0:
        empty = np.zeros(volume.shape, dtype=bool)
        return VesselMap(empty, brain_mask, enhancement, baseline, 0.0, 0.0, 0.0, {})
    noise_hu = (
        float(1.4826 * np.median(np.abs(np.concatenate(noise_values)))) if noise_values else 0.0
    )
    peak_hu = arterial_peak_enhancement_hu(
        enhancement, brain_mask, floor_hu=peak_floor_hu, percentile=peak_percentile
    )
    threshold_hu = max(half_maximum_fraction * peak_hu, min_enhancement_hu)

    tile_rows = max(1, int(round(volume.shape[1] * row_mm / clahe_tile_mm)))
    tile_cols = max(1, int(round(volume.shape[2] * col_mm / clahe_tile_mm)))
    clahe = cv2.createCLAHE(clipLimit=clahe_clip_limit, tileGridSize=(tile_cols, tile_rows))
    block = max(3, int(round(adaptive_block_mm / min(row_mm, col_mm))) | 1)
    candidate = np.zeros(volume.shape, dtype=bool)
    for k in np.flatnonzero(brain_mask.any(axis=(1, 2))):
        grey = np.clip(enhancement[k] / peak_hu, 0.0, 1.0) * 255.0
        grey[~brain_mask[k]] = 0.0
        equalised = clahe.apply(grey.astype(np.uint8))
        local = cv2.adaptiveThreshold(
            equalised,
            255,
            cv2.ADAPTIVE_THRESH_GAUSSIAN_C,
            cv2.THRESH_BINARY,
            block,
            -float(adaptive_offset),
        )
        candidate[k] = (local > 0) & brain_mask[k] & (enhancement[k] >= threshold_hu)

    labels, count = ndimage.label(candidate, structure=np.ones((3, 3, 3), dtype=bool))
    if count:
        voxel_mm3 = volume.voxel_volume_ml * 1000.0
        index = np.arange(count + 1)
        voxel_volumes = np.broadcast_to(voxel_mm3[:, None, None], volume.shape)
        sizes = ndimage.sum_labels(voxel_volumes, labels, index)
        brightest = ndimage.maximum(enhancement, labels, index)
        keep = (sizes >= min_component_mm3) & (brightest <= max_peak_ratio * peak_hu)
        keep[0] = False
        vessels = keep[labels]
    else:
        vessels = candidate
    fraction = np.clip(enhancement / peak_hu, 0.0, 1.0).astype(np.float32)
    parameters = {
        "smoothing_sigma_mm": smoothing_sigma_mm,
        "peak_floor_hu": peak_floor_hu,
        "peak_percentile": peak_percentile,
        "clahe_clip_limit": clahe_clip_limit,
        "clahe_tile_mm": clahe_tile_mm,
        "adaptive_block_mm": adaptive_block_mm,
        "adaptive_offset": adaptive_offset,
        "half_maximum_fraction": half_maximum_fraction,
        "min_enhancement_hu": min_enhancement_hu,
        "min_component_mm3": min_component_mm3,
        "max_peak_ratio": max_peak_ratio,
    }
    logger.debug(
        "vessels: peak %.0f HU, floor %.0f HU, noise %.1f HU, %d components, %.2f mL",
        peak_hu,
        threshold_hu,
        noise_hu,
        count,
        volume.mask_volume_ml(vessels),
    )
    return VesselMap(
        mask=vessels,
        brain_mask=brain_mask,
        enhancement_fraction=fraction,
        baseline_hu=baseline,
        arterial_peak_hu=peak_hu,
        threshold_hu=threshold_hu,
        noise_hu=noise_hu,
        parameters=parameters,
    )
