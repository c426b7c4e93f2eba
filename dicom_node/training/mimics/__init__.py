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
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from dicom_node.series.volume import CTVolume
from dicom_node.training.anatomy import HeadAnatomy
from dicom_node.training.landmarks import (
    HeadLandmarks,
    TentoriumModel,
    find_landmarks,
    nearest_slice,
    random_tentorium,
    slice_pixel,
)
from dicom_node.training.synthetic import _high_pass_sd

logger = logging.getLogger(__name__)

CALCIFICATION = "calcification"
DENSE_DURA = "dense dura"
BEAM_HARDENING = "beam hardening"
PARTIAL_VOLUME_BONE = "partial-volume bone"
MOTION = "motion"

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
#: Reading (HU) of the densest voxel of a calcification, per site.
CALCIFICATION_PEAK_HU: dict[str, tuple[float, float]] = {
    "pineal": (100.0, 400.0),
    "habenula": (80.0, 250.0),
    "choroid plexus": (80.0, 300.0),
    "globus pallidus": (60.0, 200.0),
    "falx plaque": (100.0, 600.0),
}
#: Diameter range (mm) of a calcification, per site (drawn log-uniformly).
CALCIFICATION_SIZE_MM: dict[str, tuple[float, float]] = {
    "pineal": (3.0, 10.0),
    "habenula": (2.0, 4.0),
    "choroid plexus": (3.0, 8.0),
    "globus pallidus": (1.5, 6.0),
    "falx plaque": (3.0, 15.0),
}
#: Densest true CT number (HU) a calcification may take to reach its reading.
MAX_CALCIFICATION_HU = 1500.0
#: SD (mm) of the Gaussian in-plane point-spread function of the scanner.
PSF_SIGMA_MM = 0.4
#: Reading (HU) of a dense falx.
DENSE_FALX_HU = (50.0, 90.0)
#: Thickness (mm) of a dense falx.
DENSE_FALX_THICKNESS_MM = (1.0, 3.0)
#: True CT number (HU) and thickness (mm) of a dense tentorium sheet.
DENSE_TENTORIUM_HU = (65.0, 100.0)
DENSE_TENTORIUM_THICKNESS_MM = (1.5, 4.0)
#: Amplitude (HU, negative) of the dark band between the petrous bones.
HOUNSFIELD_BAR_HU = (-60.0, -20.0)
#: Amplitude (HU, absolute) of the thin beam-hardening streaks.
STREAK_HU = (15.0, 40.0)
#: CT number (HU) the partial-volume rim of bone reaches at the inner table.
BONE_RIM_HU = (60.0, 120.0)
#: Motion: in-plane shift (mm), turn (degrees) and weight of the ghost.
MOTION_SHIFT_MM = (0.5, 3.0)
MOTION_TURN_DEG = 1.5
MOTION_WEIGHT = (0.1, 0.3)
#: Scanner variety: Gaussian sigma (pixels) of a smooth kernel.
SMOOTH_KERNEL_SIGMA_PX = (0.5, 1.0)
#: ... unsharp-mask sigma (pixels) and amount of a sharp kernel.
SHARP_KERNEL_SIGMA_PX = (1.0, 2.0)
SHARP_KERNEL_AMOUNT = (0.3, 1.0)
#: ... factor on the scan's noise (drawn log-uniformly).
NOISE_FACTOR = (0.7, 2.0)
#: ... probability of a partial field of view.
PARTIAL_FOV_PROBABILITY = 0.35
#: Below this HU a voxel is reconstruction padding, not air.
_PADDING_MAX_HU = -1100.0


@dataclass(frozen=True)
class MimicSpec:
    """What one mimic (or one scanner change) did to a case.

    Parameters
    ----------
    kind : str
        ``"calcification"``, ``"dense dura"``, ``"beam hardening"``,
        ``"partial-volume bone"``, ``"motion"``, or for
        :func:`vary_scanner` ``"kernel"``, ``"noise"``, ``"field of view"``.
    site : str
        Where or what: ``"pineal"``, ``"habenula"``, ``"choroid plexus
        left"``, ``"globus pallidus right"``, ``"falx plaque"``, ``"falx"``,
        ``"tentorium"``, ``"skull base"``, ``"inner table"``, ``"in-plane"``,
        or a description of the scanner change.
    centre_mm : tuple of float
        Centre (x, y, z) in LPS patient coordinates, mm: the drawn centre of
        an object, the |change|-weighted centroid of an artefact, the head's
        centre for a change of the whole image.
    peak_hu : float
        Highest CT number (HU) among the voxels the mimic raised by at least
        10 HU (bone above 300 HU excluded), as left in the image (noise
        included); 0.0 when it raised none.
    change_hu : float
        The largest change it made (HU), signed (new minus old).
    slices : tuple of int
        Slice indices it changed.

    References
    ----------
    Kiroglu Y, et al. Diagn Interv Radiol. 2010;16(4):263-269; Barrett JF,
    Keat N. RadioGraphics. 2004;24(6):1679-1691.
    """

    kind: str
    site: str
    centre_mm: tuple[float, float, float]
    peak_hu: float
    change_hu: float
    slices: tuple[int, ...]


class NoMimicSiteError(ValueError):
    """The anatomy of a case has no place for a mimic (for example no ventricles)."""


def _thickness_mm(volume: CTVolume) -> np.ndarray:
    spacing = volume.slice_spacing_mm
    return np.array(
        [t if t else s for t, s in zip(volume.slice_thicknesses_mm, spacing, strict=True)]
    )


def _tuple3(p: np.ndarray) -> tuple[float, float, float]:
    return (float(p[0]), float(p[1]), float(p[2]))


def _measure(
    kind: str,
    site: str,
    old: dict[int, tuple[tuple[slice, slice], np.ndarray]],
    hu: np.ndarray,
    volume: CTVolume,
    centre: np.ndarray | None = None,
) -> MimicSpec:
    """Spec of a mimic from the crops before (``old``) and the image after."""
    peak, change = 0.0, 0.0
    slices = []
    weight_sum, weighted = 0.0, np.zeros(3)
    for k, ((rows, cols), before) in sorted(old.items()):
        after = hu[k][rows, cols]
        delta = after - before
        if not np.any(np.abs(delta) > 1e-3):
            continue
        slices.append(int(k))
        raised = (delta >= 10.0) & (before < 300.0)
        if raised.any():
            peak = max(peak, float(after[raised].max()))
        i = int(np.argmax(np.abs(delta)))
        if abs(float(delta.flat[i])) > abs(change):
            change = float(delta.flat[i])
        if centre is None:
            w = np.abs(delta)
            rr, cc = np.nonzero(w > 0.25 * float(w.max()))
            pts = volume.pixel_to_patient(int(k), rr + rows.start, cc + cols.start)
            ww = w[rr, cc].astype(np.float64)
            weighted += (pts * ww[:, None]).sum(axis=0)
            weight_sum += float(ww.sum())
    if centre is None:
        centre = weighted / weight_sum if weight_sum > 0 else np.zeros(3)
    return MimicSpec(
        kind=kind,
        site=site,
        centre_mm=_tuple3(centre),
        peak_hu=round(peak, 3),
        change_hu=round(change, 3),
        slices=tuple(slices),
    )


# ----------------------------------------------------------------- calcifications
@dataclass(frozen=True)
class _Blob:
    centre: np.ndarray  # (3,) LPS mm
    axes: np.ndarray  # (3, 3) unit vectors, rows
    semi_mm: np.ndarray  # (3,)


def _blob_fraction(
    volume: CTVolume,
    k: int,
    box: tuple[int, int, int, int],
    blobs: Sequence[_Blob],
    thickness_mm: float,
) -> np.ndarray:
    """Fraction (h, w) of each pixel's voxel inside the blobs (sub-pixel, sub-slice sampling)."""
    r0, r1, c0, c1 = box
    row_mm, col_mm = volume.pixel_spacing_mm
    smallest = min(float(b.semi_mm.min()) for b in blobs)
    sub = int(np.clip(np.ceil(max(row_mm, col_mm) / max(smallest / 2.0, 0.2)), 2, 6))
    samples = int(np.clip(np.ceil(thickness_mm / max(smallest / 2.0, 0.25)), 5, 28))
    fr = r0 - 0.5 + (np.arange((r1 - r0) * sub) + 0.5) / sub
    fc = c0 - 0.5 + (np.arange((c1 - c0) * sub) + 0.5) / sub
    ft = ((np.arange(samples) + 0.5) / samples - 0.5) * thickness_mm
    origin = volume.image_positions_mm[k]
    cd, rd, n = volume.column_direction, volume.row_direction, volume.normal
    inside = np.zeros((samples, fr.size, fc.size), dtype=bool)
    for blob in blobs:
        q = np.zeros(inside.shape, dtype=np.float32)
        for axis, semi in zip(blob.axes, blob.semi_mm, strict=True):
            base = float((origin - blob.centre) @ axis)
            comp = (
                np.float32(base)
                + (ft * float(n @ axis)).astype(np.float32)[:, None, None]
                + (fr * row_mm * float(cd @ axis)).astype(np.float32)[None, :, None]
                + (fc * col_mm * float(rd @ axis)).astype(np.float32)[None, None, :]
            )
            q += (comp / np.float32(semi)) ** 2
        inside |= q <= 1.0
    fine = inside.mean(axis=0, dtype=np.float32)
    return fine.reshape(r1 - r0, sub, c1 - c0, sub).mean(axis=(1, 3))


def add_calcification(
    hu: np.ndarray,
    volume: CTVolume,
    blobs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    peak_hu: float,
    *,
    site: str,
    psf_sigma_mm: float = PSF_SIGMA_MM,
    max_density_hu: float = MAX_CALCIFICATION_HU,
) -> MimicSpec:
    """Add a calcification (a cluster of ellipsoids) to a head CT, in place, with partial volume.

    Each slice integrates the cluster over its own thickness along its
    normal and over sub-pixel positions; the fraction ``F`` is blurred by
    the in-plane point-spread function and added as
    ``hu += F * max(D - background, 0)``, the background being the image
    smoothed over 1.5 mm, so the noise of the scan stays. ``D`` is solved so
    the densest voxel reads ``peak_hu`` (noise aside) and capped at
    ``max_density_hu``: a calcification small for the slice reads lower.

    Parameters
    ----------
    hu : numpy.ndarray
        float32 (slices, rows, columns) HU, modified in place.
    volume : CTVolume
        Geometry of ``hu`` (its own HU are not read).
    blobs : sequence of (centre, axes, semi_axes)
        Each ellipsoid: centre (3,) LPS mm, axes (3, 3) orthonormal unit
        vectors as rows, semi-axes (3,) mm along them.
    peak_hu : float
        Reading (HU) of the densest voxel.
    site : str
        Recorded in the spec.
    psf_sigma_mm : float
        SD (mm) of the in-plane Gaussian point-spread function.
    max_density_hu : float
        Largest true CT number (HU) of the calcification.

    Returns
    -------
    MimicSpec
        Kind ``"calcification"``; ``centre_mm`` is the first blob's centre.

    Raises
    ------
    ValueError
        If no blob is given, a semi-axis is not positive, or the cluster
        misses every slice.

    References
    ----------
    Barrett JF, Keat N. RadioGraphics. 2004;24(6):1679-1691 (partial
    volume); Solomon J, Samei E. Phys Med Biol. 2014;59(21):6637-6657.
    """
    if not blobs:
        raise ValueError("a calcification needs at least one blob")
    items = [
        _Blob(np.asarray(c, float), np.asarray(a, float), np.asarray(s, float)) for c, a, s in blobs
    ]
    if any(float(b.semi_mm.min()) <= 0 for b in items):
        raise ValueError("semi-axes must be positive")
    row_mm, col_mm = volume.pixel_spacing_mm
    thickness = _thickness_mm(volume)
    along = volume.slice_positions_mm
    slices, rows, columns = hu.shape
    fractions: dict[int, tuple[tuple[int, int, int, int], np.ndarray]] = {}
    margin_mm = 3.0 * psf_sigma_mm + 2.0 * max(row_mm, col_mm)
    for k in range(slices):
        reach = [float(b.centre @ volume.normal - along[k]) for b in items]
        near = [
            abs(d) <= float(b.semi_mm.max()) + thickness[k] / 2.0
            for d, b in zip(reach, items, strict=True)
        ]
        if not any(near):
            continue
        r_all, c_all = [], []
        for b in items:
            r, c = slice_pixel(volume, k, b.centre)
            extent = float(b.semi_mm.max()) + margin_mm
            r_all += [r - extent / row_mm, r + extent / row_mm]
            c_all += [c - extent / col_mm, c + extent / col_mm]
        box = (
            max(int(np.floor(min(r_all))), 0),
            min(int(np.ceil(max(r_all))) + 1, rows),
            max(int(np.floor(min(c_all))), 0),
            min(int(np.ceil(max(c_all))) + 1, columns),
        )
        if box[1] - box[0] < 2 or box[3] - box[2] < 2:
            continue
        f = _blob_fraction(volume, k, box, items, float(thickness[k]))
        if psf_sigma_mm > 0:
            f = cv2.GaussianBlur(f, (0, 0), psf_sigma_mm / col_mm, sigmaY=psf_sigma_mm / row_mm)
        if f.max() > 1e-4:
            fractions[k] = (box, f)
    if not fractions:
        raise ValueError("the calcification misses every slice")
    backgrounds = {}
    best_f, best_bg = 0.0, 0.0
    for k, (box, f) in fractions.items():
        r0, r1, c0, c1 = box
        crop = hu[k, r0:r1, c0:c1].astype(np.float32)
        bg = cv2.GaussianBlur(crop, (0, 0), 1.5 / col_mm, sigmaY=1.5 / row_mm)
        backgrounds[k] = bg
        i = int(np.argmax(f))
        if f.flat[i] > best_f:
            best_f, best_bg = float(f.flat[i]), float(bg.flat[i])
    density = best_bg + (peak_hu - best_bg) / max(best_f, 1e-3)
    density = float(np.clip(density, peak_hu, max_density_hu))
    old = {}
    for k, (box, f) in fractions.items():
        r0, r1, c0, c1 = box
        index = (slice(r0, r1), slice(c0, c1))
        old[k] = (index, hu[k][index].copy())
        hu[k][index] += f * np.maximum(np.float32(density) - backgrounds[k], 0.0)
    return _measure(CALCIFICATION, site, old, hu, volume, items[0].centre)


def _random_axes(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return q.T


def _cluster(
    centre: np.ndarray,
    diameter_mm: float,
    rng: np.random.Generator,
    *,
    elongation: float = 1.0,
    axes: np.ndarray | None = None,
    max_blobs: int = 3,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """1-``max_blobs`` ellipsoids: a main one of the given diameter, smaller ones beside it."""
    radius = diameter_mm / 2.0
    main_axes = _random_axes(rng) if axes is None else axes
    semi = radius * np.array([elongation, rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0)])
    semi *= radius / float(np.prod(semi)) ** (1.0 / 3.0) if elongation == 1.0 else 1.0
    blobs = [(centre, main_axes, np.maximum(semi, 0.4))]
    for _ in range(int(rng.integers(0, max_blobs))):
        offset = rng.standard_normal(3)
        offset *= radius * rng.uniform(0.5, 1.0) / max(float(np.linalg.norm(offset)), 1e-9)
        r = radius * rng.uniform(0.35, 0.7)
        blobs.append(
            (centre + offset, _random_axes(rng), np.maximum(r * rng.uniform(0.7, 1.0, size=3), 0.4))
        )
    return blobs


def _diameter(site: str, rng: np.random.Generator) -> float:
    low, high = CALCIFICATION_SIZE_MM[site]
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _peak(site: str, rng: np.random.Generator) -> float:
    return float(rng.uniform(*CALCIFICATION_PEAK_HU[site]))


def _pineal_site(landmarks: HeadLandmarks) -> np.ndarray:
    if landmarks.pineal_mm is None:
        raise NoMimicSiteError("no pineal site (no lateral ventricles found)")
    return landmarks.pineal_mm


def _pineal(hu, volume, anatomy, landmarks, rng) -> list[MimicSpec]:
    site = _pineal_site(landmarks)
    centre = (
        site
        + rng.normal(0.0, 2.0) * landmarks.posterior
        + rng.normal(0.0, 2.0) * landmarks.up
        + rng.normal(0.0, 0.5) * landmarks.left
    )
    blobs = _cluster(centre, _diameter("pineal", rng), rng)
    return [add_calcification(hu, volume, blobs, _peak("pineal", rng), site="pineal")]


def _habenula(hu, volume, anatomy, landmarks, rng) -> list[MimicSpec]:
    site = _pineal_site(landmarks)
    centre = (
        site
        - rng.uniform(3.0, 7.0) * landmarks.posterior
        + rng.uniform(0.0, 3.0) * landmarks.up
        + rng.normal(0.0, 0.5) * landmarks.left
    )
    # A small curvilinear focus across the midline (the habenular commissure).
    axes = np.stack([landmarks.left, landmarks.posterior, landmarks.up])
    blobs = _cluster(
        centre, _diameter("habenula", rng), rng, elongation=1.6, axes=axes, max_blobs=2
    )
    return [add_calcification(hu, volume, blobs, _peak("habenula", rng), site="habenula")]


def _choroid(hu, volume, anatomy, landmarks, rng) -> list[MimicSpec]:
    if landmarks.atria_mm is None:
        raise NoMimicSiteError("no atria of the lateral ventricles found")
    diameter = _diameter("choroid plexus", rng)
    peak = _peak("choroid plexus", rng)
    specs = []
    for atrium, side in zip(landmarks.atria_mm, ("left", "right"), strict=True):
        centre = atrium + rng.normal(0.0, 1.5, size=3)
        size = float(
            np.clip(diameter * rng.uniform(0.75, 1.25), *CALCIFICATION_SIZE_MM["choroid plexus"])
        )
        blobs = _cluster(centre, size, rng, elongation=rng.uniform(1.0, 1.6))
        low, high = CALCIFICATION_PEAK_HU["choroid plexus"]
        side_peak = float(np.clip(peak * rng.uniform(0.8, 1.2), low, high))
        specs.append(add_calcification(hu, volume, blobs, side_peak, site=f"choroid plexus {side}"))
    return specs


def _globus_pallidus(hu, volume, anatomy, landmarks, rng) -> list[MimicSpec]:
    site = _pineal_site(landmarks)
    middle = (
        site - rng.uniform(25.0, 35.0) * landmarks.posterior - rng.uniform(0.0, 10.0) * landmarks.up
    )
    lateral = rng.uniform(15.0, 22.0)
    diameter = _diameter("globus pallidus", rng)
    peak = _peak("globus pallidus", rng)
    specs = []
    for sign, side in ((1.0, "left"), (-1.0, "right")):
        centre = (
            landmarks.to_midline(volume, middle)
            + sign * (lateral + rng.normal(0.0, 1.0)) * landmarks.left
        )
        k = nearest_slice(volume, centre)
        r, c = slice_pixel(volume, k, centre)
        ri, ci = int(round(float(r))), int(round(float(c)))
        if (
            not (0 <= ri < hu.shape[1] and 0 <= ci < hu.shape[2])
            or not anatomy.intracranial[k, ri, ci]
        ):
            raise NoMimicSiteError("the globus pallidus site lies outside the head")
        blobs = _cluster(centre, diameter * rng.uniform(0.8, 1.2), rng)
        specs.append(
            add_calcification(
                hu, volume, blobs, peak * rng.uniform(0.85, 1.15), site=f"globus pallidus {side}"
            )
        )
    return specs


def _falx_rows(
    volume: CTVolume, anatomy: HeadAnatomy, landmarks: HeadLandmarks, k: int, min_depth_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of slice k where the falx curve lies inside the head, and its columns there."""
    rows = np.arange(volume.shape[1])
    cols = landmarks.midline_columns(k, rows)
    ci = np.clip(np.round(cols).astype(int), 0, volume.shape[2] - 1)
    ok = anatomy.intracranial[k, rows, ci] & (anatomy.depth_mm[k, rows, ci] >= min_depth_mm)
    return rows[ok], cols[ok]


def _supratentorial_slices(
    volume: CTVolume, anatomy: HeadAnatomy, landmarks: HeadLandmarks
) -> np.ndarray:
    """Slices with a large intracranial section at or above the ventricles' centre."""
    area = anatomy.intracranial.sum(axis=(1, 2))
    level = (
        landmarks.ventricle_centre_mm
        if landmarks.ventricle_centre_mm is not None
        else landmarks.centre_mm
    ) @ landmarks.up
    centres = np.array(
        [
            volume.pixel_to_patient(k, volume.shape[1] / 2.0, volume.shape[2] / 2.0) @ landmarks.up
            for k in range(volume.shape[0])
        ]
    )
    return np.flatnonzero((area >= 0.3 * area.max()) & (centres >= level - 5.0))


def _falx_plaque(hu, volume, anatomy, landmarks, rng) -> list[MimicSpec]:
    candidates = _supratentorial_slices(volume, anatomy, landmarks)
    if candidates.size == 0:
        raise NoMimicSiteError("no supratentorial slice for a falx plaque")
    k = int(rng.choice(candidates))
    rows, cols = _falx_rows(volume, anatomy, landmarks, k, 10.0)
    far = ~anatomy.ventricles[k]
    if anatomy.ventricles[k].any():
        distance = cv2.distanceTransform(far.astype(np.uint8), cv2.DIST_L2, 5)
        ci = np.clip(np.round(cols).astype(int), 0, volume.shape[2] - 1)
        keep = distance[rows, ci] * min(volume.pixel_spacing_mm) >= 10.0
        rows, cols = rows[keep], cols[keep]
    if rows.size == 0:
        raise NoMimicSiteError("no falx segment for a plaque")
    i = int(rng.integers(rows.size))
    centre = volume.pixel_to_patient(k, float(rows[i]), float(cols[i]))
    centre = centre + rng.uniform(-0.3, 0.3) * _thickness_mm(volume)[k] * landmarks.up
    length = _diameter("falx plaque", rng)
    axes = np.stack([landmarks.posterior, landmarks.up, landmarks.left])
    semi = np.array(
        [length / 2.0, rng.uniform(0.25, 0.5) * length / 2.0 + 0.75, rng.uniform(0.5, 1.2)]
    )
    blobs = [(centre, axes, semi)]
    return [add_calcification(hu, volume, blobs, _peak("falx plaque", rng), site="falx plaque")]


# ----------------------------------------------------------------- dense dura
def _smooth_profile(n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random profile of length n with unit SD (zero mean)."""
    if n <= 1:
        return np.zeros(max(n, 0))
    white = rng.standard_normal(n + 6 * int(sigma) + 2)
    smooth = ndimage.gaussian_filter1d(white, max(sigma, 0.5))[3 * int(sigma) + 1 :][:n]
    return (smooth - smooth.mean()) / max(float(smooth.std()), 1e-9)


def _dense_falx(hu, volume, anatomy, landmarks, rng) -> list[MimicSpec]:
    candidates = _supratentorial_slices(volume, anatomy, landmarks)
    if candidates.size == 0:
        raise NoMimicSiteError("no supratentorial slice for a dense falx")
    run = int(rng.integers(2, 7))
    start = int(rng.choice(candidates))
    chosen = [k for k in range(start, start + run) if k in set(candidates.tolist())]
    row_mm, col_mm = volume.pixel_spacing_mm
    thickness = float(rng.uniform(*DENSE_FALX_THICKNESS_MM))
    reading = float(rng.uniform(*DENSE_FALX_HU))
    segment = rng.choice(["whole", "anterior", "posterior"], p=[0.4, 0.3, 0.3])
    fraction_kept = float(rng.uniform(0.35, 0.8))
    offset_mm = float(rng.uniform(-0.3, 0.3))
    old = {}
    for k in chosen:
        rows_k, _cols = _falx_rows(volume, anatomy, landmarks, k, 0.5)
        if rows_k.size < 10:
            continue
        r0, r1 = int(rows_k.min()), int(rows_k.max()) + 1
        mid = landmarks.midline_columns(k, np.arange(r0, r1))
        half = int(np.ceil((thickness + 6.0 * PSF_SIGMA_MM + 2.0) / col_mm)) + 2
        c0 = max(int(np.floor(mid.min())) - half, 0)
        c1 = min(int(np.ceil(mid.max())) + half + 1, volume.shape[2])
        rr = np.arange(r0, r1, dtype=np.float64)[:, None]
        cc = np.arange(c0, c1, dtype=np.float64)[None, :]
        lateral = landmarks.lateral_mm(volume, k, rr, cc) - offset_mm
        local_t = thickness * (1.0 + 0.15 * _smooth_profile(r1 - r0, 10.0 / row_mm, rng))
        local_t = np.clip(local_t, 0.8, DENSE_FALX_THICKNESS_MM[1])[:, None]
        f = np.clip((local_t / 2.0 - np.abs(lateral)) / col_mm + 0.5, 0.0, 1.0)
        # Along the falx: the whole length or its anterior or posterior part, tapered.
        t = (np.arange(r0, r1) - r0) / max(r1 - r0 - 1, 1)
        if segment == "anterior":
            envelope = np.clip((fraction_kept - t) * (r1 - r0) * row_mm / 8.0, 0.0, 1.0)
        elif segment == "posterior":
            envelope = np.clip((t - (1.0 - fraction_kept)) * (r1 - r0) * row_mm / 8.0, 0.0, 1.0)
        else:
            envelope = np.ones_like(t)
        f *= envelope[:, None].astype(np.float32)
        inside = anatomy.intracranial[k, r0:r1, c0:c1]
        depth = anatomy.depth_mm[k, r0:r1, c0:c1]
        f *= np.clip(depth / 2.0, 0.0, 1.0) * inside
        if anatomy.ventricles[k].any():
            far = (~anatomy.ventricles[k]).astype(np.uint8)
            distance = cv2.distanceTransform(far, cv2.DIST_L2, 5)[r0:r1, c0:c1] * col_mm
            f *= np.clip((distance - 8.0) / 4.0, 0.0, 1.0)
        f = cv2.GaussianBlur(
            f.astype(np.float32), (0, 0), PSF_SIGMA_MM / col_mm, sigmaY=PSF_SIGMA_MM / row_mm
        )
        if f.max() < 0.05:
            continue
        index = (slice(r0, r1), slice(c0, c1))
        crop = hu[k][index].astype(np.float32)
        bg = cv2.GaussianBlur(crop, (0, 0), 1.5 / col_mm, sigmaY=1.5 / row_mm)
        fmax = float(f.max())
        # The band reads ``reading`` where it is complete (noise aside).
        density = np.float32(
            np.median(bg[f >= 0.5 * fmax]) + (reading - np.median(bg[f >= 0.5 * fmax])) / fmax
        )
        density = np.float32(min(float(density), 150.0))
        old[k] = (index, hu[k][index].copy())
        hu[k][index] += f * np.maximum(density - bg, 0.0)
    if not old:
        raise NoMimicSiteError("no falx long enough for a dense falx")
    return [_measure(DENSE_DURA, "falx", old, hu, volume)]


def _dense_tentorium(hu, volume, anatomy, landmarks, rng) -> list[MimicSpec]:
    if landmarks.pineal_mm is None:
        raise NoMimicSiteError("no pineal site to hang the tentorium on")
    model = random_tentorium(landmarks, rng)
    density = float(rng.uniform(*DENSE_TENTORIUM_HU))
    sheet = float(rng.uniform(*DENSE_TENTORIUM_THICKNESS_MM))
    old = _draw_tentorium(hu, volume, anatomy, model, density, sheet, rng)
    if not old:
        raise NoMimicSiteError("the tentorium misses the intracranial space")
    return [_measure(DENSE_DURA, "tentorium", old, hu, volume)]


class _PlaneDot:
    """``P . e`` (mm) for the points P of rows x columns of slice k, moved t mm along its normal."""

    def __init__(
        self, volume: CTVolume, k: int, rows: np.ndarray, cols: np.ndarray, t: float
    ) -> None:
        self.volume, self.origin, self.rows, self.cols, self.t = (
            volume,
            volume.image_positions_mm[k],
            rows,
            cols,
            t,
        )

    def __call__(self, e: np.ndarray) -> np.ndarray:
        v = self.volume
        row_mm, col_mm = v.pixel_spacing_mm
        return (
            np.float32(self.origin @ e + self.t * (v.normal @ e))
            + self.rows * np.float32(row_mm * (v.column_direction @ e))
            + self.cols * np.float32(col_mm * (v.row_direction @ e))
        )


def _draw_tentorium(
    hu: np.ndarray,
    volume: CTVolume,
    anatomy: HeadAnatomy,
    model: TentoriumModel,
    density: float,
    sheet_mm: float,
    rng: np.random.Generator,
) -> dict[int, tuple[tuple[slice, slice], np.ndarray]]:
    row_mm, col_mm = volume.pixel_spacing_mm
    thickness = _thickness_mm(volume)
    fade_mm = float(rng.uniform(60.0, 120.0))
    apex_up = float(np.asarray(model.apex_mm) @ np.asarray(model.up))
    old: dict[int, tuple[tuple[slice, slice], np.ndarray]] = {}
    # Smooth variation of the density over the sheet (a field on the image grid).
    field = cv2.GaussianBlur(
        rng.standard_normal(volume.shape[1:]).astype(np.float32), (0, 0), 15.0 / col_mm
    )
    field = np.clip(0.75 + 0.25 * field / max(float(field.std()), 1e-6), 0.3, 1.0)
    for k in range(volume.shape[0]):
        if not anatomy.intracranial[k].any():
            continue
        centre_up = float(
            volume.pixel_to_patient(k, volume.shape[1] / 2.0, volume.shape[2] / 2.0)
            @ np.asarray(model.up)
        )
        if centre_up > apex_up + sheet_mm + thickness[k]:
            continue
        rows = np.flatnonzero(anatomy.intracranial[k].any(axis=1))
        cols = np.flatnonzero(anatomy.intracranial[k].any(axis=0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        rr = np.arange(r0, r1, dtype=np.float32)[:, None]
        cc = np.arange(c0, c1, dtype=np.float32)[None, :]
        dot = _PlaneDot(volume, k, rr, cc, 0.0)
        x, y, z = model.head_coordinates(dot)
        h0 = model.height_mm(x, y, z)
        slack = sheet_mm / 2.0 + thickness[k] / 2.0 + 1.0
        near = (np.abs(h0) <= slack) & model.on_sheet(x, y)
        if not near.any():
            continue
        nr = np.flatnonzero(near.any(axis=1))
        nc = np.flatnonzero(near.any(axis=0))
        pad = int(np.ceil(3.0 * PSF_SIGMA_MM / col_mm)) + 2
        br0, br1 = max(int(nr[0]) - pad, 0), min(int(nr[-1]) + 1 + pad, r1 - r0)
        bc0, bc1 = max(int(nc[0]) - pad, 0), min(int(nc[-1]) + 1 + pad, c1 - c0)
        samples = int(np.clip(np.ceil(thickness[k] / 0.5), 5, 16))
        f: np.ndarray = np.zeros((br1 - br0, bc1 - bc0), dtype=np.float32)
        for j in range(samples):
            t = ((j + 0.5) / samples - 0.5) * thickness[k]
            xs, ys, zs = model.head_coordinates(
                _PlaneDot(volume, k, rr[br0:br1], cc[:, bc0:bc1], t)
            )
            h = model.height_mm(xs, ys, zs)
            fade = np.exp(-((model.distance_from_apex_mm(xs, ys) / np.float32(fade_mm)) ** 2))
            f += ((np.abs(h) <= sheet_mm / 2.0) & model.on_sheet(xs, ys)) * fade
        f /= samples
        gr0, gc0 = r0 + br0, c0 + bc0
        index = (slice(gr0, gr0 + f.shape[0]), slice(gc0, gc0 + f.shape[1]))
        inside = anatomy.intracranial[k][index] & ~anatomy.ventricles[k][index]
        f *= inside * np.clip(anatomy.depth_mm[k][index] / 1.5, 0.0, 1.0)
        f = cv2.GaussianBlur(f, (0, 0), PSF_SIGMA_MM / col_mm, sigmaY=PSF_SIGMA_MM / row_mm)
        if f.max() < 0.02:
            continue
        crop = hu[k][index].astype(np.float32)
        bg = cv2.GaussianBlur(crop, (0, 0), 1.5 / col_mm, sigmaY=1.5 / row_mm)
        old[k] = (index, hu[k][index].copy())
        local = np.float32(density) * field[index]
        hu[k][index] += f * np.maximum(local - bg, 0.0)
    return old


# ----------------------------------------------------------------- artefacts
def _skull_base_slices(hu, volume, anatomy, landmarks) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Skull-base slices with dense bone on both sides: (k, left points, right points) (r, c)."""
    row_mm, col_mm = volume.pixel_spacing_mm
    area = anatomy.intracranial.sum(axis=(1, 2))
    reach = cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(12.0 / col_mm) + 1, 2 * int(12.0 / row_mm) + 1)
    )
    # The posterior fossa: 20 mm or more below the pineal gland (the head's centre without one).
    level = (
        landmarks.pineal_mm - 20.0 * landmarks.up
        if landmarks.pineal_mm is not None
        else landmarks.centre_mm - 10.0 * landmarks.up
    )
    out = []
    for k in range(volume.shape[0]):
        if area[k] < 0.15 * area.max():
            continue
        centre = volume.pixel_to_patient(k, volume.shape[1] / 2.0, volume.shape[2] / 2.0)
        if float((centre - level) @ landmarks.up) > 0.0:
            continue
        near = cv2.dilate(anatomy.intracranial[k].astype(np.uint8), reach) > 0
        bone = (hu[k] > 800.0) & near & ~anatomy.intracranial[k]
        r, c = np.nonzero(bone)
        if r.size < 40:
            continue
        lateral = landmarks.lateral_mm(volume, k, r, c)
        back = (volume.pixel_to_patient(k, r, c) - landmarks.centre_mm) @ landmarks.posterior
        keep = (
            (np.abs(lateral) >= 10.0) & (np.abs(lateral) <= 50.0) & (back >= -30.0) & (back <= 15.0)
        )
        left = keep & (lateral > 0)
        right = keep & (lateral < 0)
        if left.sum() * row_mm * col_mm < 20.0 or right.sum() * row_mm * col_mm < 20.0:
            continue
        out.append((k, np.stack([r[left], c[left]], 1), np.stack([r[right], c[right]], 1)))
    return out


def _band(p0, p1, sigma_px, beyond_px, box) -> np.ndarray:
    """Gaussian band along the segment p0-p1 (row, col), fading beyond its ends."""
    r0, r1, c0, c1 = box
    rr = np.arange(r0, r1, dtype=np.float32)[:, None]
    cc = np.arange(c0, c1, dtype=np.float32)[None, :]
    d = np.asarray(p1, np.float32) - np.asarray(p0, np.float32)
    length = max(float(np.hypot(*d)), 1e-3)
    u = d / length
    s = (rr - p0[0]) * u[0] + (cc - p0[1]) * u[1]
    perp = (rr - p0[0]) * u[1] - (cc - p0[1]) * u[0]
    outside = np.maximum(np.maximum(-s, s - length), 0.0)
    return (
        np.exp(-0.5 * (perp / sigma_px) ** 2) * np.exp(-0.5 * (outside / max(beyond_px, 1e-3)) ** 2)
    ).astype(np.float32)


def _beam_hardening(hu, volume, anatomy, landmarks, rng) -> list[MimicSpec]:
    candidates = _skull_base_slices(hu, volume, anatomy, landmarks)
    if not candidates:
        raise NoMimicSiteError("no skull-base slice with dense bone on both sides")
    weights = np.array([min(len(a), len(b)) for _, a, b in candidates], dtype=np.float64)
    pick = int(rng.choice(len(candidates), p=weights / weights.sum()))
    row_mm, col_mm = volume.pixel_spacing_mm
    pixel = float(np.sqrt(row_mm * col_mm))
    bar = float(rng.uniform(*HOUNSFIELD_BAR_HU))
    sigma = float(rng.uniform(2.0, 5.0)) / pixel
    streaks = []
    for _ in range(int(rng.integers(2, 7))):
        streaks.append(
            (
                float(rng.uniform(*STREAK_HU)) * (1 if rng.random() < 0.5 else -1),
                float(rng.uniform(0.4, 1.2)) / pixel,
                float(rng.uniform(20.0, 50.0)) / pixel,
                float(np.deg2rad(rng.uniform(-35.0, 35.0))),
                rng.random() < 0.5,
                float(rng.random()),
            )
        )
    neighbour = int(rng.choice([-1, 1])) if rng.random() < 0.5 else 0
    neighbour_weight = float(rng.uniform(0.3, 0.7))
    jitter = rng.normal(0.0, 2.0 / pixel, size=4)
    k, left, right = candidates[pick]
    targets = [(k, 1.0)]
    ks = [c[0] for c in candidates]
    if neighbour and (k + neighbour) in ks:
        targets.append((k + neighbour, neighbour_weight))
    rows, columns = hu.shape[1:]
    box = (0, rows, 0, columns)
    old = {}
    for kk, weight in targets:
        _, left_k, right_k = candidates[ks.index(kk)]
        tips = []
        for pts in (left_k, right_k):
            # The medial tip of the densest bone of each side (the petrous apex).
            dense = hu[kk][pts[:, 0], pts[:, 1]]
            strong = pts[dense >= np.percentile(dense, 80.0)]
            lateral = np.abs(landmarks.lateral_mm(volume, kk, strong[:, 0], strong[:, 1]))
            tips.append(strong[int(np.argmin(lateral))].astype(np.float64))
        p0 = tips[0] + jitter[:2]
        p1 = tips[1] + jitter[2:]
        delta = bar * _band(p0, p1, sigma, 5.0 / pixel, box)
        direction = (p1 - p0) / max(float(np.linalg.norm(p1 - p0)), 1e-6)
        for amplitude, width, decay, turn, from_left, where in streaks:
            start = left_k if from_left else right_k
            origin = start[int(where * (len(start) - 1))].astype(np.float64)
            sign = 1.0 if from_left else -1.0
            cos, sin = np.cos(turn), np.sin(turn)
            d = sign * np.array(
                [cos * direction[0] - sin * direction[1], sin * direction[0] + cos * direction[1]]
            )
            rr = np.arange(rows, dtype=np.float32)[:, None]
            cc = np.arange(columns, dtype=np.float32)[None, :]
            s = (rr - origin[0]) * d[0] + (cc - origin[1]) * d[1]
            perp = (rr - origin[0]) * d[1] - (cc - origin[1]) * d[0]
            line = np.exp(-0.5 * (perp / width) ** 2) * np.where(s >= 0, np.exp(-s / decay), 0.0)
            delta += np.float32(amplitude) * line.astype(np.float32)
        delta *= np.float32(weight)
        delta[hu[kk] < -500.0] = 0.0
        changed = np.abs(delta) > 0.05
        if not changed.any():
            continue
        rs = np.flatnonzero(changed.any(axis=1))
        cs = np.flatnonzero(changed.any(axis=0))
        index = (slice(int(rs[0]), int(rs[-1]) + 1), slice(int(cs[0]), int(cs[-1]) + 1))
        old[kk] = (index, hu[kk][index].copy())
        hu[kk][index] += delta[index]
    return [_measure(BEAM_HARDENING, "skull base", old, hu, volume)]


def _bone_partial_volume(hu, volume, anatomy, landmarks, rng) -> list[MimicSpec]:
    area = anatomy.intracranial.sum(axis=(1, 2))
    candidates = np.flatnonzero((area >= 0.1 * area.max()) & (area <= 0.75 * area.max()))
    if candidates.size == 0:
        raise NoMimicSiteError("no slice cutting the skull obliquely")
    count = int(rng.integers(1, 4))
    chosen = rng.choice(candidates, size=min(count, candidates.size), replace=False)
    row_mm, col_mm = volume.pixel_spacing_mm
    pixel = float(np.sqrt(row_mm * col_mm))
    reach = cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(5.0 / col_mm) + 1, 2 * int(5.0 / row_mm) + 1)
    )
    old = {}
    for k in sorted(int(v) for v in chosen):
        width = float(rng.uniform(1.0, 3.0)) * pixel
        target = float(rng.uniform(*BONE_RIM_HU))
        field = cv2.GaussianBlur(
            rng.standard_normal(hu.shape[1:]).astype(np.float32), (0, 0), 8.0 / pixel
        )
        field /= max(float(field.std()), 1e-6)
        keep = float(rng.uniform(0.3, 1.0))
        threshold = float(np.quantile(field, 1.0 - keep))
        modulation = np.clip((field - threshold) / 0.5, 0.0, 1.0)
        grown = cv2.dilate(anatomy.intracranial[k].astype(np.uint8), reach) > 0
        # The bone edge as the scan shows it: bone and its partial volume denser than the rim.
        bone = (hu[k] > max(target + 30.0, 150.0)) & grown & ~anatomy.intracranial[k]
        bone |= (hu[k] > 300.0) & ~anatomy.intracranial[k]
        if not bone.any():
            continue
        # The rim grows inwards from that edge by ``width``, with a soft inner border.
        to_bone = cv2.distanceTransform((~bone).astype(np.uint8), cv2.DIST_L2, 5) * pixel
        rim = grown & ~bone & (to_bone <= width + 1.5 * pixel) & (hu[k] > -100.0)
        if not rim.any():
            continue
        rs = np.flatnonzero(rim.any(axis=1))
        cs = np.flatnonzero(rim.any(axis=0))
        index = (slice(int(rs[0]), int(rs[-1]) + 1), slice(int(cs[0]), int(cs[-1]) + 1))
        profile = np.clip((width + 0.5 * pixel - to_bone[index]) / pixel + 0.5, 0.0, 1.0)
        profile = profile * rim[index] * modulation[index]
        # Background without the bone itself (the rim raises soft tissue towards the target).
        crop = np.where(bone[index], np.float32(30.0), hu[k][index]).astype(np.float32)
        bg = np.minimum(cv2.GaussianBlur(crop, (0, 0), 1.0 / pixel), hu[k][index])
        old[k] = (index, hu[k][index].copy())
        raised = hu[k][index] + profile * np.maximum(np.float32(target) - bg, 0.0)
        # Soft tissue is raised towards the target, never beyond it (nor lowered).
        ceiling = np.maximum(hu[k][index], np.float32(target + 10.0))
        hu[k][index] = np.minimum(raised, ceiling).astype(np.float32)
    if not old:
        raise NoMimicSiteError("no bone next to the inner table")
    return [_measure(PARTIAL_VOLUME_BONE, "inner table", old, hu, volume)]


def _motion(hu, volume, anatomy, landmarks, rng) -> list[MimicSpec]:
    area = anatomy.intracranial.sum(axis=(1, 2))
    candidates = np.flatnonzero(area >= 0.2 * area.max())
    if candidates.size == 0:
        raise NoMimicSiteError("no slice with a head for motion")
    start = int(rng.choice(candidates))
    run = int(rng.integers(1, 4))
    shift_mm = float(rng.uniform(*MOTION_SHIFT_MM))
    angle = float(rng.uniform(0.0, 2.0 * np.pi))
    turn = float(rng.uniform(-MOTION_TURN_DEG, MOTION_TURN_DEG))
    weight = float(rng.uniform(*MOTION_WEIGHT))
    row_mm, col_mm = volume.pixel_spacing_mm
    old = {}
    rows, columns = hu.shape[1:]
    for k in range(start, min(start + run, hu.shape[0])):
        if not anatomy.intracranial[k].any():
            continue
        r, c = np.nonzero(anatomy.intracranial[k])
        centre = (float(c.mean()), float(r.mean()))
        matrix = cv2.getRotationMatrix2D(centre, turn, 1.0)
        matrix[0, 2] += shift_mm * np.cos(angle) / col_mm
        matrix[1, 2] += shift_mm * np.sin(angle) / row_mm
        source = hu[k].astype(np.float32, copy=True)
        padding = source < _PADDING_MAX_HU
        source[padding] = -1000.0
        ghost = cv2.warpAffine(
            source, matrix, (columns, rows), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        blended = (1.0 - weight) * source + weight * ghost
        blended[padding] = hu[k][padding]
        index = (slice(0, rows), slice(0, columns))
        old[k] = (index, hu[k].copy())
        hu[k] = blended
    return [_measure(MOTION, "in-plane", old, hu, volume)]


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


# ----------------------------------------------------------------- scanner variety
def _scan_noise_sd(hu: np.ndarray, anatomy: HeadAnatomy) -> tuple[float, int]:
    area = anatomy.brain.sum(axis=(1, 2))
    k = int(np.argmax(area))
    return _high_pass_sd(hu[k].astype(np.float64), anatomy.brain[k]), k


def vary_scanner(
    hu: np.ndarray,
    volume: CTVolume,
    anatomy: HeadAnatomy,
    rng: np.random.Generator,
) -> tuple[MimicSpec, ...]:
    """Change kernel, noise and field of view of a head CT as another scanner would, in place.

    1. **Kernel**: unchanged, smooth (in-plane Gaussian,
       :data:`SMOOTH_KERNEL_SIGMA_PX`) or sharp (unsharp mask
       :data:`SHARP_KERNEL_SIGMA_PX`, :data:`SHARP_KERNEL_AMOUNT`), a third
       each.
    2. **Noise**: a factor drawn log-uniformly from :data:`NOISE_FACTOR` on
       the scan's own high-pass noise SD (in brain): above 1, correlated
       noise is added; below 1, the image is mixed with a 1-pixel Gaussian
       blur of itself until the noise falls by that factor.
    3. **Field of view** (:data:`PARTIAL_FOV_PROBABILITY`): everything beyond
       a straight cut at one side, or outside a circle, is set to padding
       (the scan's padding value, else -1024 HU); the cut keeps 3 mm clear of
       every bone voxel (above 300 HU) of the head, so the skull stays whole.

    Reconstruction padding keeps its value throughout. Slice thickness is not
    changed.

    Parameters
    ----------
    hu : numpy.ndarray
        float32 (slices, rows, columns) HU, modified in place.
    volume : CTVolume
        Geometry of ``hu``.
    anatomy : HeadAnatomy
        Anatomy of the case (brain for the noise measure, the head's centre).
    rng : numpy.random.Generator
        Source of every draw.

    Returns
    -------
    tuple of MimicSpec
        One per change made (kinds ``"kernel"``, ``"noise"``,
        ``"field of view"``).

    Raises
    ------
    ValueError
        If ``hu`` is not float32 of the volume's shape.

    References
    ----------
    Barrett JF, Keat N. RadioGraphics. 2004;24(6):1679-1691 (noise, kernels
    and the scan field of view).
    """
    if hu.dtype != np.float32 or hu.shape != volume.shape:
        raise ValueError(f"hu must be float32 of shape {volume.shape}, got {hu.dtype} {hu.shape}")
    slices, rows, columns = hu.shape
    padding = hu < _PADDING_MAX_HU
    has_padding = bool(padding.any())
    pad_value = float(hu.min()) if has_padding else -1024.0
    k_all, r_all, c_all = np.nonzero(anatomy.intracranial[:, ::4, ::4])
    if k_all.size:
        head = volume.pixel_to_patient(
            int(np.median(k_all)), 4.0 * r_all.mean(), 4.0 * c_all.mean()
        )
    else:
        head = volume.pixel_to_patient(slices // 2, rows / 2.0, columns / 2.0)
    before = hu.copy()
    specs: list[MimicSpec] = []

    def record(kind: str, site: str) -> None:
        delta = hu - before
        inside = anatomy.intracranial
        values = delta[inside] if inside.any() else delta.ravel()
        i = int(np.argmax(np.abs(values))) if values.size else 0
        change = float(values[i]) if values.size else 0.0
        changed = np.flatnonzero(np.abs(delta).reshape(slices, -1).max(axis=1) > 1e-3)
        specs.append(
            MimicSpec(
                kind=kind,
                site=site,
                centre_mm=_tuple3(head),
                peak_hu=0.0,
                change_hu=round(change, 3),
                slices=tuple(int(k) for k in changed),
            )
        )
        before[...] = hu

    source = np.where(padding, np.float32(-1000.0), hu)
    u = rng.random()
    if u < 1.0 / 3.0:
        pass
    elif u < 2.0 / 3.0:
        sigma = float(rng.uniform(*SMOOTH_KERNEL_SIGMA_PX))
        for k in range(slices):
            hu[k] = cv2.GaussianBlur(source[k], (0, 0), sigma)
        hu[padding] = before[padding]
        record("kernel", f"smooth: Gaussian sigma {sigma:.2f} px")
    else:
        sigma = float(rng.uniform(*SHARP_KERNEL_SIGMA_PX))
        amount = float(rng.uniform(*SHARP_KERNEL_AMOUNT))
        for k in range(slices):
            blur = cv2.GaussianBlur(source[k], (0, 0), sigma)
            hu[k] = source[k] + np.float32(amount) * (source[k] - blur)
        hu[padding] = before[padding]
        record("kernel", f"sharp: unsharp mask sigma {sigma:.2f} px, amount {amount:.2f}")

    factor = float(np.exp(rng.uniform(np.log(NOISE_FACTOR[0]), np.log(NOISE_FACTOR[1]))))
    sd, k_ref = _scan_noise_sd(hu, anatomy)
    if sd > 0 and factor > 1.0:
        extra = sd * np.sqrt(factor * factor - 1.0)
        white = rng.standard_normal(hu.shape, dtype=np.float32)
        for k in range(slices):
            white[k] = cv2.GaussianBlur(white[k], (0, 0), 0.7)
        unit = _high_pass_sd(white[k_ref].astype(np.float64))
        noise = white * np.float32(extra / max(unit, 1e-6))
        noise[padding] = 0.0
        hu += noise
        record("noise", f"x{factor:.2f}")
    elif sd > 0 and factor < 1.0:
        source = np.where(padding, np.float32(-1000.0), hu)
        blurred = np.stack([cv2.GaussianBlur(source[k], (0, 0), 1.0) for k in range(slices)])
        goal = factor * sd
        best_w, best_err = 0.0, np.inf
        for w in np.linspace(0.0, 1.0, 21):
            mix = (1.0 - w) * source[k_ref] + w * blurred[k_ref]
            err = abs(_high_pass_sd(mix.astype(np.float64), anatomy.brain[k_ref]) - goal)
            if err < best_err:
                best_w, best_err = float(w), err
        hu[...] = (1.0 - best_w) * source + best_w * blurred
        hu[padding] = before[padding]
        record("noise", f"x{factor:.2f} (mixed {best_w:.2f} with a 1 px blur)")

    if rng.random() < PARTIAL_FOV_PROBABILITY:
        row_mm, col_mm = volume.pixel_spacing_mm
        bone = (hu > 300.0).any(axis=0)
        body = (hu > -300.0).any(axis=0)
        if bone.any():
            margin_r, margin_c = 3.0 / row_mm, 3.0 / col_mm
            br, bc = np.nonzero(bone)
            fov = np.ones((rows, columns), dtype=bool)
            if rng.random() < 0.5:
                side = str(rng.choice(["left", "right", "anterior", "posterior"]))
                # Image columns grow to the row direction; rows to the column direction.
                if side in ("left", "right"):
                    grow_left = float(volume.row_direction[0]) >= 0
                    low_end = (side == "right") == grow_left
                    if low_end:
                        limit = int(bc.min() - margin_c)
                        cut = int(rng.uniform(0.3, 1.0) * max(limit, 0))
                        fov[:, :cut] = False
                    else:
                        limit = int(bc.max() + margin_c)
                        cut = columns - int(rng.uniform(0.3, 1.0) * max(columns - 1 - limit, 0))
                        fov[:, cut:] = False
                else:
                    low_end = (side == "anterior") == (float(volume.column_direction[1]) >= 0)
                    if low_end:
                        limit = int(br.min() - margin_r)
                        cut = int(rng.uniform(0.3, 1.0) * max(limit, 0))
                        fov[:cut, :] = False
                    else:
                        limit = int(br.max() + margin_r)
                        cut = rows - int(rng.uniform(0.3, 1.0) * max(rows - 1 - limit, 0))
                        fov[cut:, :] = False
                site = f"cut at the {side}"
            else:
                centre_r, centre_c = (rows - 1) / 2.0, (columns - 1) / 2.0
                radius_needed = (
                    float(np.max(np.hypot((br - centre_r) * row_mm, (bc - centre_c) * col_mm)))
                    + 3.0
                )
                radius = radius_needed + float(rng.uniform(0.0, 20.0))
                rr, cc = np.mgrid[0:rows, 0:columns]
                fov = np.hypot((rr - centre_r) * row_mm, (cc - centre_c) * col_mm) <= radius
                site = f"circle of radius {radius:.0f} mm"
            outside = ~fov & body
            if (~fov).any():
                hu[:, ~fov] = np.float32(pad_value)
                record("field of view", site + (" through soft tissue" if outside.any() else ""))
    return tuple(specs)


# ----------------------------------------------------------------- implausible inputs
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
