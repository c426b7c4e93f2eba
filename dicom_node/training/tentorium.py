"""The tentorium cerebelli of a head CT as a tent-shaped sheet, for placing mimics and lesions.

Split out of :mod:`dicom_node.training.landmarks` (which still exports every
name here): :class:`TentoriumModel`, the sheet's geometry about its apex at
the falcotentorial junction, and :func:`random_tentorium`, which draws one
from the pineal site of a
:class:`~dicom_node.training.landmarks.HeadLandmarks`. Dense dura mimics
(:mod:`dicom_node.training.mimics.dura`) and tentorial subdurals
(:mod:`dicom_node.training.lesions.extra_axial`) are drawn on it.

References
----------
Osborn AG. Osborn's Brain: Imaging, Pathology, and Anatomy. 2nd ed.
Elsevier; 2017 (the dural folds: the tentorium, the straight sinus and the
tentorial incisura).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dicom_node.training.landmarks import HeadLandmarks


@dataclass(frozen=True)
class TentoriumModel:
    """The tentorium cerebelli as a tent-shaped sheet: a roof whose ridge is the straight sinus.

    In head coordinates about the apex (the falcotentorial junction),
    ``x`` to the patient's left, ``y`` posterior, ``z`` up, the sheet's
    mid-surface is

    ``z = -tan(ridge) * max(y, 0) - tan(slope) * (sqrt(x ** 2 + r ** 2) - r)``

    with ``r`` = :data:`TENTORIUM_RIDGE_ROUNDING_MM`: from the ridge, which
    descends posteriorly to the torcula, the two leaves slope down laterally
    to the transverse sinuses at the inner table. An axial slice below the
    apex cuts it in a V pointing posteriorly whose limbs run forward along
    the incisura, the classic shape of the tentorium on CT. The leaves
    reach ``anterior_reach_mm`` in front of the apex (the petrous ridges);
    the tentorial incisura, ``y < 0, |x| < notch_half_width_mm *
    sqrt(-y / notch_length_mm)`` (capped at that half width), is open for
    the midbrain.

    Parameters
    ----------
    apex_mm : tuple of float
        LPS point of the apex, mm.
    left, posterior, up : tuple of float
        Unit vectors of the head frame
        (:class:`~dicom_node.training.landmarks.HeadLandmarks`).
    slope_deg : float
        Lateral slope of the leaves below the axial plane, degrees.
    ridge_deg : float
        Slope of the ridge (straight sinus) below the axial plane, degrees.
    anterior_reach_mm : float
        How far in front of the apex the lateral leaves reach, mm.
    notch_half_width_mm, notch_length_mm : float
        Size of the incisura, mm.

    References
    ----------
    Osborn AG. Osborn's Brain. 2nd ed. Elsevier; 2017 (the dural folds: the
    tentorium, the straight sinus and the tentorial incisura).
    """

    apex_mm: tuple[float, float, float]
    left: tuple[float, float, float]
    posterior: tuple[float, float, float]
    up: tuple[float, float, float]
    slope_deg: float
    ridge_deg: float
    anterior_reach_mm: float
    notch_half_width_mm: float
    notch_length_mm: float

    def head_coordinates(
        self, dot: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, z) in mm about the apex, given ``dot(e)`` = P . e (mm) for the points P."""
        apex = np.asarray(self.apex_mm)
        out = []
        for axis in (self.left, self.posterior, self.up):
            e = np.asarray(axis)
            out.append(dot(e) - np.float32(apex @ e))
        return out[0], out[1], out[2]

    def surface_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height (mm, about the apex) of the mid-surface above (x, y)."""
        r = np.float32(TENTORIUM_RIDGE_ROUNDING_MM)
        lateral = np.sqrt(x * x + r * r) - r
        return (
            -np.float32(np.tan(np.deg2rad(self.ridge_deg))) * np.maximum(y, 0.0)
            - np.float32(np.tan(np.deg2rad(self.slope_deg))) * lateral
        )

    def height_mm(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance (mm) above the mid-surface, normal to the leaves (negative below)."""
        a = np.tan(np.deg2rad(self.slope_deg))
        b = np.tan(np.deg2rad(self.ridge_deg))
        norm = np.sqrt(1.0 + a * a + np.where(y > 0, b * b, 0.0)).astype(np.float32)
        return (z - self.surface_z(x, y)) / norm

    def on_sheet(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """bool: where (x, y) lies under the tentorium (outside the incisura, not too far ahead)."""
        ahead = np.maximum(-y, 0.0)
        width = np.float32(self.notch_half_width_mm)
        notch = np.minimum(width * np.sqrt(ahead / np.float32(self.notch_length_mm)), width)
        return (y >= -np.float32(self.anterior_reach_mm)) & ((y >= 0.0) | (np.abs(x) >= notch))

    def distance_from_apex_mm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """In-plane distance (mm) from the apex's vertical line."""
        return np.sqrt(x * x + y * y)


#: Rounding (mm) of the ridge of :class:`TentoriumModel`.
TENTORIUM_RIDGE_ROUNDING_MM = 4.0


def random_tentorium(landmarks: HeadLandmarks, rng: np.random.Generator) -> TentoriumModel:
    """Draw a plausible tentorium for a head from its pineal site.

    The apex lies 8-16 mm behind the pineal gland, 3 mm below to 5 mm above
    it (the vein of Galen joins the straight sinus there); lateral slope
    30-45 degrees, ridge slope 25-40 degrees, leaves 20-35 mm in front of
    the apex, incisura 12-17 mm half wide and 25-35 mm long.

    Parameters
    ----------
    landmarks : HeadLandmarks
        Landmarks with a pineal site.
    rng : numpy.random.Generator
        Source of the draws.

    Returns
    -------
    TentoriumModel

    Raises
    ------
    ValueError
        If the landmarks have no pineal site (no lateral ventricles found).

    References
    ----------
    Osborn AG. Osborn's Brain. 2nd ed. Elsevier; 2017.
    """
    if landmarks.pineal_mm is None:
        raise ValueError("no pineal site: the tentorium cannot be placed")
    apex = (
        landmarks.pineal_mm
        + rng.uniform(8.0, 16.0) * landmarks.posterior
        + rng.uniform(-3.0, 5.0) * landmarks.up
    )
    return TentoriumModel(
        apex_mm=tuple(float(v) for v in apex),  # type: ignore[arg-type]
        left=tuple(float(v) for v in landmarks.left),  # type: ignore[arg-type]
        posterior=tuple(float(v) for v in landmarks.posterior),  # type: ignore[arg-type]
        up=tuple(float(v) for v in landmarks.up),  # type: ignore[arg-type]
        slope_deg=float(rng.uniform(30.0, 45.0)),
        ridge_deg=float(rng.uniform(25.0, 40.0)),
        anterior_reach_mm=float(rng.uniform(20.0, 35.0)),
        notch_half_width_mm=float(rng.uniform(12.0, 17.0)),
        notch_length_mm=float(rng.uniform(25.0, 35.0)),
    )
