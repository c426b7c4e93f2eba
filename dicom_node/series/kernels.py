"""In-plane structuring elements sized in mm from Pixel Spacing.

Shared by the quality gates (:mod:`dicom_node.series.quality`) and the image
operations of :mod:`dicom_node.imaging`. It lives here, with the volume
geometry, because image operations depend on the series (they take a
:class:`~dicom_node.series.volume.CTVolume`) and not the other way round.

References
----------
DICOM PS3.3 C.7.6.2.1.2 Pixel Spacing.
"""

from __future__ import annotations

import numpy as np


def disk_structuring_element(radius_mm: float, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """Return an in-plane disk of a given radius in mm as a structuring element.

    Parameters
    ----------
    radius_mm : float
        Radius of the disk in mm.
    pixel_spacing_mm : tuple of float
        (row spacing, column spacing) in mm, as Pixel Spacing.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape (2 * ry + 1, 2 * rx + 1), 1 inside the disk, where
        ry and rx are the radius in rows and in columns (at least 0, so a
        radius below one pixel gives the 1 x 1 identity element).

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.2 Pixel Spacing.
    """
    row_mm, col_mm = pixel_spacing_mm
    ry = max(int(np.floor(radius_mm / row_mm)), 0)
    rx = max(int(np.floor(radius_mm / col_mm)), 0)
    y, x = np.ogrid[-ry : ry + 1, -rx : rx + 1]
    inside = (y * row_mm) ** 2 + (x * col_mm) ** 2 <= radius_mm**2 + 1e-9
    return inside.astype(np.uint8)
