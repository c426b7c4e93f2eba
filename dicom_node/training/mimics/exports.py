"""Implausible inputs: windowed, zero-filled and skull-stripped exports of a head CT.

Test inputs for the input checks of :mod:`dicom_node.imaging.head_ct`, which
must call them "not analysable"; never training cases.

References
----------
DICOM PS3.3 C.11.2.1.2 (Window Center and Window Width). Barrett JF, Keat N.
RadioGraphics. 2004;24(6):1679-1691 (CT numbers of air). Muschelli J, et al.
Validated automatic brain extraction of head CT images. NeuroImage.
2015;114:379-385.
"""

from __future__ import annotations

import numpy as np


def clip_to_window(
    hu: np.ndarray, center_hu: float = 40.0, width_hu: float = 80.0, *, eight_bit: bool = True
) -> np.ndarray:
    """An image windowed as a screenshot or a "windowed export" would store it.

    Parameters
    ----------
    hu : numpy.ndarray
        HU, any shape (typically (slices, rows, columns)); not modified.
    center_hu, width_hu : float
        Window centre and width (HU).
    eight_bit : bool
        True: grey levels 0-255 (linear over the window); False: HU clipped
        to the window.

    Returns
    -------
    numpy.ndarray
        float32 of the same shape; not a plausible HU image (no air, no
        bone), which :func:`dicom_node.imaging.head_ct.check_head_ct` must
        refuse (gate ``hu_scale``).

    Raises
    ------
    ValueError
        If ``width_hu`` is not positive.

    References
    ----------
    DICOM PS3.3 C.11.2.1.2 (Window Center and Window Width).
    """
    if width_hu <= 0:
        raise ValueError(f"width_hu must be positive, got {width_hu}")
    low = center_hu - width_hu / 2.0
    clipped = np.clip(np.asarray(hu, dtype=np.float32), low, low + width_hu)
    if eight_bit:
        return np.round((clipped - np.float32(low)) * np.float32(255.0 / width_hu)).astype(
            np.float32
        )
    return clipped.astype(np.float32)


def zero_fill_background(
    hu: np.ndarray, threshold_hu: float = -200.0, fill_hu: float = 0.0
) -> np.ndarray:
    """A volume whose air (and padding) was set to a constant, as some exports do.

    Parameters
    ----------
    hu : numpy.ndarray
        HU, any shape; not modified.
    threshold_hu : float
        Voxels below this (HU) are background.
    fill_hu : float
        Value they get (HU).

    Returns
    -------
    numpy.ndarray
        float32 copy with no air left (for ``fill_hu`` above
        ``threshold_hu``); :func:`~dicom_node.imaging.head_ct.check_head_ct`
        must refuse it.

    References
    ----------
    Barrett JF, Keat N. RadioGraphics. 2004;24(6):1679-1691 (CT numbers of air).
    """
    out = np.asarray(hu, dtype=np.float32).copy()
    out[out < threshold_hu] = np.float32(fill_hu)
    return out


def skull_strip(hu: np.ndarray, intracranial: np.ndarray, fill_hu: float = 0.0) -> np.ndarray:
    """A skull-stripped export: everything outside the intracranial space set to a constant.

    Parameters
    ----------
    hu : numpy.ndarray
        float (slices, rows, columns) HU; not modified.
    intracranial : numpy.ndarray
        bool (slices, rows, columns), for example
        :attr:`~dicom_node.training.anatomy.HeadAnatomy.intracranial`.
    fill_hu : float
        Value of the removed voxels (0 or -1000 HU in common tools).

    Returns
    -------
    numpy.ndarray
        float32 copy without skull and scalp (and so without bone);
        :func:`~dicom_node.imaging.head_ct.check_head_ct` must refuse it.

    Raises
    ------
    ValueError
        If the shapes differ.

    References
    ----------
    Muschelli J, et al. Validated automatic brain extraction of head CT
    images. NeuroImage. 2015;114:379-385.
    """
    if np.shape(intracranial) != np.shape(hu):
        raise ValueError(f"mask shape {np.shape(intracranial)} differs from {np.shape(hu)}")
    out = np.asarray(hu, dtype=np.float32).copy()
    out[~np.asarray(intracranial, dtype=bool)] = np.float32(fill_hu)
    return out
