"""Random deformation and intensity augmentation of a head CT with its anatomy.

Training on one real head needs many plausible heads: each synthetic case
starts from the base scan warped in plane by a random similarity transform
(rotation, isotropic scale, shift) plus a smooth elastic field, the same for
every slice (so the stack stays coherent), then a small CT-number scale and
offset and extra correlated noise. The anatomy masks are warped with the
same field, so lesions are placed in the deformed head without deriving the
anatomy again. The geometry of the series (positions, orientation, spacing,
UIDs) is unchanged: the warp moves the head inside the image, not the image.

References
----------
Simard PY, Steinkraus D, Platt JC. Best practices for convolutional neural
networks applied to visual document analysis. ICDAR 2003 (elastic
deformation by a smoothed random displacement field). Ronneberger O, Fischer
P, Brox T. U-Net. MICCAI 2015 (elastic augmentation for segmentation).
"""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np
from scipy import ndimage

from dicom_node.series.volume import CTVolume
from dicom_node.training.anatomy import HeadAnatomy, midline_columns
from dicom_node.training.synthetic import _high_pass_sd

logger = logging.getLogger(__name__)

#: Below this HU a voxel is reconstruction padding (GE writes -1500 outside the FOV), not air.
PADDING_MAX_HU = -1100.0
#: CT number (HU) that pixels moved in from outside a padding-free image take.
AIR_HU = -1000.0

_MASK_FIELDS = ("intracranial", "brain", "csf", "ventricles", "sulci_cisterns")


def _elastic_field(
    shape: tuple[int, int],
    pixel_spacing_mm: tuple[float, float],
    sigma_mm: float,
    amplitude_mm: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random displacement (dx, dy) in mm on a (rows, columns) grid, RMS ``amplitude_mm``."""
    rows, columns = shape
    row_mm, col_mm = pixel_spacing_mm
    step_mm = max(sigma_mm / 4.0, 1e-3)
    coarse = (
        max(int(np.ceil(rows * row_mm / step_mm)) + 1, 4),
        max(int(np.ceil(columns * col_mm / step_mm)) + 1, 4),
    )
    fields = []
    for _ in range(2):
        white = rng.standard_normal(coarse)
        smooth = ndimage.gaussian_filter(white, sigma=sigma_mm / step_mm, mode="reflect")
        rms = float(np.sqrt(np.mean(smooth * smooth)))
        smooth = smooth / max(rms, 1e-9) * amplitude_mm
        fields.append(
            cv2.resize(smooth.astype(np.float32), (columns, rows), interpolation=cv2.INTER_LINEAR)
        )
    return fields[0], fields[1]


def deform_case(
    volume: CTVolume,
    anatomy: HeadAnatomy,
    rng: np.random.Generator,
    *,
    max_rotation_deg: float = 10.0,
    scale_range: tuple[float, float] = (0.92, 1.08),
    max_shift_mm: float = 8.0,
    elastic_sigma_mm: float = 20.0,
    elastic_amplitude_mm: float = 3.0,
    hu_scale_range: tuple[float, float] = (0.97, 1.03),
    hu_offset_range: tuple[float, float] = (-3.0, 3.0),
    extra_noise_hu_range: tuple[float, float] = (0.0, 4.0),
) -> tuple[CTVolume, HeadAnatomy]:
    """Warp a head CT and its anatomy by one random in-plane deformation; jitter its HU.

    The same transform is applied to every slice: a similarity transform about
    the centroid of the intracranial space (rotation, isotropic scale and
    shift, in mm so anisotropic pixels are handled) composed with a smooth
    elastic displacement field. HU are resampled linearly (``cv2.remap``),
    masks by nearest neighbour; ``depth_mm`` is resampled linearly and scaled
    by the scale factor, ``midline_column`` is measured again on the warped
    intracranial mask. Then, outside reconstruction padding only,
    ``hu * scale + offset`` and extra spatially correlated Gaussian noise
    (SD drawn from ``extra_noise_hu_range``, as high-pass SD). Padding (below
    :data:`PADDING_MAX_HU`, for example -1500 HU outside the GE field of view)
    stays padding and keeps its value; pixels moved in from outside the image
    become padding when the scan has padding, else air.

    Parameters
    ----------
    volume : CTVolume
        The head CT, HU (slices, rows, columns); not modified.
    anatomy : HeadAnatomy
        Its anatomy on the same grid.
    rng : numpy.random.Generator
        Source of every random draw.
    max_rotation_deg : float
        Rotation drawn uniformly in +-this, degrees, about the slice normal.
    scale_range : tuple of float
        Isotropic in-plane scale factor range.
    max_shift_mm : float
        Shift along rows and along columns drawn uniformly in +-this, mm.
    elastic_sigma_mm : float
        Smoothness (Gaussian sigma, mm) of the elastic displacement field.
    elastic_amplitude_mm : float
        RMS magnitude (mm) of each component of the elastic displacement.
    hu_scale_range : tuple of float
        CT-number scale factor range.
    hu_offset_range : tuple of float
        CT-number offset range in HU.
    extra_noise_hu_range : tuple of float
        Range of the SD (HU) of the extra noise.

    Returns
    -------
    volume : CTVolume
        Same geometry and UIDs, new float32 HU.
    anatomy : HeadAnatomy
        The anatomy warped with the same field.

    Raises
    ------
    ValueError
        If a range is reversed or a magnitude negative.

    References
    ----------
    Simard PY, et al. ICDAR 2003; Ronneberger O, et al. MICCAI 2015.
    """
    for name, (low, high) in (
        ("scale_range", scale_range),
        ("hu_scale_range", hu_scale_range),
        ("hu_offset_range", hu_offset_range),
        ("extra_noise_hu_range", extra_noise_hu_range),
    ):
        if low > high:
            raise ValueError(f"{name} must be (low, high), got {(low, high)}")
    if min(max_rotation_deg, max_shift_mm, elastic_sigma_mm, elastic_amplitude_mm) < 0:
        raise ValueError("rotation, shift and elastic magnitudes must not be negative")
    if scale_range[0] <= 0:
        raise ValueError(f"scale_range must be positive, got {scale_range}")

    slices, rows, columns = volume.shape
    row_mm, col_mm = volume.pixel_spacing_mm
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    scale = float(rng.uniform(*scale_range))
    shift = rng.uniform(-max_shift_mm, max_shift_mm, size=2)  # (x along columns, y along rows), mm
    if elastic_amplitude_mm > 0 and elastic_sigma_mm > 0:
        ex, ey = _elastic_field(
            (rows, columns), (row_mm, col_mm), elastic_sigma_mm, elastic_amplitude_mm, rng
        )
    else:
        ex = ey = np.zeros((rows, columns), dtype=np.float32)
    hu_scale = float(rng.uniform(*hu_scale_range))
    hu_offset = float(rng.uniform(*hu_offset_range))
    noise_sd = float(rng.uniform(*extra_noise_hu_range))

    _, rr, cc = np.nonzero(anatomy.intracranial[:, ::4, ::4])
    if rr.size:
        centre = np.array([cc.mean() * 4.0 * col_mm, rr.mean() * 4.0 * row_mm])
    else:
        centre = np.array([(columns - 1) / 2.0 * col_mm, (rows - 1) / 2.0 * row_mm])
    # Destination (x, y) in mm -> source: C + R(-angle) (p - C - t) / scale + elastic.
    y_mm, x_mm = np.mgrid[0:rows, 0:columns].astype(np.float64)
    x_mm *= col_mm
    y_mm *= row_mm
    px = x_mm - centre[0] - shift[0]
    py = y_mm - centre[1] - shift[1]
    cos, sin = np.cos(angle), np.sin(angle)
    src_x = centre[0] + (cos * px + sin * py) / scale + ex
    src_y = centre[1] + (-sin * px + cos * py) / scale + ey
    map_x = (src_x / col_mm).astype(np.float32)
    map_y = (src_y / row_mm).astype(np.float32)

    hu = volume.hu
    padded = bool(hu.min() < PADDING_MAX_HU)
    pad_value = float(hu.min()) if padded else AIR_HU
    bits = np.zeros(volume.shape, dtype=np.uint8)
    for i, name in enumerate(_MASK_FIELDS):
        bits |= getattr(anatomy, name).astype(np.uint8) << i
    padding_bit = len(_MASK_FIELDS)
    if padded:
        bits |= (hu < PADDING_MAX_HU).astype(np.uint8) << padding_bit

    new_hu = np.empty(volume.shape, dtype=np.float32)
    new_bits = np.empty(volume.shape, dtype=np.uint8)
    new_depth = np.empty(volume.shape, dtype=np.float32)
    depth = anatomy.depth_mm.astype(np.float32, copy=False)
    outside_bits = (1 << padding_bit) if padded else 0

    def warp(image: np.ndarray, interpolation: int, outside: float) -> np.ndarray:
        return cv2.remap(
            image, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=outside
        )

    for k in range(slices):
        source = hu[k].astype(np.float32, copy=True)
        if padded:
            source[source < PADDING_MAX_HU] = AIR_HU
        new_hu[k] = warp(source, cv2.INTER_LINEAR, AIR_HU)
        new_bits[k] = warp(bits[k], cv2.INTER_NEAREST, outside_bits)
        new_depth[k] = warp(depth[k], cv2.INTER_LINEAR, 0.0)

    padding = (new_bits >> padding_bit).astype(bool) if padded else None
    new_hu = new_hu * np.float32(hu_scale) + np.float32(hu_offset)
    if noise_sd > 0:
        white = rng.standard_normal(volume.shape, dtype=np.float32)
        for k in range(slices):
            white[k] = cv2.GaussianBlur(white[k], (0, 0), 0.7)
        unit = _high_pass_sd(white[slices // 2].astype(np.float64))
        new_hu += white * np.float32(noise_sd / max(unit, 1e-6))
    if padding is not None:
        new_hu[padding] = np.float32(pad_value)

    masks = {name: ((new_bits >> i) & 1).astype(bool) for i, name in enumerate(_MASK_FIELDS)}
    intracranial = masks["intracranial"]
    new_depth *= np.float32(scale)
    new_depth[~intracranial] = 0.0
    warped = HeadAnatomy(
        intracranial=intracranial,
        brain=masks["brain"] & intracranial,
        csf=masks["csf"] & intracranial,
        ventricles=masks["ventricles"] & intracranial,
        sulci_cisterns=masks["sulci_cisterns"] & intracranial,
        depth_mm=new_depth,
        midline_column=midline_columns(intracranial, volume.pixel_spacing_mm),
    )
    logger.debug(
        "deformed series %s: rotation %.1f deg, scale %.3f, shift %s mm, HU x%.3f %+.1f, "
        "noise %.1f HU",
        volume.series_instance_uid,
        np.rad2deg(angle),
        scale,
        np.round(shift, 1).tolist(),
        hu_scale,
        hu_offset,
        noise_sd,
    )
    return dataclasses.replace(volume, hu=new_hu), warped
