"""Constants and result types of the synthetic CT angiogram generator.

Holds the generator's fixed parameters (contrast, thrombus and collateral
ranges, sampling steps, point-spread, circle of Willis placement) and the
types it returns: :class:`Artery`, :class:`OcclusionTruth`,
:class:`HeadLandmarks` and :class:`SyntheticCTA`. The package docstring
(:mod:`dicom_node.training.synthetic_cta`) describes what is drawn.

References
----------
Osborn AG. Diagnostic Cerebral Angiography, 2nd ed. Lippincott Williams &
Wilkins; 1999. Rai AT, et al. J Neurointerv Surg. 2013;5(4):371-375
(ICA/M1/M2 diameters). DICOM PS3.3 C.7.6.4 Contrast/Bolus Module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pydicom

from dicom_node.imaging.midline import HeadFrame
from dicom_node.series.volume import CTVolume

#: Series Description of a generated CT angiogram.
SYNTHETIC_CTA_SERIES_DESCRIPTION = "CTA HEAD (synthetic)"
#: Contrast/Bolus Agent (0018,0010) written into a generated CT angiogram.
SYNTHETIC_CONTRAST_AGENT = "IODINATED CONTRAST (SYNTHETIC)"
#: Occlusion sites the generator can draw.
OCCLUSION_SEGMENTS: tuple[str, ...] = ("ICA-T", "M1", "M2")
#: Sides, as the words used in reports (laterality).
SIDES: tuple[str, ...] = ("left", "right")
#: CT number (HU) range of a lumen fully filled with contrast.
CONTRAST_HU_RANGE = (250.0, 450.0)
#: Fraction of the contrast enhancement reached through collaterals downstream of an occlusion.
COLLATERAL_FRACTION_RANGE = (0.0, 0.5)
#: CT number (HU) range of unenhanced thrombus in the occluded lumen.
THROMBUS_HU_RANGE = (40.0, 55.0)
#: CT number (HU) of unenhanced blood, the zero of the contrast scale.
BLOOD_HU = 40.0
#: Arc-length step (mm) of the dense centreline samples.
CENTRELINE_STEP_MM = 0.25
#: Step (mm) of the sub-positions across the slice thickness.
THICKNESS_STEP_MM = 0.5
#: Gaussian sigma (mm) of the in-plane point-spread blur.
POINT_SPREAD_SIGMA_MM = 0.35
#: Fraction of the intracranial AP extent (from the front) at which the circle of Willis lies.
WILLIS_AP_FRACTION = 0.43
#: The circle of Willis lies at the lowest slice whose brain area reaches this fraction of the max.
WILLIS_LEVEL_AREA_FRACTION = 0.85


@dataclass(frozen=True, eq=False)
class Artery:
    """One drawn arterial segment.

    Parameters
    ----------
    name : str
        Clinical name with side, for example ``"middle_cerebral_artery_m1_left"``.
    side : str
        ``"left"``, ``"right"`` or ``"midline"``.
    centreline_mm : numpy.ndarray
        float64 array (n, 3): dense centreline samples in LPS mm, from the
        proximal to the distal end, about 0.25 mm apart.
    radius_mm : numpy.ndarray
        float64 array (n,): lumen radius at each sample in mm.
    opacity : numpy.ndarray
        float64 array (n,): 1 where the lumen is filled with contrast, the
        collateral fraction downstream of an occlusion, and 0 in thrombus.
    parent : str or None
        Name of the artery it branches from.
    """

    name: str
    side: str
    centreline_mm: np.ndarray
    radius_mm: np.ndarray
    opacity: np.ndarray
    parent: str | None

    @property
    def length_mm(self) -> float:
        """float: centreline length in mm."""
        return float(np.linalg.norm(np.diff(self.centreline_mm, axis=0), axis=1).sum())


@dataclass(frozen=True)
class OcclusionTruth:
    """Where the generator occluded an artery.

    Parameters
    ----------
    segment : str
        ``"ICA-T"``, ``"M1"`` or ``"M2"``.
    side : str
        ``"left"`` or ``"right"`` (patient side).
    artery : str
        Name of the artery holding the proximal end of the thrombus.
    point_mm : tuple of float
        Proximal end of the thrombus (where enhancement stops) in LPS mm.
    collateral_fraction : float
        Fraction of the contrast enhancement reached downstream.
    """

    segment: str
    side: str
    artery: str
    point_mm: tuple[float, float, float]
    collateral_fraction: float


@dataclass(frozen=True, eq=False)
class HeadLandmarks:
    """Where the circle of Willis goes in a base head CT; computed once per base series.

    Parameters
    ----------
    volume : CTVolume
        The base (non-contrast) head CT.
    brain_mask : numpy.ndarray
        Boolean intracranial mask (slices, rows, columns).
    frame : HeadFrame
        Anatomical frame at the estimated centre of the circle of Willis.
    """

    volume: CTVolume
    brain_mask: np.ndarray
    frame: HeadFrame


@dataclass(frozen=True, eq=False)
class SyntheticCTA:
    """A generated CT angiogram and its ground truth.

    Parameters
    ----------
    datasets : list of pydicom.Dataset
        The new series, in the input order: new UIDs (unless disabled),
        Contrast/Bolus Agent set, Series Description
        ``"CTA HEAD (synthetic)"``.
    vessel_mask : numpy.ndarray
        Boolean (slices, rows, columns), slices in
        :func:`~dicom_node.series.volume.load_ct_volume` order: voxels whose
        contrast-equivalent lumen fraction is at least 0.5.
    opacified_fraction : numpy.ndarray
        float32 (slices, rows, columns) in [0, 1]: partial-volume lumen
        fraction times opacity, before the point-spread blur.
    thrombus_mask : numpy.ndarray
        Boolean (slices, rows, columns): voxels at least a quarter filled
        with occluded lumen; all False without occlusion.
    sop_instance_uids : tuple of str
        SOP Instance UID of each mask slice (the new UIDs).
    arteries : tuple of Artery
        Every drawn segment.
    occlusion : OcclusionTruth or None
        The occlusion, None for a normal angiogram.
    contrast_hu : float
        CT number of a lumen fully filled with contrast.
    noise_hu : tuple of float
        SD (HU) of the noise added per slice (0 where nothing was drawn).
    willis_center_mm : tuple of float
        Centre of the circle of Willis (template origin after the head pose
        and deformation) in LPS mm.
    parameters : dict
        Seed and every random draw, JSON-serialisable.
    """

    datasets: list[pydicom.Dataset]
    vessel_mask: np.ndarray
    opacified_fraction: np.ndarray
    thrombus_mask: np.ndarray
    sop_instance_uids: tuple[str, ...]
    arteries: tuple[Artery, ...]
    occlusion: OcclusionTruth | None
    contrast_hu: float
    noise_hu: tuple[float, ...]
    willis_center_mm: tuple[float, float, float]
    parameters: dict = field(default_factory=dict)

    def artery(self, name: str) -> Artery:
        """Return the drawn artery called ``name``.

        Parameters
        ----------
        name : str
            For example ``"internal_carotid_artery_left"``.

        Returns
        -------
        Artery
            The segment.

        Raises
        ------
        KeyError
            If no artery has that name.
        """
        for artery in self.arteries:
            if artery.name == name:
                return artery
        raise KeyError(name)
