"""Midline, ventricular atria, pineal region and tentorium of a head CT, for placing mimics.

The synthetic-lesion engine knows tissue classes
(:class:`dicom_node.training.anatomy.HeadAnatomy`); hard mimics of
hemorrhage (:mod:`dicom_node.training.mimics`) and tentorial subdurals
(:mod:`dicom_node.training.lesions`) also need a few landmarks where
normal dense structures sit. This module derives them from the anatomy and
the HU, once per (deformed) case, with simple geometric rules:

- **head frame**: the slice normal as "up" (head CT is scanned along the
  orbitomeatal line), the long in-plane axis of the intracranial space as
  the antero-posterior axis (pointing posterior) and the in-plane
  perpendicular pointing to the patient's left;
- **midline**: per slice, the column of
  :attr:`~dicom_node.training.anatomy.HeadAnatomy.midline_column` along the
  antero-posterior axis, refined to the falx where the image shows it (a
  thin bright ridge within a few mm, fitted by a robust quadratic), so a
  mimic drawn "on the falx" lands on the falx of the scan;
- **atria** of the lateral ventricles: the posterior quarter of each side's
  lateral ventricle (choroid plexus glomus);
- **pineal gland**: on the midline between the atria, a little anterior and
  inferior to them (just behind the third ventricle);
- **tentorium**: a tent-shaped sheet whose apex lies behind the pineal
  gland at the falcotentorial junction, with a ridge (the straight sinus)
  descending posteriorly and leaves sloping down laterally to the inner
  table, open anteriorly at the tentorial incisura around the midbrain
  (:class:`TentoriumModel`, in :mod:`dicom_node.training.tentorium`, split
  out of this module; its names are importable from here too).

The rules are approximate and meant to put mimics in anatomically plausible
places, not to measure anatomy.

References
----------
Osborn AG. Osborn's Brain: Imaging, Pathology, and Anatomy. 2nd ed.
Elsevier; 2017 (chapters on the meninges, the ventricles and the pineal
region). Kiroglu Y, Calli C, Karabulut N, Oncel C. Intracranial
calcifications on CT. Diagn Interv Radiol. 2010;16(4):263-269 (sites of
physiologic calcification). Liu R, et al. Comput Med Imaging Graph.
2014;38(1):1-14 (midline from the skull's symmetry).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from dicom_node.series.volume import CTVolume
from dicom_node.training.anatomy import HeadAnatomy
from dicom_node.training.tentorium import (
    TENTORIUM_RIDGE_ROUNDING_MM,
    TentoriumModel,
    random_tentorium,
)

#: The names importable from this module: its own and those of
#: :mod:`dicom_node.training.tentorium` (the tentorium), split out of it.
__all__ = [
    "ATRIUM_LATERAL_MM",
    "FALX_MIN_ROW_FRACTION",
    "FALX_SEARCH_MM",
    "TENTORIUM_RIDGE_ROUNDING_MM",
    "HeadLandmarks",
    "TentoriumModel",
    "find_landmarks",
    "nearest_slice",
    "random_tentorium",
    "slice_pixel",
]

logger = logging.getLogger(__name__)

#: Half width (mm) of the band around the predicted midline searched for the falx.
FALX_SEARCH_MM = 6.0
#: Fewest rows (fraction of the head's length in the slice) with a falx ridge to trust a fit.
FALX_MIN_ROW_FRACTION = 0.25
#: Lateral range (mm from the midline) of the lateral ventricles' atria.
ATRIUM_LATERAL_MM = (8.0, 35.0)


def slice_pixel(volume: CTVolume, k: int, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (row, column) of the projection of LPS points onto slice k's plane.

    Parameters
    ----------
    volume : CTVolume
        The series geometry.
    k : int
        Slice index.
    points_mm : numpy.ndarray
        (n, 3) or (3,) LPS points in mm.

    Returns
    -------
    tuple of numpy.ndarray
        Rows and columns (fractional pixel indices), shape (n,) or ().

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 (Image Position and Orientation (Patient)).
    """
    row_mm, col_mm = volume.pixel_spacing_mm
    d = np.asarray(points_mm, dtype=np.float64) - volume.image_positions_mm[k]
    return d @ volume.column_direction / row_mm, d @ volume.row_direction / col_mm


def nearest_slice(volume: CTVolume, point_mm: np.ndarray) -> int:
    """Index of the slice whose plane lies nearest to an LPS point (along the normal)."""
    along = float(np.asarray(point_mm) @ volume.normal)
    return int(np.argmin(np.abs(volume.slice_positions_mm - along)))


@dataclass(frozen=True, eq=False)
class HeadLandmarks:
    """Head frame, midline and the landmarks of the pineal region of one head CT.

    Parameters
    ----------
    centre_mm : numpy.ndarray
        (3,) centroid of the intracranial space, LPS mm.
    up : numpy.ndarray
        (3,) unit slice normal (towards the vertex).
    posterior : numpy.ndarray
        (3,) in-plane unit vector of the head's antero-posterior axis, pointing posterior.
    left : numpy.ndarray
        (3,) in-plane unit vector perpendicular to it, pointing to the patient's left.
    midline : numpy.ndarray
        float64 (slices, 3): per slice, coefficients (a0, a1, a2) of the
        midline column ``a0 + a1 * row + a2 * row ** 2`` (pixel indices).
    midline_from_falx : numpy.ndarray
        bool (slices,): True where the midline was fitted to a falx ridge.
    ventricle_centre_mm : numpy.ndarray or None
        (3,) centroid of the ventricles; None without ventricles.
    atria_mm : numpy.ndarray or None
        (2, 3) points in the left, then right, atrium of the lateral
        ventricles (inside the ventricle mask); None when a side has no
        lateral ventricle.
    pineal_mm : numpy.ndarray or None
        (3,) typical site of the pineal gland; None without atria.

    References
    ----------
    Osborn AG. Osborn's Brain. 2nd ed. Elsevier; 2017.
    """

    centre_mm: np.ndarray
    up: np.ndarray
    posterior: np.ndarray
    left: np.ndarray
    midline: np.ndarray
    midline_from_falx: np.ndarray
    ventricle_centre_mm: np.ndarray | None
    atria_mm: np.ndarray | None
    pineal_mm: np.ndarray | None

    def midline_columns(self, k: int, rows: np.ndarray) -> np.ndarray:
        """Midline column (fractional) of slice k at the given rows."""
        a0, a1, a2 = self.midline[k]
        rows = np.asarray(rows, dtype=np.float64)
        return a0 + a1 * rows + a2 * rows * rows

    def lateral_mm(self, volume: CTVolume, k: int, rows, cols) -> np.ndarray:
        """Signed distance (mm) from the midline of slice k, positive to the patient's left.

        Parameters
        ----------
        volume : CTVolume
            The series geometry.
        k : int
            Slice index.
        rows, cols : array_like
            Fractional pixel indices (broadcast together).

        Returns
        -------
        numpy.ndarray
            float64, the perpendicular in-plane distance to the midline curve
            (first order in its slope).
        """
        row_mm, col_mm = volume.pixel_spacing_mm
        rows = np.asarray(rows, dtype=np.float64)
        cols = np.asarray(cols, dtype=np.float64)
        a0, a1, a2 = self.midline[k]
        slope_mm = (a1 + 2.0 * a2 * rows) * col_mm / row_mm  # d(col mm) / d(row mm)
        offset_mm = (cols - self.midline_columns(k, rows)) * col_mm
        sign = 1.0 if float(volume.row_direction @ self.left) >= 0 else -1.0
        return sign * offset_mm / np.sqrt(1.0 + slope_mm * slope_mm)

    def lateral_of_points(self, volume: CTVolume, points_mm: np.ndarray) -> np.ndarray:
        """Signed distance (mm) of LPS points (n, 3) from the midline of their nearest slice."""
        points = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
        out = np.empty(len(points))
        for i, p in enumerate(points):
            k = nearest_slice(volume, p)
            r, c = slice_pixel(volume, k, p)
            out[i] = float(self.lateral_mm(volume, k, r, c))
        return out

    def to_midline(self, volume: CTVolume, point_mm: np.ndarray) -> np.ndarray:
        """Move an LPS point along :attr:`left` onto the midline of its nearest slice."""
        p = np.asarray(point_mm, dtype=np.float64)
        for _ in range(2):
            p = p - float(self.lateral_of_points(volume, p)[0]) * self.left
        return p


def _head_axis(anatomy: HeadAnatomy, volume: CTVolume) -> tuple[np.ndarray, np.ndarray]:
    """Unit in-plane vectors (rows mm, columns mm) of the antero-posterior axis, and its slices."""
    area = anatomy.intracranial.sum(axis=(1, 2))
    slices = np.flatnonzero(area >= 0.5 * area.max())
    row_mm, col_mm = volume.pixel_spacing_mm
    k, r, c = np.nonzero(anatomy.intracranial[slices][:, ::2, ::2])
    y = (r - r.mean()) * 2.0 * row_mm
    x = (c - c.mean()) * 2.0 * col_mm
    moments = np.array([[np.mean(y * y), np.mean(x * y)], [np.mean(x * y), np.mean(x * x)]])
    _values, vectors = np.linalg.eigh(moments)
    axis = vectors[:, -1]
    # Posterior: along +column direction's patient Y when rows run posterior (axial LPS).
    posterior = axis[0] * volume.column_direction + axis[1] * volume.row_direction
    if posterior[1] < 0:
        axis = -axis
    return axis, slices


def _fit_falx(
    hu: np.ndarray,
    inside: np.ndarray,
    predicted: np.ndarray,
    rows: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
) -> np.ndarray | None:
    """Robust quadratic fit col(row) to the falx ridge near a predicted midline, or None."""
    row_mm, col_mm = pixel_spacing_mm
    fine = cv2.GaussianBlur(hu, (0, 0), 0.5 / col_mm)
    coarse = cv2.GaussianBlur(hu, (0, 0), 2.5 / col_mm)
    ridge = fine - coarse
    half = int(np.ceil(FALX_SEARCH_MM / col_mm))
    columns = hu.shape[1]
    found_r, found_c, weight = [], [], []
    for r, c_pred in zip(rows, predicted, strict=True):
        c0 = int(round(c_pred))
        lo, hi = max(c0 - half, 1), min(c0 + half + 1, columns - 1)
        if hi - lo < 3 or not inside[r, lo:hi].all():
            continue
        values = ridge[r, lo:hi]
        i = int(np.argmax(values))
        peak = float(values[i])
        if peak < 3.0 or not 5.0 <= fine[r, lo + i] <= 150.0 or i in (0, hi - lo - 1):
            continue
        left_v, right_v = values[i - 1], values[i + 1]
        denominator = left_v - 2.0 * peak + right_v
        shift = 0.5 * (left_v - right_v) / denominator if denominator < 0 else 0.0
        found_r.append(float(r))
        found_c.append(lo + i + float(np.clip(shift, -0.5, 0.5)))
        weight.append(peak)
    if len(found_r) < max(FALX_MIN_ROW_FRACTION * len(rows), 12):
        return None
    fr, fc, w = np.array(found_r), np.array(found_c), np.array(weight)
    scale = max(float(fr.max() - fr.min()), 1.0)
    t = (fr - fr.mean()) / scale
    design = np.stack([np.ones_like(t), t, t * t], axis=1)
    robust = np.ones_like(fc)
    coef = np.zeros(3)
    tuning = 2.0 / col_mm  # Tukey biweight constant: 2 mm
    for _ in range(8):
        sw = np.sqrt(w * robust)
        coef, *_ = np.linalg.lstsq(design * sw[:, None], fc * sw, rcond=None)
        residual = fc - design @ coef
        robust = np.where(np.abs(residual) < tuning, (1.0 - (residual / tuning) ** 2) ** 2, 0.0)
        if robust.sum() < 12:
            return None
    kept = robust > 0
    if kept.sum() < max(FALX_MIN_ROW_FRACTION * len(rows), 12):
        return None
    if float(np.median(np.abs(residual[kept]))) * col_mm > 1.0:
        return None
    # Back to coefficients in row units: t = (r - m) / s.
    m, s = float(fr.mean()), scale
    b0, b1, b2 = coef
    a2 = b2 / (s * s)
    a1 = b1 / s - 2.0 * b2 * m / (s * s)
    a0 = b0 - b1 * m / s + b2 * m * m / (s * s)
    # Refuse a bent fit: the falx is nearly straight within a slice.
    span = np.array([rows.min(), rows.max()], dtype=np.float64)
    curve = a0 + a1 * span + a2 * span * span
    line = predicted[[0, -1]]
    if np.max(np.abs(curve - line)) * col_mm > FALX_SEARCH_MM + 2.0:
        return None
    return np.array([a0, a1, a2])


def find_landmarks(volume: CTVolume, anatomy: HeadAnatomy) -> HeadLandmarks:
    """Derive the head frame, the midline (on the falx) and the pineal-region landmarks.

    Parameters
    ----------
    volume : CTVolume
        The head CT, HU (slices, rows, columns).
    anatomy : HeadAnatomy
        Its anatomy (possibly warped by
        :func:`dicom_node.training.augment.deform_case`).

    Returns
    -------
    HeadLandmarks

    Raises
    ------
    ValueError
        If the anatomy has no intracranial voxel.

    References
    ----------
    Osborn AG. Osborn's Brain. 2nd ed. Elsevier; 2017; Kiroglu Y, et al.
    Diagn Interv Radiol. 2010;16(4):263-269.
    """
    intracranial = anatomy.intracranial
    if not intracranial.any():
        raise ValueError("the anatomy has no intracranial voxel")
    row_mm, col_mm = volume.pixel_spacing_mm
    slices = volume.shape[0]
    axis, _large = _head_axis(anatomy, volume)
    posterior = axis[0] * volume.column_direction + axis[1] * volume.row_direction
    posterior /= np.linalg.norm(posterior)
    left = -axis[1] * volume.column_direction + axis[0] * volume.row_direction
    left /= np.linalg.norm(left)
    if left[0] < 0:
        left = -left
    up = volume.normal / np.linalg.norm(volume.normal)
    if up[2] < 0:
        up = -up
    k_all, r_all, c_all = np.nonzero(intracranial[:, ::2, ::2])
    centre = np.mean(
        [
            volume.pixel_to_patient(int(k), 2.0 * r, 2.0 * c)
            for k, r, c in zip(k_all[::50], r_all[::50], c_all[::50], strict=True)
        ],
        axis=0,
    )
    # Midline per slice: through (centroid row, midline column) along the axis.
    slope = (axis[1] / col_mm) / (axis[0] / row_mm) if abs(axis[0]) > 1e-6 else 0.0
    area = intracranial.sum(axis=(1, 2))
    midline = np.zeros((slices, 3))
    from_falx = np.zeros(slices, dtype=bool)
    near_ventricle = cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(8.0 / col_mm) + 1, 2 * int(8.0 / row_mm) + 1)
    )
    for k in range(slices):
        rows_k = np.flatnonzero(intracranial[k].any(axis=1))
        centroid_row = float(np.mean(np.nonzero(intracranial[k])[0])) if rows_k.size else 0.0
        a1 = slope
        a0 = float(anatomy.midline_column[k]) - a1 * centroid_row
        midline[k] = (a0, a1, 0.0)
        if area[k] < 0.3 * area.max():
            continue
        inside = intracranial[k] & (anatomy.depth_mm[k] > 4.0)
        if anatomy.ventricles[k].any():
            inside &= cv2.dilate(anatomy.ventricles[k].astype(np.uint8), near_ventricle) == 0
        rows = rows_k[(rows_k > rows_k.min() + 3) & (rows_k < rows_k.max() - 3)]
        predicted = a0 + a1 * rows.astype(np.float64)
        fit = _fit_falx(
            volume.hu[k].astype(np.float32), inside, predicted, rows, volume.pixel_spacing_mm
        )
        if fit is not None:
            midline[k] = fit
            from_falx[k] = True
    landmarks = HeadLandmarks(
        centre_mm=centre,
        up=up,
        posterior=posterior,
        left=left,
        midline=midline,
        midline_from_falx=from_falx,
        ventricle_centre_mm=None,
        atria_mm=None,
        pineal_mm=None,
    )
    ventricle_centre, atria, pineal = _ventricle_landmarks(volume, anatomy, landmarks)
    logger.debug(
        "landmarks of series %s: falx found on %d slices, atria %s, pineal %s",
        volume.series_instance_uid,
        int(from_falx.sum()),
        None if atria is None else np.round(atria, 1).tolist(),
        None if pineal is None else np.round(pineal, 1).tolist(),
    )
    return HeadLandmarks(
        centre_mm=centre,
        up=up,
        posterior=posterior,
        left=left,
        midline=midline,
        midline_from_falx=from_falx,
        ventricle_centre_mm=ventricle_centre,
        atria_mm=atria,
        pineal_mm=pineal,
    )


def _ventricle_landmarks(
    volume: CTVolume, anatomy: HeadAnatomy, frame: HeadLandmarks
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Ventricle centroid, left and right atrium points, and the pineal site."""
    k, r, c = np.nonzero(anatomy.ventricles)
    if k.size == 0:
        return None, None, None
    step = max(1, k.size // 20000)
    k, r, c = k[::step], r[::step], c[::step]
    points = np.empty((k.size, 3))
    lateral = np.empty(k.size)
    for kk in np.unique(k):
        sel = k == kk
        points[sel] = volume.pixel_to_patient(int(kk), r[sel], c[sel])
        lateral[sel] = frame.lateral_mm(volume, int(kk), r[sel], c[sel])
    centre = points.mean(axis=0)
    back = (points - frame.centre_mm) @ frame.posterior
    depth = anatomy.depth_mm[k, r, c]
    height = (points - frame.centre_mm) @ frame.up
    low, high = ATRIUM_LATERAL_MM
    sides = []
    for side in (1.0, -1.0):
        sel = (lateral * side >= low) & (lateral * side <= high)
        if (sel & (depth >= 15.0)).sum() >= 20:
            sel &= depth >= 15.0  # not the CSF of a peripheral (atrophic) region
        if sel.sum() < 20:
            return centre, None, None
        sides.append(sel & (back >= np.percentile(back[sel], 75.0)))
    # Both atria lie at about one level, in the lower part of the candidates (above it are
    # the ventricles' bodies): keep each side's candidates near it.
    level = float(np.percentile(height[sides[0] | sides[1]], 35.0))
    atria = []
    for sel in sides:
        near = sel & (np.abs(height - level) <= 8.0)
        candidates = points[near if near.sum() >= 5 else sel]
        median = np.median(candidates, axis=0)
        atria.append(candidates[int(np.argmin(np.linalg.norm(candidates - median, axis=1)))])
    atria_mm = np.array(atria)
    # Pineal: on the midline between the atria, a little anterior and inferior to them.
    middle = atria_mm.mean(axis=0) - 8.0 * frame.posterior - 4.0 * frame.up
    pineal = frame.to_midline(volume, middle)
    return centre, atria_mm, pineal
