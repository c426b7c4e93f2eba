"""The in-plane model grid of the learned ICH pipeline: source slice <-> model pixels.

The affine map (:class:`InPlaneGrid`) that centres a fixed square grid of
the model's pixel spacing on the head (:func:`head_grid`), the resampling of
source slices onto it (:func:`to_model_grid`) and of predictions back to the
exact source pixels (:func:`to_source_grid`). Split out of
:mod:`dicom_node.imaging.ich_input`, which re-exports every name here.

References
----------
DICOM PS3.3 C.7.6.2.1.1 Image Position and Orientation (pixel centres are
integer indices); PS3.3 C.7.6.2.1.2 Pixel Spacing; OpenCV ``warpAffine``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from dicom_node.imaging.ich_input import IchInputSpec


#: Lowest HU used before resampling: GE padding (-1500 HU or lower) becomes air.
AIR_HU = -1024.0
#: HU above which a pixel counts as part of the head when centring the model grid.
HEAD_MIN_HU = -300.0


@dataclass(frozen=True)
class InPlaneGrid:
    """The in-plane affine map between a source slice and the model grid.

    Model pixel ``(u, v)`` (column, row) and source pixel ``(x, y)`` are
    related by ``[u, v] = matrix @ [x, y, 1]``. The same map holds for every
    slice of a series, because the slices of one series share Pixel Spacing,
    Rows and Columns.

    Parameters
    ----------
    matrix : numpy.ndarray
        float64 array of shape (2, 3), source pixel ``(x, y)`` = (column,
        row) -> model pixel ``(u, v)``; ``matrix[0, 0]`` and ``matrix[1, 1]``
        are the scale factors (source spacing / model spacing, both in mm).
    source_shape : tuple of int
        (rows, columns) of the source slices.
    size : int
        Rows and columns of the model grid (pixels).

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 (pixel centres are integer indices); OpenCV
    ``warpAffine`` with ``WARP_INVERSE_MAP`` for the way back.
    """

    matrix: np.ndarray
    source_shape: tuple[int, int]
    size: int


def head_grid(
    hu: np.ndarray, pixel_spacing_mm: tuple[float, float], spec: IchInputSpec
) -> InPlaneGrid:
    """Centre the model grid on the head and scale to the model spacing.

    Parameters
    ----------
    hu : numpy.ndarray
        float32 array (slices, rows, columns) in HU.
    pixel_spacing_mm : tuple of float
        (row spacing, column spacing) of the source in mm, as DICOM Pixel
        Spacing.
    spec : IchInputSpec
        Model input specification.

    Returns
    -------
    InPlaneGrid
        The map from source pixels to model pixels; the centre of the head's
        bounding box (pixels above :data:`HEAD_MIN_HU` in any slice) lands
        on the centre of the model grid, pixel ``(size - 1) / 2``. Source
        pixels farther than ``size * spec.pixel_spacing_mm / 2`` mm from that
        centre along a row or column lie outside the model field of view.

    Raises
    ------
    ValueError
        If ``hu`` is not 3-D or no pixel is above :data:`HEAD_MIN_HU`.
    """
    if hu.ndim != 3:
        raise ValueError(f"hu must be (slices, rows, columns), got shape {hu.shape}")
    head = np.any(hu > HEAD_MIN_HU, axis=0)
    rows = np.flatnonzero(head.any(axis=1))
    cols = np.flatnonzero(head.any(axis=0))
    if rows.size == 0:
        raise ValueError("no pixel above -300 HU: the series shows no head")
    cy = 0.5 * (rows[0] + rows[-1])
    cx = 0.5 * (cols[0] + cols[-1])
    row_mm, col_mm = (float(v) for v in pixel_spacing_mm)
    sx = col_mm / spec.pixel_spacing_mm
    sy = row_mm / spec.pixel_spacing_mm
    centre = (spec.size - 1) / 2.0
    matrix = np.array([[sx, 0.0, centre - sx * cx], [0.0, sy, centre - sy * cy]], dtype=np.float64)
    return InPlaneGrid(matrix=matrix, source_shape=(hu.shape[1], hu.shape[2]), size=spec.size)


def _antialias_sigma(grid: InPlaneGrid) -> tuple[float, float]:
    sx, sy = grid.matrix[0, 0], grid.matrix[1, 1]
    return max(0.0, (1.0 / sx - 1.0) / 2.0), max(0.0, (1.0 / sy - 1.0) / 2.0)


def to_model_grid(
    images: np.ndarray, grid: InPlaneGrid, *, fill: float = AIR_HU, antialias: bool = True
) -> np.ndarray:
    """Resample source slices onto the model grid.

    Parameters
    ----------
    images : numpy.ndarray
        Array (slices, rows, columns) on the source grid, HU or per-class
        fractions in [0, 1].
    grid : InPlaneGrid
        From :func:`head_grid`.
    fill : float
        Value where a model pixel falls outside the source image (HU for an
        HU image, default :data:`AIR_HU`; 0 for fractions).
    antialias : bool
        Gaussian pre-filter of sigma ``(downscale - 1) / 2`` source pixels
        per axis before bilinear sampling (as skimage's ``rescale`` does);
        no filter on an axis that is upsampled.

    Returns
    -------
    numpy.ndarray
        float32 array (slices, size, size).
    """
    sigma_x, sigma_y = _antialias_sigma(grid)
    out = np.empty((images.shape[0], grid.size, grid.size), dtype=np.float32)
    for k in range(images.shape[0]):
        image: np.ndarray = np.asarray(images[k], dtype=np.float32)
        if antialias and (sigma_x > 0 or sigma_y > 0):
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma_x or 1e-3, sigmaY=sigma_y or 1e-3)
        out[k] = cv2.warpAffine(
            image,
            grid.matrix,
            (grid.size, grid.size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=float(fill),
        )
    return out


def to_source_grid(images: np.ndarray, grid: InPlaneGrid) -> np.ndarray:
    """Map model-grid images (probabilities) back to the source pixels.

    Parameters
    ----------
    images : numpy.ndarray
        float32 array (slices, size, size) or (slices, size, size, channels).
    grid : InPlaneGrid
        The grid the images were predicted on.

    Returns
    -------
    numpy.ndarray
        float32 array (slices, rows, columns[, channels]) on the source grid,
        bilinear, 0 outside the model field of view.

    Notes
    -----
    The fill is 0 in every channel, background included: outside the model
    field of view a softmax no longer sums to 1, and a test such as
    ``P(background) <= 0.5`` is true there.
    """
    rows, cols = grid.source_shape
    tail = images.shape[3:]
    out = np.zeros((images.shape[0], rows, cols, *tail), dtype=np.float32)
    for k in range(images.shape[0]):
        out[k] = cv2.warpAffine(
            np.ascontiguousarray(images[k], dtype=np.float32),
            grid.matrix,
            (cols, rows),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        ).reshape(rows, cols, *tail)
    return out
