"""The mid-sagittal plane of the head, and an anatomical frame built on it.

Left-right comparisons (the two middle cerebral artery territories on CT
angiography) need the plane that divides the head into its two halves. The
plane is estimated from the intracranial mask: in every slice that cuts the
cerebrum broadly, each image row that crosses the mask widely gives the
midpoint of its left and right mask edges; a plane is fitted through those
midpoints by iteratively reweighted least squares (Tukey biweight), which
discounts rows where the skull base or a lesion makes the mask asymmetric.

All positions are in LPS patient coordinates (mm), computed slice by slice
from each slice's own Image Position (Patient), so gantry-tilted (sheared) and
irregularly spaced stacks are handled exactly.

References
----------
Liu Y, Collins RT, Rothfus WE. Robust midsagittal plane extraction from
normal and pathological 3-D neuroradiology images. IEEE Trans Med Imaging.
2001;20(3):175-192 (symmetry plane of the head as a reference for left-right
comparison). Beaton AE, Tukey JW. The fitting of power series, meaning
polynomials, illustrated on band-spectroscopic data. Technometrics.
1974;16(2):147-185 (biweight). DICOM PS3.3 C.7.6.2.1.1 Image Position and
Image Orientation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from dicom_node.series.volume import CTVolume

logger = logging.getLogger(__name__)

#: LPS x axis: positive towards the patient's left (PS3.3 C.7.6.2.1.1).
PATIENT_LEFT = np.array([1.0, 0.0, 0.0])


@dataclass(frozen=True)
class MidsagittalPlane:
    """A plane dividing the head into left and right halves.

    Parameters
    ----------
    point_mm : numpy.ndarray
        float64 array (3,): a point of the plane in LPS mm.
    normal : numpy.ndarray
        float64 unit vector (3,) in LPS, oriented towards the patient's left
        (positive LPS x component), so :meth:`signed_distance_mm` is positive
        in the left hemisphere.
    residual_mm : float
        Robust spread (1.4826 x median absolute deviation) of the fitted
        row midpoints around the plane, in mm; a large value means a poorly
        defined midline.
    rows_used : int
        Number of row midpoints the fit used.

    References
    ----------
    Liu Y, et al. IEEE Trans Med Imaging. 2001;20(3):175-192.
    """

    point_mm: np.ndarray
    normal: np.ndarray
    residual_mm: float
    rows_used: int

    def signed_distance_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """Return the signed distance of points to the plane.

        Parameters
        ----------
        points_mm : numpy.ndarray
            Array (..., 3) of LPS positions in mm.

        Returns
        -------
        numpy.ndarray
            Array (...) in mm: positive in the patient's left half, negative
            in the right half.
        """
        return (np.asarray(points_mm, dtype=np.float64) - self.point_mm) @ self.normal

    def mirror(self, points_mm: np.ndarray) -> np.ndarray:
        """Reflect points through the plane (left to right and back).

        Parameters
        ----------
        points_mm : numpy.ndarray
            Array (..., 3) of LPS positions in mm.

        Returns
        -------
        numpy.ndarray
            Array of the same shape: the mirror images in LPS mm.
        """
        points = np.asarray(points_mm, dtype=np.float64)
        distance = self.signed_distance_mm(points)
        return points - 2.0 * distance[..., None] * self.normal


@dataclass(frozen=True)
class HeadFrame:
    """An anatomical frame of the head: left, posterior and superior unit axes at an origin.

    Built from the slice plane and the mid-sagittal plane: ``superior`` is the
    slice normal (acute head CT is acquired parallel to the orbitomeatal or
    skull-base line, with gantry tilt where needed, so the slice plane is the
    anatomical axial plane), ``left`` is the mid-sagittal normal made
    perpendicular to it, and ``posterior`` completes a right-handed frame.

    Parameters
    ----------
    origin_mm : numpy.ndarray
        float64 array (3,) in LPS mm.
    left, posterior, superior : numpy.ndarray
        float64 unit vectors (3,) in LPS.

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 (LPS patient coordinate system).
    """

    origin_mm: np.ndarray
    left: np.ndarray
    posterior: np.ndarray
    superior: np.ndarray

    @property
    def rotation(self) -> np.ndarray:
        """numpy.ndarray: 3 x 3 matrix whose columns are ``left``, ``posterior``, ``superior``."""
        return np.stack([self.left, self.posterior, self.superior], axis=1)

    def to_patient(self, local_mm: np.ndarray) -> np.ndarray:
        """Map frame coordinates (left, posterior, superior) in mm to LPS mm.

        Parameters
        ----------
        local_mm : numpy.ndarray
            Array (..., 3): (left, posterior, superior) offsets from the origin, mm.

        Returns
        -------
        numpy.ndarray
            Array (..., 3) in LPS mm.
        """
        return self.origin_mm + np.asarray(local_mm, dtype=np.float64) @ self.rotation.T

    def to_local(self, points_mm: np.ndarray) -> np.ndarray:
        """Map LPS mm to frame coordinates (left, posterior, superior) in mm.

        Parameters
        ----------
        points_mm : numpy.ndarray
            Array (..., 3) in LPS mm.

        Returns
        -------
        numpy.ndarray
            Array (..., 3): offsets from the origin along ``left``,
            ``posterior`` and ``superior``, mm.
        """
        return (np.asarray(points_mm, dtype=np.float64) - self.origin_mm) @ self.rotation


def head_frame(volume: CTVolume, plane: MidsagittalPlane, origin_mm: np.ndarray) -> HeadFrame:
    """Build the anatomical :class:`HeadFrame` of a volume at an origin.

    Parameters
    ----------
    volume : CTVolume
        The head CT; its slice normal is taken as the superior axis (flipped
        if it points inferiorly).
    plane : MidsagittalPlane
        The mid-sagittal plane; its normal gives the left axis.
    origin_mm : numpy.ndarray
        Origin (3,) in LPS mm.

    Returns
    -------
    HeadFrame
        A right-handed orthonormal frame.

    Raises
    ------
    ValueError
        If the mid-sagittal normal is parallel to the slice normal (the
        slices are not axial).

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
    """
    superior = volume.normal.copy()
    if superior[2] < 0:
        superior = -superior
    left = plane.normal - (plane.normal @ superior) * superior
    norm = float(np.linalg.norm(left))
    if norm < 0.5:
        raise ValueError("mid-sagittal normal is nearly parallel to the slice normal")
    left /= norm
    posterior = np.cross(superior, left)
    return HeadFrame(
        origin_mm=np.asarray(origin_mm, dtype=np.float64),
        left=left,
        posterior=posterior,
        superior=superior,
    )


def estimate_midsagittal_plane(
    volume: CTVolume,
    mask: np.ndarray,
    *,
    min_area_fraction: float = 0.5,
    min_row_width_fraction: float = 0.6,
    iterations: int = 8,
) -> MidsagittalPlane:
    """Fit the mid-sagittal plane to the row midpoints of an intracranial mask.

    Parameters
    ----------
    volume : CTVolume
        The head CT (geometry only is used).
    mask : numpy.ndarray
        Boolean intracranial mask (slices, rows, columns) on the volume's grid.
    min_area_fraction : float
        Only slices whose mask area is at least this fraction of the largest
        slice area are used (skull base and vertex slices are asymmetric).
    min_row_width_fraction : float
        In each used slice, only rows whose left-right mask extent is at
        least this fraction of the slice's widest row are used.
    iterations : int
        Reweighting iterations of the Tukey biweight fit.

    Returns
    -------
    MidsagittalPlane
        The plane, its normal towards the patient's left.

    Raises
    ------
    ValueError
        If ``mask`` does not match the volume or has too few usable rows
        (fewer than 20).

    References
    ----------
    Liu Y, et al. IEEE Trans Med Imaging. 2001;20(3):175-192; Beaton AE,
    Tukey JW. Technometrics. 1974;16(2):147-185.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} differs from volume shape {volume.shape}")
    areas = mask.sum(axis=(1, 2))
    if areas.max() == 0:
        raise ValueError("mask is empty")
    row_mm, col_mm = volume.pixel_spacing_mm
    points: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for k in np.flatnonzero(areas >= min_area_fraction * areas.max()):
        rows_with = np.flatnonzero(mask[k].any(axis=1))
        first = np.argmax(mask[k][rows_with], axis=1)
        last = mask.shape[2] - 1 - np.argmax(mask[k][rows_with, ::-1], axis=1)
        width = last - first
        keep = width >= min_row_width_fraction * width.max()
        r = rows_with[keep].astype(np.float64)
        c = 0.5 * (first[keep] + last[keep])
        points.append(
            volume.image_positions_mm[k]
            + (r * row_mm)[:, None] * volume.column_direction
            + (c * col_mm)[:, None] * volume.row_direction
        )
        weights.append(width[keep].astype(np.float64))
    if not points or sum(len(p) for p in points) < 20:
        raise ValueError("too few mask rows to fit a mid-sagittal plane")
    xyz = np.concatenate(points)
    base_weight = np.concatenate(weights)

    # Fit u = a + b v + c w in the image frame (u along rows, v along columns, w along the normal).
    u = xyz @ volume.row_direction
    design = np.stack(
        [np.ones(len(xyz)), xyz @ volume.column_direction, xyz @ volume.normal], axis=1
    )
    weight = base_weight.copy()
    coefficients = np.zeros(3)
    residual = np.zeros(len(xyz))
    for _ in range(max(iterations, 1)):
        root = np.sqrt(weight)
        coefficients, *_ = np.linalg.lstsq(design * root[:, None], u * root, rcond=None)
        residual = u - design @ coefficients
        scale = 1.4826 * float(np.median(np.abs(residual))) + 1e-3
        z = residual / (4.685 * scale)
        weight = base_weight * np.where(np.abs(z) < 1.0, (1.0 - z**2) ** 2, 0.0)
    normal = (
        volume.row_direction
        - coefficients[1] * volume.column_direction
        - coefficients[2] * volume.normal
    )
    normal /= np.linalg.norm(normal)
    if normal @ PATIENT_LEFT < 0:
        normal = -normal
    inliers = weight > 0
    point = (xyz[inliers] * base_weight[inliers, None]).sum(axis=0) / base_weight[inliers].sum()
    point = point - ((point - xyz[inliers]) @ normal).mean() * normal
    plane = MidsagittalPlane(
        point_mm=point,
        normal=normal,
        residual_mm=float(1.4826 * np.median(np.abs(residual))),
        rows_used=int(inliers.sum()),
    )
    logger.debug(
        "mid-sagittal plane: normal %s, residual %.2f mm over %d rows",
        np.round(normal, 4).tolist(),
        plane.residual_mm,
        plane.rows_used,
    )
    return plane
