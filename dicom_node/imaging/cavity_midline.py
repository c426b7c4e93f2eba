"""The mid-sagittal line of an axial head CT stack, fitted to its cranial cavity.

:func:`fit_midsagittal_line` fits one line for every slice of the stack to
the left-right midpoints of the cranial cavity
(:func:`dicom_node.imaging.head_ct.cranial_cavity`); the blood rules
(:mod:`dicom_node.imaging.blood_rules`: the falx zone, calcification sites,
the symmetry of a dural band) and the region figures
(:mod:`dicom_node.imaging.region_features`) measure from it, and
:func:`_mirror_pixels` reflects pixels about it. The mid-sagittal *plane*
of CT angiography (in patient coordinates) is :mod:`dicom_node.imaging.midline`.
Split out of :mod:`dicom_node.imaging.blood_rules`, which re-exports its
public names.

References
----------
Liu Y, Collins RT, Rothfus WE. Robust midsagittal plane extraction from
normal and pathological 3-D neuroradiology images. IEEE TMI
2001;20:175-192 (symmetry of the skull about the mid-sagittal plane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MidsagittalLine:
    """The mid-sagittal line of an axial stack, one line for every slice.

    ``column = slope * row + intercept`` in source pixel indices.

    Parameters
    ----------
    slope : float
        Columns per row.
    intercept : float
        Column at row 0.
    pixel_spacing_mm : tuple of float
        (row, column) spacing in mm.
    """

    slope: float
    intercept: float
    pixel_spacing_mm: tuple[float, float]

    def distance_mm(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Signed perpendicular distance (mm) of pixels to the line, + toward higher columns.

        Parameters
        ----------
        rows, columns : numpy.ndarray
            Pixel indices (any equal shapes).

        Returns
        -------
        numpy.ndarray
            float64, same shape.
        """
        row_mm, col_mm = self.pixel_spacing_mm
        a = self.slope * col_mm / row_mm
        x = np.asarray(columns, dtype=np.float64) * col_mm
        y = np.asarray(rows, dtype=np.float64) * row_mm
        return (x - a * y - self.intercept * col_mm) / np.sqrt(1.0 + a * a)


def fit_midsagittal_line(
    cavity: np.ndarray, pixel_spacing_mm: tuple[float, float]
) -> MidsagittalLine | None:
    """Fit the mid-sagittal line to the cavity's left-right midpoints.

    For every row of every slab, the midpoint between the leftmost and
    rightmost cavity pixel; a least-squares line through them, refitted on
    the midpoints within 5 mm of the first fit (the skull is symmetric about
    the mid-sagittal plane; a lesion does not move its bony outline).

    Parameters
    ----------
    cavity : numpy.ndarray
        bool (slabs, rows, columns).
    pixel_spacing_mm : tuple of float
        (row, column) spacing in mm.

    Returns
    -------
    MidsagittalLine or None
        None when the cavity has fewer than 10 rows.

    References
    ----------
    Liu Y, Collins RT, Rothfus WE. Robust midsagittal plane extraction from
    normal and pathological 3-D neuroradiology images. IEEE TMI
    2001;20:175-192 (symmetry of the skull about the mid-sagittal plane).
    """
    rows_all, mids, weights = [], [], []
    for k in range(cavity.shape[0]):
        rows = np.flatnonzero(cavity[k].any(axis=1))
        if rows.size < 5:
            continue
        sub = cavity[k][rows]
        first = np.argmax(sub, axis=1)
        last = sub.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
        width = last - first
        keep = width > 0.3 * width.max()
        rows_all.append(rows[keep])
        mids.append(0.5 * (first[keep] + last[keep]))
        weights.append(width[keep])
    if not rows_all:
        return None
    r = np.concatenate(rows_all).astype(np.float64)
    m = np.concatenate(mids)
    w = np.concatenate(weights).astype(np.float64)
    if r.size < 10:
        return None
    slope, intercept = np.polyfit(r, m, 1, w=w)
    residual_mm = np.abs(m - (slope * r + intercept)) * pixel_spacing_mm[1]
    inliers = residual_mm < 5.0
    if inliers.sum() >= 10:
        slope, intercept = np.polyfit(r[inliers], m[inliers], 1, w=w[inliers])
    return MidsagittalLine(
        float(slope), float(intercept), (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    )


def _mirror_pixels(
    rows: np.ndarray, cols: np.ndarray, midline: MidsagittalLine
) -> tuple[np.ndarray, np.ndarray]:
    """Reflect pixels (row, column indices) about the mid-sagittal line; float indices."""
    row_mm, col_mm = midline.pixel_spacing_mm
    a = midline.slope * col_mm / row_mm
    d = midline.distance_mm(rows, cols)
    norm = np.sqrt(1.0 + a * a)
    # Unit normal of x - a*y = b in (x, y) mm is (1, -a) / norm; step back 2d along it.
    x = cols * col_mm - 2.0 * d / norm
    y = rows * row_mm + 2.0 * d * a / norm
    return y / row_mm, x / col_mm
