"""Physiologic calcifications: pineal, habenula, choroid plexus, globus pallidus, falx plaque.

:func:`add_calcification` rasterises a cluster of small ellipsoids in
patient coordinates with sub-pixel in-plane and sub-slice sampling over each
slice's own thickness (gantry tilt respected), blurs it by the in-plane
point-spread function and adds it as ``hu += F * max(D - background, 0)``,
``D`` solved so the densest voxel reads the drawn peak
(:data:`CALCIFICATION_PEAK_HU`, at most :data:`MAX_CALCIFICATION_HU`). The
inserters of the sites place such clusters from the landmarks of
:func:`dicom_node.training.landmarks.find_landmarks`.

References
----------
Osborn AG. Osborn's Brain: Imaging, Pathology, and Anatomy. 2nd ed.
Elsevier; 2017. Kiroglu Y, Calli C, Karabulut N, Oncel C. Intracranial
calcifications on CT. Diagn Interv Radiol. 2010;16(4):263-269 (sites and
appearance). Whitehead MT, Oh C, Raju A, Choudhri AF. AJNR Am J
Neuroradiol. 2015;36(3):575-580. Barrett JF, Keat N. RadioGraphics.
2004;24(6):1679-1691 (partial volume). Solomon J, Samei E. Phys Med Biol.
2014;59(21):6637-6657 (insertion with partial volume and the system's blur).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from dicom_node.series.volume import CTVolume
from dicom_node.training.landmarks import HeadLandmarks, nearest_slice, slice_pixel
from dicom_node.training.mimics.common import (
    CALCIFICATION,
    PSF_SIGMA_MM,
    MimicSpec,
    NoMimicSiteError,
    _falx_rows,
    _measure,
    _supratentorial_slices,
    _thickness_mm,
)

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
