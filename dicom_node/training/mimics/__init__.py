"""Hard mimics of hemorrhage for synthetic head CT: dense normal structures and artefacts.

A model trained on synthetic blood drawn into one real normal head learns
"bright inside the skull means blood" and raises false alarms on real normal
heads where dense normal structures or artefacts sit: physiologic
calcifications, a dense falx or tentorium, beam hardening at the skull base,
partial volume of the inner table, motion. This module draws such mimics into
a case's HU, with the same care for partial volume as the blood of
:mod:`dicom_node.training.lesions` (a small dense calcification in a thick
slice reads 60-100 HU at its edge, like blood), so that a model can be
fine-tuned to ignore them and a validation set can be built that looks like
real negatives. Mimics never touch the labels: they are not blood (label 0).

Mimics (:data:`MIMIC_WEIGHTS`, sites from
:func:`dicom_node.training.landmarks.find_landmarks`):

- **calcifications** (``pineal``, ``habenula``, ``choroid plexus``,
  ``globus pallidus``, ``falx plaque``): clusters of 1-3 small ellipsoids in
  patient coordinates, rasterised with sub-pixel in-plane sampling and
  sub-slice sampling over each slice's own thickness along its normal (gantry
  tilt respected), blurred by the in-plane point-spread function (Gaussian,
  :data:`PSF_SIGMA_MM`), then added as ``hu += F * max(D - background, 0)``
  with the density ``D`` solved so the densest voxel reads the drawn peak
  (:data:`CALCIFICATION_PEAK_HU`), at most :data:`MAX_CALCIFICATION_HU`.
  The image noise stays. Pineal: on the midline behind the third ventricle
  at the level of the atria, 3-10 mm; habenula: 3-7 mm in front of it,
  2-4 mm; choroid plexus glomus: in both atria, 3-8 mm; globus pallidus:
  both sides, 15-22 mm lateral, at the level of the third ventricle,
  punctate or faint; falx plaque: on the falx, elongated, thin.
- **dense dura** (``dense falx``, ``dense tentorium``): a 1-3 mm band on the
  falx (fitted to the scan's own falx where visible) above the ventricles,
  reading 50-90 HU; a 1.5-4 mm tent-shaped sheet (the dura with its
  sinuses, :class:`~dicom_node.training.landmarks.TentoriumModel`) of 65-100 HU,
  fading slowly away from the apex (60-120 mm) and patchy,
  that thick slices cut obliquely, so it reads as a smeared band.
- **beam hardening** (``beam hardening``): on a skull-base slice, a dark
  band (-20 to -60 HU) between the petrous bones (the "Hounsfield bar") and
  2-6 thin bright and dark streaks (15-40 HU) fanning from the dense bone.
- **partial-volume bone** (``bone partial volume``): on 1-3 slices where
  the skull is cut obliquely (skull base, vertex), a rim of 1-3 pixels
  inside the inner table raised towards 60-120 HU, over parts of the edge.
- **motion** (``motion``): 1-3 neighbouring slices blended 10-30 % with a
  copy shifted by 0.5-3 mm and turned by up to 1.5 degrees (a ghost of the
  skull inside the inner table).

:func:`vary_scanner` changes what a scanner and protocol change:
reconstruction kernel (smooth Gaussian 0.5-1 px, or a sharp unsharp mask
that raises the noise), noise level (x0.7-x2 of the scan's own), and a
partial field of view outside the skull. Slice thickness is not varied: it
would need thicker labels and new slice geometry.

:func:`clip_to_window`, :func:`zero_fill_background` and :func:`skull_strip`
make *implausible* inputs (8-bit windowed, zero-filled, skull-stripped
exports) for the input checks of :mod:`dicom_node.imaging.head_ct`; they are
test inputs that must be called "not analysable", never training cases.

Every function is seeded by its generator: the same generator state gives
identical arrays.

The package holds :func:`draw_mimics` and :func:`insert_mimics`; the parts
live in :mod:`~dicom_node.training.mimics.common` (the spec of a mimic),
:mod:`~dicom_node.training.mimics.calcifications`,
:mod:`~dicom_node.training.mimics.dura`,
:mod:`~dicom_node.training.mimics.artefacts`,
:mod:`~dicom_node.training.mimics.scanner` (:func:`vary_scanner`) and
:mod:`~dicom_node.training.mimics.exports` (the implausible inputs).

References
----------
Osborn AG. Osborn's Brain: Imaging, Pathology, and Anatomy. 2nd ed.
Elsevier; 2017 (physiologic calcification, dural folds, pitfalls of
hemorrhage on CT). Kiroglu Y, Calli C, Karabulut N, Oncel C. Intracranial
calcifications on CT. Diagn Interv Radiol. 2010;16(4):263-269 (sites and
appearance of physiologic calcifications). Yalcin A, Ceylan M, Bayraktutan
OF, Sonkaya AR, Yuce I. Age and gender related prevalence of intracranial
calcifications in CT imaging; data from 12,000 healthy subjects. J Chem
Neuroanat. 2016;78:20-24, and Daghighi MH, Rezaei V, Zarrintan S, Pourfathi
H. Intracranial physiological calcifications in adults on computed
tomography in Tabriz, Iran. Folia Morphol. 2007;66(2):115-119 (pineal and
choroid plexus calcification are the most frequent, dural and habenular
ones common, basal ganglia ones rare; the weights of :data:`MIMIC_WEIGHTS`
follow that order). Whitehead MT, Oh C, Raju A, Choudhri AF. Physiologic
pineal region, choroid plexus, and dural calcifications in the first decade
of life. AJNR Am J Neuroradiol. 2015;36(3):575-580. Barrett JF, Keat N.
Artifacts in CT: recognition and avoidance. RadioGraphics.
2004;24(6):1679-1691 (partial volume, beam hardening and the dark bands
between dense objects, motion, noise and the reconstruction kernel).
Solomon J, Samei E. Phys Med Biol. 2014;59(21):6637-6657 (image-domain
insertion with partial volume and the system's blur).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from dicom_node.series.volume import CTVolume
from dicom_node.training.anatomy import HeadAnatomy
from dicom_node.training.landmarks import HeadLandmarks, find_landmarks
from dicom_node.training.mimics.artefacts import (
    BONE_RIM_HU,
    HOUNSFIELD_BAR_HU,
    MOTION_SHIFT_MM,
    MOTION_TURN_DEG,
    MOTION_WEIGHT,
    STREAK_HU,
    _beam_hardening,
    _bone_partial_volume,
    _motion,
)
from dicom_node.training.mimics.calcifications import (
    CALCIFICATION_PEAK_HU,
    CALCIFICATION_SIZE_MM,
    MAX_CALCIFICATION_HU,
    _choroid,
    _falx_plaque,
    _globus_pallidus,
    _habenula,
    _pineal,
    add_calcification,
)
from dicom_node.training.mimics.common import (
    BEAM_HARDENING,
    CALCIFICATION,
    DENSE_DURA,
    MOTION,
    PARTIAL_VOLUME_BONE,
    PSF_SIGMA_MM,
    MimicSpec,
    NoMimicSiteError,
)
from dicom_node.training.mimics.dura import (
    DENSE_FALX_HU,
    DENSE_FALX_THICKNESS_MM,
    DENSE_TENTORIUM_HU,
    DENSE_TENTORIUM_THICKNESS_MM,
    _dense_falx,
    _dense_tentorium,
)
from dicom_node.training.mimics.exports import clip_to_window, skull_strip, zero_fill_background
from dicom_node.training.mimics.scanner import (
    NOISE_FACTOR,
    PARTIAL_FOV_PROBABILITY,
    SHARP_KERNEL_AMOUNT,
    SHARP_KERNEL_SIGMA_PX,
    SMOOTH_KERNEL_SIGMA_PX,
    vary_scanner,
)

__all__ = [
    "ACQUISITION_MIMICS",
    "BEAM_HARDENING",
    "BONE_RIM_HU",
    "CALCIFICATION",
    "CALCIFICATION_PEAK_HU",
    "CALCIFICATION_SIZE_MM",
    "DENSE_DURA",
    "DENSE_FALX_HU",
    "DENSE_FALX_THICKNESS_MM",
    "DENSE_TENTORIUM_HU",
    "DENSE_TENTORIUM_THICKNESS_MM",
    "HOUNSFIELD_BAR_HU",
    "MAX_CALCIFICATION_HU",
    "MIMIC_WEIGHTS",
    "MOTION",
    "MOTION_SHIFT_MM",
    "MOTION_TURN_DEG",
    "MOTION_WEIGHT",
    "NOISE_FACTOR",
    "PARTIAL_FOV_PROBABILITY",
    "PARTIAL_VOLUME_BONE",
    "PSF_SIGMA_MM",
    "SHARP_KERNEL_AMOUNT",
    "SHARP_KERNEL_SIGMA_PX",
    "SMOOTH_KERNEL_SIGMA_PX",
    "STREAK_HU",
    "MimicSpec",
    "NoMimicSiteError",
    "add_calcification",
    "clip_to_window",
    "draw_mimics",
    "insert_mimics",
    "skull_strip",
    "vary_scanner",
    "zero_fill_background",
]

logger = logging.getLogger(__name__)

#: Relative frequency of each mimic when :func:`draw_mimics` picks them.
MIMIC_WEIGHTS: dict[str, float] = {
    "pineal": 0.16,
    "choroid plexus": 0.16,
    "habenula": 0.05,
    "globus pallidus": 0.06,
    "falx plaque": 0.07,
    "dense falx": 0.13,
    "dense tentorium": 0.09,
    "beam hardening": 0.10,
    "bone partial volume": 0.10,
    "motion": 0.08,
}
#: Mimics of the acquisition, drawn after the blood (they also affect it).
ACQUISITION_MIMICS = frozenset({"beam hardening", "motion"})


_INSERTERS = {
    "pineal": _pineal,
    "habenula": _habenula,
    "choroid plexus": _choroid,
    "globus pallidus": _globus_pallidus,
    "falx plaque": _falx_plaque,
    "dense falx": _dense_falx,
    "dense tentorium": _dense_tentorium,
    "beam hardening": _beam_hardening,
    "bone partial volume": _bone_partial_volume,
    "motion": _motion,
}


def draw_mimics(rng: np.random.Generator, count: int | None = None) -> tuple[str, ...]:
    """Draw which mimics a case gets.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws.
    count : int or None
        How many distinct mimics; 1-4 uniformly when None.

    Returns
    -------
    tuple of str
        Distinct names of :data:`MIMIC_WEIGHTS`, drawn with those weights.

    Raises
    ------
    ValueError
        If ``count`` is not between 0 and the number of mimics.

    References
    ----------
    Yalcin A, et al. J Chem Neuroanat. 2016;78:20-24; Daghighi MH, et al.
    Folia Morphol. 2007;66(2):115-119 (relative frequency of the sites).
    """
    names = list(MIMIC_WEIGHTS)
    if count is None:
        count = int(rng.integers(1, 5))
    if not 0 <= count <= len(names):
        raise ValueError(f"count must be 0..{len(names)}, got {count}")
    weights = np.array([MIMIC_WEIGHTS[n] for n in names])
    picks = rng.choice(len(names), size=count, replace=False, p=weights / weights.sum())
    return tuple(names[int(i)] for i in picks)


def insert_mimics(
    hu: np.ndarray,
    volume: CTVolume,
    anatomy: HeadAnatomy,
    names: Sequence[str],
    rng: np.random.Generator,
    *,
    landmarks: HeadLandmarks | None = None,
) -> tuple[MimicSpec, ...]:
    """Draw mimics of hemorrhage into a head CT, in place, in the given order.

    A mimic whose site the anatomy lacks (no ventricles, no skull base in
    the scan) is skipped and logged; the labels of a case are never read or
    changed.

    Parameters
    ----------
    hu : numpy.ndarray
        float32 (slices, rows, columns) HU of the case, modified in place.
    volume : CTVolume
        Geometry of ``hu`` (its own HU are not read).
    anatomy : HeadAnatomy
        Anatomy of the case on the same grid.
    names : sequence of str
        Names from :data:`MIMIC_WEIGHTS` (see :func:`draw_mimics`).
    rng : numpy.random.Generator
        Source of every draw; the same state gives identical arrays.
    landmarks : HeadLandmarks or None
        :func:`~dicom_node.training.landmarks.find_landmarks` of the case,
        derived here when None.

    Returns
    -------
    tuple of MimicSpec
        One per object inserted (a bilateral calcification gives two).

    Raises
    ------
    ValueError
        If a name is unknown, or ``hu`` is not float32 of the volume's shape.

    References
    ----------
    Kiroglu Y, et al. Diagn Interv Radiol. 2010;16(4):263-269; Barrett JF,
    Keat N. RadioGraphics. 2004;24(6):1679-1691; Osborn AG. Osborn's Brain.
    2nd ed. Elsevier; 2017.
    """
    unknown = [n for n in names if n not in _INSERTERS]
    if unknown:
        raise ValueError(f"unknown mimic(s) {unknown}; known: {sorted(_INSERTERS)}")
    if hu.dtype != np.float32 or hu.shape != volume.shape:
        raise ValueError(f"hu must be float32 of shape {volume.shape}, got {hu.dtype} {hu.shape}")
    if not names:
        return ()
    if landmarks is None:
        landmarks = find_landmarks(volume, anatomy)
    specs: list[MimicSpec] = []
    for name in names:
        try:
            made = _INSERTERS[name](hu, volume, anatomy, landmarks, rng)
            specs.extend(spec for spec in made if spec.slices)
        except NoMimicSiteError as err:
            logger.debug("mimic %s skipped in series %s: %s", name, volume.series_instance_uid, err)
    return tuple(specs)
