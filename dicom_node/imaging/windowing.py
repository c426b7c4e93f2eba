"""Display windows for CT: HU to 8-bit grey levels.

References
----------
DICOM PS3.3 C.11.2.1.2 Window Center and Window Width (linear function).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A display window in HU.

    Parameters
    ----------
    center_hu : float
        Window Center in HU.
    width_hu : float
        Window Width in HU (> 0).

    References
    ----------
    DICOM PS3.3 C.11.2.1.2 Window Center and Window Width.
    """

    center_hu: float
    width_hu: float


#: Usual neuro CT windows.
BRAIN_WINDOW = Window(center_hu=40.0, width_hu=80.0)
SUBDURAL_WINDOW = Window(center_hu=75.0, width_hu=215.0)
BONE_WINDOW = Window(center_hu=600.0, width_hu=2800.0)


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """Map HU to 8-bit grey levels with the DICOM linear window function.

    Parameters
    ----------
    hu : numpy.ndarray
        Array of any shape in HU.
    window : Window
        The display window.

    Returns
    -------
    numpy.ndarray
        uint8 array of the same shape, 0 below the window and 255 above it.

    Raises
    ------
    ValueError
        If the window width is not positive.

    References
    ----------
    DICOM PS3.3 C.11.2.1.2.1 Default LINEAR Function.
    """
    if window.width_hu <= 0:
        raise ValueError(f"window width must be positive, got {window.width_hu}")
    c, w = window.center_hu - 0.5, window.width_hu - 1.0
    scaled = ((np.asarray(hu, dtype=np.float64) - c) / max(w, 1e-6) + 0.5) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
