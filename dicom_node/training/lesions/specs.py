"""What a synthetic case is made of: the spec of a lesion, the case, a lesion on its crop.

:class:`LesionSpec` and :class:`SyntheticCase` are what
:func:`~dicom_node.training.lesions.make_case` returns; :class:`_Lesion` is
a lesion as a partial-volume fraction on a crop of the grid, before blending.

References
----------
Flanders AE, et al. Construction of a machine learning dataset through
collaboration: the RSNA 2019 Brain CT Hemorrhage Challenge. Radiol Artif
Intell. 2020;2(3):e190211 (the five subtypes). Cavalieri principle (see
:attr:`~dicom_node.series.volume.CTVolume.slice_spacing_mm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicom_node.series.volume import CTVolume
from dicom_node.training.mimics import MimicSpec


@dataclass(frozen=True)
class LesionSpec:
    """What was inserted for one lesion.

    Parameters
    ----------
    subtype : str
        One of :data:`dicom_node.imaging.ich_input.ICH_SUBTYPES`.
    hu : float
        CT number of the blood in HU (before noise).
    inserted_volume_ml : float
        Sum of the partial-volume fraction times the voxel volume, in mL.
    mask_volume_ml : float
        Volume in mL of the lesion's own label mask (fraction >= 0.5), before
        any later lesion overwrote it.
    centre_mm : tuple of float
        Fraction-weighted centroid (x, y, z) in LPS patient coordinates (mm).

    References
    ----------
    Cavalieri principle (see :attr:`CTVolume.slice_spacing_mm`).
    """

    subtype: str
    hu: float
    inserted_volume_ml: float
    mask_volume_ml: float
    centre_mm: tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class SyntheticCase:
    """One synthetic training case.

    Parameters
    ----------
    volume : CTVolume
        HU (slices, rows, columns) with the lesions (and deformation); same
        geometry and UIDs as the base volume.
    labels : numpy.ndarray
        uint8 (slices, rows, columns): 0 background, else
        :func:`dicom_node.imaging.ich_input.subtype_label` of the subtype.
    lesions : tuple of LesionSpec
        In insertion order; empty for a negative case.
    seed : int
        The seed that reproduces the case with :func:`make_case`.
    mimics : tuple of MimicSpec
        Hard mimics and scanner changes drawn into the case
        (:mod:`dicom_node.training.mimics`), in order; empty by default.
        They are not blood and have no label.

    References
    ----------
    Flanders AE, et al. Radiol Artif Intell. 2020;2(3):e190211 (subtypes).
    """

    volume: CTVolume
    labels: np.ndarray
    lesions: tuple[LesionSpec, ...]
    seed: int
    mimics: tuple[MimicSpec, ...] = ()


@dataclass(frozen=True, eq=False)
class _Lesion:
    """A lesion as a partial-volume fraction on a crop of the grid."""

    subtype: str
    hu: float
    origin: tuple[int, int, int]  # (slice, row, column) of the crop's first voxel
    fraction: np.ndarray  # float32 (K, h, w)
    edema: np.ndarray | None  # float32 (K, h, w) fraction of edema, or None
    edema_hu: float
    texture_hu: float  # SD (HU) of the low-frequency clot heterogeneity

    @property
    def index(self) -> tuple[slice, slice, slice]:
        k, r, c = self.origin
        depth, h, w = self.fraction.shape
        return (slice(k, k + depth), slice(r, r + h), slice(c, c + w))
