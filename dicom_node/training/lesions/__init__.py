"""Synthetic intracranial hemorrhages of the five subtypes, for training and testing.

A training case is the real head CT, optionally deformed and re-noised
(:func:`dicom_node.training.augment.deform_case`), with zero to three
hemorrhages blended in, and a label volume giving the subtype of every voxel.
Each subtype has its own shape model, anchored to the anatomy of
:mod:`dicom_node.training.anatomy`:

- **epidural**: a biconvex lens against the inner table, thickest in its
  centre and tapering to nothing at the rim, confined to an arc of at most
  70 degrees and a limited cranio-caudal span (it does not cross sutures);
  60-90 HU. Depth is measured from the convex hull of the intracranial
  section, so epidural and convexity subdural collections follow the vault
  and do not run along the sphenoid wing or petrous ridge.
- **subdural**: a crescent of almost uniform thickness (2-15 mm) along the
  inner table over a long arc (up to a third of the circumference) and many
  slices, tapering at its ends; or (:data:`SUBDURAL_FALX_PROBABILITY`, up to
  :data:`SUBDURAL_FALX_MAX_ML`) a thin parafalcine band along one side of the
  mid-sagittal line, above the ventricles; or
  (:data:`SUBDURAL_TENTORIUM_PROBABILITY`, up to
  :data:`SUBDURAL_TENTORIUM_MAX_ML`) a thin crescent (at most
  :data:`SUBDURAL_TENTORIUM_MAX_THICKNESS_MM`) on the upper surface of one
  leaf of the tentorium
  (:class:`~dicom_node.training.landmarks.TentoriumModel`); 50-80 HU.
- **subarachnoid**: a partial, connected filling of sulci and cisterns near
  a seed point, dilated by about one pixel, replacing CSF density; 40-70 HU.
- **intraparenchymal**: an irregular round lesion (ellipsoid perturbed by
  low-frequency radial noise) in parenchyma, with an optional hypodense rim of
  edema that is not labelled; 50-90 HU.
- **intraventricular**: blood in the dependent (posterior, patient supine)
  part of a ventricle, usually below a horizontal fluid level; 40-70 HU.

Partial volume: every shape is evaluated at pixel centres and at several
sub-positions spread over each slice's own thickness along the slice normal,
in patient coordinates (so gantry tilt and uneven slice steps are
respected); anatomical fields are interpolated along the normal between
slices with each slice's own in-plane offset. The fraction ``f`` of
sub-samples inside gives ``new = (1 - f) * old + f * (blood + noise)`` with
spatially correlated noise matched to the scan's own high-pass noise in
brain, and the label is the subtype where ``f >= 0.5`` (later lesions
overwrite earlier ones). The blood carries a faint low-frequency texture
(SD up to :data:`CLOT_TEXTURE_MAX_HU`). The size of each shape is solved so
that the partial-volume sum reaches the requested volume. Optional mass
effect pushes the tissue around large lesions radially outwards, in plane,
before blending, keeping the skull still.

Hard mimics (:mod:`dicom_node.training.mimics`): :func:`make_case` can also
draw 1-4 dense normal structures or artefacts into a case (calcifications,
dense falx or tentorium, beam hardening, partial-volume bone, motion) and
vary the scanner (kernel, noise, field of view), from child generators of the
seed, so a case made without them is byte-identical to before. They never
change the labels.

The package holds :func:`make_case`, :func:`insert_lesion` and
:func:`random_subtypes`; the parts live in
:mod:`~dicom_node.training.lesions.specs` (what a case is made of),
:mod:`~dicom_node.training.lesions.geometry` (sub-slice sampling, sizes
solved for a volume), one module per family of shapes
(:mod:`~dicom_node.training.lesions.extra_axial`,
:mod:`~dicom_node.training.lesions.intraparenchymal`,
:mod:`~dicom_node.training.lesions.csf_spaces`),
:mod:`~dicom_node.training.lesions.blending` (noise, labels, mass effect)
and :mod:`~dicom_node.training.lesions.dicom_export`
(:func:`case_to_datasets`).

References
----------
Osborn AG. Osborn's Brain: Imaging, Pathology, and Anatomy. 2nd ed.
Elsevier; 2017 (chapter "Trauma": appearance of epidural, subdural,
subarachnoid, parenchymal and intraventricular hemorrhage). Parizel PM, et al.
Intracranial hemorrhage: principles of CT and MRI interpretation. Eur Radiol.
2001;11(9):1770-1783 (CT numbers of acute blood 40-90 HU). Flanders AE, et al.
Construction of a machine learning dataset through collaboration: the RSNA
2019 Brain CT Hemorrhage Challenge. Radiol Artif Intell. 2020;2(3):e190211
(the five subtypes). Solomon J, Samei E. A generic framework to simulate
realistic lung, liver and renal pathologies in CT imaging. Phys Med Biol.
2014;59(21):6637-6657, and Robins M, et al. Techniques for virtual lung nodule
insertion. J Med Imaging. 2017;4(1):013503 (image-domain lesion insertion with
partial volume and matched noise). DICOM PS3.3 C.7.6.2 Image Plane Module.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from dicom_node.imaging.ich_input import ICH_SUBTYPES, subtype_label
from dicom_node.series.volume import CTVolume
from dicom_node.training.anatomy import HeadAnatomy
from dicom_node.training.augment import deform_case
from dicom_node.training.landmarks import find_landmarks
from dicom_node.training.lesions import extra_axial
from dicom_node.training.lesions.blending import (
    CLOT_TEXTURE_MAX_HU,
    CLOT_TEXTURE_SIGMA_MM,
    _blend,
    _mass_effect,
    _NoiseModel,
    _spec,
)
from dicom_node.training.lesions.csf_spaces import (
    FLUID_LEVEL_PROBABILITY,
    _intraventricular,
    _subarachnoid,
)
from dicom_node.training.lesions.dicom_export import SYNTHETIC_CASE_NOTE, case_to_datasets
from dicom_node.training.lesions.extra_axial import (
    EPIDURAL_MAX_ARC_DEG,
    EPIDURAL_MAX_HALF_SPAN_MM,
    SUBDURAL_FALX_MAX_ML,
    SUBDURAL_MAX_ARC_DEG,
    SUBDURAL_MAX_THICKNESS_MM,
    SUBDURAL_TENTORIUM_MAX_ML,
    SUBDURAL_TENTORIUM_MAX_THICKNESS_MM,
    _epidural,
)
from dicom_node.training.lesions.geometry import _Sampler
from dicom_node.training.lesions.intraparenchymal import EDEMA_PROBABILITY, _intraparenchymal
from dicom_node.training.lesions.specs import LesionSpec, SyntheticCase, _Lesion
from dicom_node.training.mimics import (
    ACQUISITION_MIMICS,
    MimicSpec,
    draw_mimics,
    insert_mimics,
    vary_scanner,
)

__all__ = [
    "BLOOD_HU_RANGE",
    "CLOT_TEXTURE_MAX_HU",
    "CLOT_TEXTURE_SIGMA_MM",
    "EDEMA_PROBABILITY",
    "EPIDURAL",
    "EPIDURAL_MAX_ARC_DEG",
    "EPIDURAL_MAX_HALF_SPAN_MM",
    "FLUID_LEVEL_PROBABILITY",
    "INTRAPARENCHYMAL",
    "INTRAVENTRICULAR",
    "MASS_EFFECT_MIN_ML",
    "MIMIC_SEED_KEY",
    "SCANNER_SEED_KEY",
    "SUBARACHNOID",
    "SUBDURAL",
    "SUBDURAL_FALX_MAX_ML",
    "SUBDURAL_FALX_PROBABILITY",
    "SUBDURAL_MAX_ARC_DEG",
    "SUBDURAL_MAX_THICKNESS_MM",
    "SUBDURAL_TENTORIUM_MAX_ML",
    "SUBDURAL_TENTORIUM_MAX_THICKNESS_MM",
    "SUBDURAL_TENTORIUM_PROBABILITY",
    "SYNTHETIC_CASE_NOTE",
    "THICKNESS_SAMPLES",
    "VOLUME_RANGE_ML",
    "LesionSpec",
    "SyntheticCase",
    "case_to_datasets",
    "insert_lesion",
    "make_case",
    "random_subtypes",
]

logger = logging.getLogger(__name__)

EPIDURAL, SUBDURAL, SUBARACHNOID, INTRAPARENCHYMAL, INTRAVENTRICULAR = ICH_SUBTYPES

#: Blood CT number range (HU) per subtype.
BLOOD_HU_RANGE: dict[str, tuple[float, float]] = {
    EPIDURAL: (60.0, 90.0),
    SUBDURAL: (50.0, 80.0),
    SUBARACHNOID: (40.0, 70.0),
    INTRAPARENCHYMAL: (50.0, 90.0),
    INTRAVENTRICULAR: (40.0, 70.0),
}
#: Volume range (mL) per subtype, drawn log-uniformly when no volume is requested.
VOLUME_RANGE_ML: dict[str, tuple[float, float]] = {
    EPIDURAL: (2.0, 80.0),
    SUBDURAL: (3.0, 80.0),
    SUBARACHNOID: (0.5, 12.0),
    INTRAPARENCHYMAL: (0.5, 80.0),
    INTRAVENTRICULAR: (0.5, 20.0),
}
#: Sub-positions across each slice's thickness for the partial-volume fraction.
THICKNESS_SAMPLES = 5
#: Probability that a subdural hematoma lies along the falx instead of the convexity.
SUBDURAL_FALX_PROBABILITY = 0.2
#: Probability that a subdural hematoma lies on the tentorium (drawn after the falx one).
SUBDURAL_TENTORIUM_PROBABILITY = 0.15
#: Seed suffixes of the child generators of the mimics and of the scanner variety.
MIMIC_SEED_KEY = 7
SCANNER_SEED_KEY = 8
#: Lesions at least this large (mL) push the surrounding tissue when mass effect is on.
MASS_EFFECT_MIN_ML = 10.0


def _subdural(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    """A subdural hematoma (:func:`~dicom_node.training.lesions.extra_axial._subdural`).

    :data:`SUBDURAL_FALX_PROBABILITY` and :data:`SUBDURAL_TENTORIUM_PROBABILITY`
    are read here, from this package, at each call: setting them on
    ``dicom_node.training.lesions`` changes where subdurals go.
    """
    return extra_axial._subdural(
        sampler,
        rng,
        target_ml,
        falx_probability=SUBDURAL_FALX_PROBABILITY,
        tentorium_probability=SUBDURAL_TENTORIUM_PROBABILITY,
    )


_SHAPES = {
    EPIDURAL: _epidural,
    SUBDURAL: _subdural,
    SUBARACHNOID: _subarachnoid,
    INTRAPARENCHYMAL: _intraparenchymal,
    INTRAVENTRICULAR: _intraventricular,
}


def random_subtypes(
    rng: np.random.Generator, *, negative_fraction: float = 0.3, multi_fraction: float = 0.2
) -> tuple[str, ...]:
    """Draw the hemorrhage subtypes of one case.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    negative_fraction : float
        Probability of a negative case (no lesion).
    multi_fraction : float
        Probability of 2-3 lesions of different subtypes.

    Returns
    -------
    tuple of str
        ``()`` for a negative case; one subtype drawn uniformly from
        :data:`~dicom_node.imaging.ich_input.ICH_SUBTYPES`; or 2-3 distinct ones.

    Raises
    ------
    ValueError
        If the fractions are negative or sum to more than 1.

    References
    ----------
    Flanders AE, et al. Radiol Artif Intell. 2020;2(3):e190211.
    """
    if negative_fraction < 0 or multi_fraction < 0 or negative_fraction + multi_fraction > 1:
        raise ValueError(
            f"fractions must be >= 0 and sum to <= 1, got {negative_fraction}, {multi_fraction}"
        )
    u = rng.random()
    if u < negative_fraction:
        return ()
    if u < negative_fraction + multi_fraction:
        count = int(rng.integers(2, 4))
        picks = rng.choice(len(ICH_SUBTYPES), size=count, replace=False)
        return tuple(ICH_SUBTYPES[int(i)] for i in picks)
    return (ICH_SUBTYPES[int(rng.integers(len(ICH_SUBTYPES)))],)


def _draw_volume(subtype: str, rng: np.random.Generator) -> float:
    low, high = VOLUME_RANGE_ML[subtype]
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _make_lesion(
    sampler: _Sampler,
    subtype: str,
    rng: np.random.Generator,
    volume_ml: float | None,
    hu: float | None,
) -> _Lesion:
    if subtype not in _SHAPES:
        subtype_label(subtype)  # raises ValueError naming the known subtypes
    if volume_ml is None:
        volume_ml = _draw_volume(subtype, rng)
    if volume_ml <= 0:
        raise ValueError(f"volume_ml must be positive, got {volume_ml}")
    if hu is None:
        hu = float(rng.uniform(*BLOOD_HU_RANGE[subtype]))
    origin, fraction, edema = _SHAPES[subtype](sampler, rng, float(volume_ml))
    edema_hu = float(rng.uniform(-10.0, -5.0))
    texture_hu = float(rng.uniform(0.0, CLOT_TEXTURE_MAX_HU))
    return _Lesion(subtype, float(hu), origin, fraction, edema, edema_hu, texture_hu)


def insert_lesion(
    volume: CTVolume,
    anatomy: HeadAnatomy,
    subtype: str,
    rng: np.random.Generator,
    *,
    volume_ml: float | None = None,
    hu: float | None = None,
) -> tuple[np.ndarray, np.ndarray, LesionSpec]:
    """Blend one hemorrhage of a given subtype into a head CT.

    Parameters
    ----------
    volume : CTVolume
        The head CT (HU (slices, rows, columns)); not modified.
    anatomy : HeadAnatomy
        Its anatomy (:func:`dicom_node.training.anatomy.derive_anatomy`, or as
        warped by :func:`dicom_node.training.augment.deform_case`).
    subtype : str
        One of :data:`dicom_node.imaging.ich_input.ICH_SUBTYPES`.
    rng : numpy.random.Generator
        Source of every random choice (placement, shape, HU, noise).
    volume_ml : float or None
        Volume to insert in mL (partial-volume sum); drawn log-uniformly from
        :data:`VOLUME_RANGE_ML` if None. An intraventricular lesion is capped
        at 85 % of its ventricle; a shape whose largest size cannot hold the
        volume is inserted at that size (the returned spec tells).
    hu : float or None
        Blood CT number in HU; drawn from :data:`BLOOD_HU_RANGE` if None.

    Returns
    -------
    new_hu : numpy.ndarray
        float32 (slices, rows, columns): HU with the lesion.
    fraction : numpy.ndarray
        float32 (slices, rows, columns) in [0, 1]: partial-volume fraction.
    spec : LesionSpec
        What was inserted.

    Raises
    ------
    ValueError
        If ``subtype`` is unknown, ``volume_ml`` is not positive, or the
        anatomy has no room for that subtype (for example no ventricles).

    References
    ----------
    Osborn AG. Osborn's Brain. 2nd ed. Elsevier; 2017; Parizel PM, et al. Eur
    Radiol. 2001;11(9):1770-1783.
    """
    sampler = _Sampler(volume, anatomy, THICKNESS_SAMPLES)
    lesion = _make_lesion(sampler, subtype, rng, volume_ml, hu)
    new_hu = volume.hu.astype(np.float32, copy=True)
    noise = _NoiseModel(volume.hu, anatomy.brain)
    _blend(new_hu, None, lesion, anatomy.brain, noise, rng, volume.pixel_spacing_mm)
    fraction = np.zeros(volume.shape, dtype=np.float32)
    fraction[lesion.index] = lesion.fraction
    return new_hu, fraction, _spec(sampler, lesion)


def make_case(
    base: CTVolume,
    anatomy: HeadAnatomy,
    *,
    seed: int,
    subtypes: Sequence[str] | None = None,
    deform: bool = True,
    mass_effect: bool | None = None,
    mimics: float | bool = 0.0,
    scanner: bool = False,
) -> SyntheticCase:
    """Make one synthetic training case: deform the head, insert 0-3 hemorrhages.

    Parameters
    ----------
    base : CTVolume
        The real head CT (any in-plane resolution); not modified.
    anatomy : HeadAnatomy
        Its anatomy (:func:`dicom_node.training.anatomy.derive_anatomy`, once per base).
    seed : int
        Seed of every random choice; the same seed gives identical arrays.
    subtypes : sequence of str or None
        Subtypes to insert, in order (later lesions overwrite earlier labels);
        None draws them with :func:`random_subtypes`; ``()`` makes a negative case.
    deform : bool
        Apply :func:`dicom_node.training.augment.deform_case` first (also to
        negative cases).
    mass_effect : bool or None
        Push tissue away from lesions of at least :data:`MASS_EFFECT_MIN_ML`:
        always (True), never (False) or with probability 0.5 per case (None).
    mimics : float or bool
        Probability (True: 1) that the case gets 1-4 hard mimics
        (:func:`dicom_node.training.mimics.draw_mimics`), negative and
        positive cases alike. Anatomical mimics are drawn before the blood
        (blood covers them), acquisition ones (beam hardening, motion)
        after it. Drawn from ``numpy.random.default_rng([seed,
        MIMIC_SEED_KEY])``, so the lesions and deformation of a seed do not
        change, and a case without mimics is byte-identical to one made
        without the option.
    scanner : bool
        Vary kernel, noise and field of view last
        (:func:`dicom_node.training.mimics.vary_scanner`), from
        ``numpy.random.default_rng([seed, SCANNER_SEED_KEY])``.

    Returns
    -------
    SyntheticCase
        HU, labels, lesion and mimic specs; geometry and UIDs of ``base``.
        Mimics never change the labels.

    Raises
    ------
    ValueError
        If a subtype is unknown, the anatomy has no room for it, or
        ``mimics`` is not a probability.

    References
    ----------
    Osborn AG. Osborn's Brain. 2nd ed. Elsevier; 2017; Flanders AE, et al.
    Radiol Artif Intell. 2020;2(3):e190211.
    """
    probability = float(mimics)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"mimics must be a probability in [0, 1], got {mimics!r}")
    rng = np.random.default_rng(seed)
    chosen = random_subtypes(rng) if subtypes is None else tuple(subtypes)
    for subtype in chosen:
        subtype_label(subtype)
    if deform:
        volume, anatomy = deform_case(base, anatomy, rng)
    else:
        volume = base
    sampler = _Sampler(volume, anatomy, THICKNESS_SAMPLES)
    lesions = [_make_lesion(sampler, subtype, rng, None, None) for subtype in chosen]
    specs = [_spec(sampler, lesion) for lesion in lesions]
    push = bool(rng.random() < 0.5) if mass_effect is None else bool(mass_effect)
    hu = volume.hu.astype(np.float32, copy=True)
    noise = _NoiseModel(volume.hu, anatomy.brain)
    if push:
        for lesion, spec in zip(lesions, specs, strict=True):
            if spec.inserted_volume_ml >= MASS_EFFECT_MIN_ML:
                _mass_effect(hu, sampler, lesion, spec, rng)
    # Mimics come from child generators: the draws above and the blending below are
    # exactly those of a case made without them.
    mimic_specs: list[MimicSpec] = []
    acquisition: list[str] = []
    mimic_rng = landmarks = None
    if probability > 0.0:
        mimic_rng = np.random.default_rng([seed, MIMIC_SEED_KEY])
        if mimic_rng.random() < probability:
            names = draw_mimics(mimic_rng)
            landmarks = find_landmarks(volume, anatomy)
            anatomical = [n for n in names if n not in ACQUISITION_MIMICS]
            acquisition = [n for n in names if n in ACQUISITION_MIMICS]
            mimic_specs += insert_mimics(
                hu, volume, anatomy, anatomical, mimic_rng, landmarks=landmarks
            )
    labels = np.zeros(volume.shape, dtype=np.uint8)
    for lesion in lesions:
        _blend(hu, labels, lesion, anatomy.brain, noise, rng, volume.pixel_spacing_mm)
    if acquisition and mimic_rng is not None:
        mimic_specs += insert_mimics(
            hu, volume, anatomy, acquisition, mimic_rng, landmarks=landmarks
        )
    if scanner:
        mimic_specs += vary_scanner(
            hu, volume, anatomy, np.random.default_rng([seed, SCANNER_SEED_KEY])
        )
    logger.debug(
        "synthetic case seed %d: %s%s",
        seed,
        ", ".join(f"{s.subtype} {s.inserted_volume_ml:.1f} mL" for s in specs) or "negative",
        "; mimics: " + ", ".join(f"{m.kind} ({m.site})" for m in mimic_specs)
        if mimic_specs
        else "",
    )
    return SyntheticCase(
        volume=dataclasses.replace(volume, hu=hu),
        labels=labels,
        lesions=tuple(specs),
        seed=seed,
        mimics=tuple(mimic_specs),
    )
