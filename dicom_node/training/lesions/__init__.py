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

import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pydicom
from scipy import ndimage

from dicom_node.imaging.ich_input import ICH_SUBTYPES, subtype_label
from dicom_node.series.volume import CTVolume
from dicom_node.training.anatomy import HeadAnatomy
from dicom_node.training.augment import deform_case
from dicom_node.training.landmarks import find_landmarks, random_tentorium
from dicom_node.training.mimics import (
    ACQUISITION_MIMICS,
    MimicSpec,
    draw_mimics,
    insert_mimics,
    vary_scanner,
)
from dicom_node.training.synthetic import _high_pass_sd, _unit_noise, _write_hu, with_new_uids

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
#: Largest arc (degrees) of an epidural hematoma (about one bone between sutures).
EPIDURAL_MAX_ARC_DEG = 70.0
#: Largest cranio-caudal half-span (mm) of an epidural hematoma.
EPIDURAL_MAX_HALF_SPAN_MM = 30.0
#: Largest arc (degrees) of a convexity subdural hematoma (a third of the circumference).
SUBDURAL_MAX_ARC_DEG = 120.0
#: Largest thickness (mm) of a subdural hematoma.
SUBDURAL_MAX_THICKNESS_MM = 15.0
#: Probability that a subdural hematoma lies along the falx instead of the convexity.
SUBDURAL_FALX_PROBABILITY = 0.2
#: Largest volume (mL) of a falx subdural hematoma (larger ones go on the convexity).
SUBDURAL_FALX_MAX_ML = 15.0
#: Probability that a subdural hematoma lies on the tentorium (drawn after the falx one).
SUBDURAL_TENTORIUM_PROBABILITY = 0.15
#: Largest volume (mL) of a tentorial subdural hematoma (larger ones go on the convexity).
SUBDURAL_TENTORIUM_MAX_ML = 10.0
#: Largest thickness (mm) of a tentorial subdural hematoma.
SUBDURAL_TENTORIUM_MAX_THICKNESS_MM = 6.0
#: Seed suffixes of the child generators of the mimics and of the scanner variety.
MIMIC_SEED_KEY = 7
SCANNER_SEED_KEY = 8
#: Probability of a hypodense edema rim around an intraparenchymal hematoma.
EDEMA_PROBABILITY = 0.6
#: Probability of a sharp horizontal fluid level in an intraventricular hemorrhage.
FLUID_LEVEL_PROBABILITY = 0.7
#: Largest SD (HU) of the low-frequency heterogeneity of a clot (drawn per lesion).
CLOT_TEXTURE_MAX_HU = 3.0
#: Smoothness (Gaussian sigma, mm) of that heterogeneity.
CLOT_TEXTURE_SIGMA_MM = 2.5
#: Lesions at least this large (mL) push the surrounding tissue when mass effect is on.
MASS_EFFECT_MIN_ML = 10.0
#: Text put in Series Description of a synthetic training case.
SYNTHETIC_CASE_NOTE = "synthetic ICH case"

#: Unit vector of the patient's posterior direction (+Y in LPS): dependent when supine.
_POSTERIOR = np.array([0.0, 1.0, 0.0])


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


class _Sampler:
    """Sub-slice sampling of a volume's geometry and of fields on its grid."""

    def __init__(self, volume: CTVolume, anatomy: HeadAnatomy, samples: int) -> None:
        self.volume = volume
        self.anatomy = anatomy
        self.shape = volume.shape
        self.row_mm, self.col_mm = volume.pixel_spacing_mm
        self.rd = volume.row_direction
        self.cd = volume.column_direction
        self.n = volume.normal
        self.origins = volume.image_positions_mm
        along = volume.slice_positions_mm
        spacing = volume.slice_spacing_mm
        thickness = np.array(
            [t if t else s for t, s in zip(volume.slice_thicknesses_mm, spacing, strict=True)]
        )
        self.samples = samples
        self.offsets = ((np.arange(samples) + 0.5) / samples - 0.5)[None, :] * thickness[:, None]
        self.voxel_ml = volume.voxel_volume_ml
        slices = self.shape[0]
        target = along[:, None] + self.offsets
        if slices > 1:
            upper = np.clip(np.searchsorted(along, target), 1, slices - 1)
            lower = upper - 1
            weight = np.clip((target - along[lower]) / (along[upper] - along[lower]), 0.0, 1.0)
        else:
            upper = lower = np.zeros_like(target, dtype=np.int64)
            weight = np.zeros_like(target)
        self.lower, self.upper, self.weight = lower, upper, weight
        self.inside = anatomy.intracranial.astype(np.float32)

    def shift(self, k: int, other: int) -> tuple[float, float]:
        """In-plane offset (rows, columns) of slice k's pixels in slice ``other``'s grid."""
        delta = self.origins[k] - self.origins[other]
        return float(delta @ self.cd / self.row_mm), float(delta @ self.rd / self.col_mm)

    def sample(
        self, field: np.ndarray, k: int, j: int, box: tuple[int, int, int, int]
    ) -> np.ndarray:
        """Interpolate a float32 field (S, R, C) at sub-position j of slice k on a crop."""
        r0, r1, c0, c1 = box
        out = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
        w = float(self.weight[k, j])
        for index, weight in ((int(self.lower[k, j]), 1.0 - w), (int(self.upper[k, j]), w)):
            if weight <= 1e-6:
                continue
            dr, dc = self.shift(k, index)
            if abs(dr) < 1e-3 and abs(dc) < 1e-3:
                out += weight * field[index, r0:r1, c0:c1]
                continue
            matrix = np.array([[1.0, 0.0, c0 + dc], [0.0, 1.0, r0 + dr]])
            warped = cv2.warpAffine(
                field[index],
                matrix,
                (c1 - c0, r1 - r0),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0.0,
            )
            out += weight * warped
        return out

    def project(self, e: np.ndarray, k: int, j: int, box: tuple[int, int, int, int]) -> np.ndarray:
        """Return P . e (mm) for the points of sub-position j of slice k on a crop."""
        r0, r1, c0, c1 = box
        base = float(self.origins[k] @ e + self.offsets[k, j] * (self.n @ e))
        rows = np.arange(r0, r1, dtype=np.float32) * np.float32(self.row_mm * (self.cd @ e))
        cols = np.arange(c0, c1, dtype=np.float32) * np.float32(self.col_mm * (self.rd @ e))
        return np.float32(base) + rows[:, None] + cols[None, :]

    def voxel_points(self, k: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """LPS points (n, 3) of voxel centres."""
        return (
            self.origins[k]
            + (r * self.row_mm)[:, None] * self.cd[None, :]
            + (c * self.col_mm)[:, None] * self.rd[None, :]
        )


def _head_centre(sampler: _Sampler) -> np.ndarray:
    """Centroid (LPS mm) of the intracranial mask."""
    k, r, c = np.nonzero(sampler.anatomy.intracranial[:, ::2, ::2])
    if k.size == 0:
        raise ValueError("the anatomy has no intracranial voxel")
    return sampler.voxel_points(k, 2.0 * r, 2.0 * c).mean(axis=0)


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _solve_level(
    levels: np.ndarray, weights: np.ndarray, target_ml: float, level_max: float
) -> float:
    """Smallest level s with sum(weights[levels <= s]) >= target (weighted histogram)."""
    keep = levels <= level_max
    values = levels[keep]
    if values.size == 0:
        return level_max
    w = np.broadcast_to(weights, levels.shape)[keep]
    low = float(min(values.min(), 0.0))
    bins = 8192
    hist, edges = np.histogram(values, bins=bins, range=(low, level_max), weights=w)
    cumulative = np.cumsum(hist)
    if cumulative[-1] < target_ml:
        return level_max
    i = int(np.searchsorted(cumulative, target_ml))
    return float(edges[i + 1])


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int, int, int] | None:
    """(k0, k1, r0, r1, c0, c1) of a 3D mask, in-plane margin added, or None if empty."""
    if not mask.any():
        return None
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    rs = np.flatnonzero(mask.any(axis=(0, 2)))
    cs = np.flatnonzero(mask.any(axis=(0, 1)))
    rows, columns = mask.shape[1:]
    return (
        int(ks[0]),
        int(ks[-1]) + 1,
        max(int(rs[0]) - margin, 0),
        min(int(rs[-1]) + 1 + margin, rows),
        max(int(cs[0]) - margin, 0),
        min(int(cs[-1]) + 1 + margin, columns),
    )


def _expand_slices(sampler: _Sampler, k0: int, k1: int) -> tuple[int, int]:
    """Add the neighbours whose thickness can reach into slices k0..k1-1."""
    lo = int(sampler.lower[k0:k1].min()) if k1 > k0 else k0
    hi = int(sampler.upper[k0:k1].max()) + 1 if k1 > k0 else k1
    # Slices whose sub-positions sample k0..k1-1 also see the lesion.
    touching = np.flatnonzero(
        ((sampler.lower >= k0) & (sampler.lower < k1)).any(axis=1)
        | ((sampler.upper >= k0) & (sampler.upper < k1)).any(axis=1)
    )
    if touching.size:
        lo, hi = min(lo, int(touching[0])), max(hi, int(touching[-1]) + 1)
    return max(lo, 0), min(hi, sampler.shape[0])


def _geometric_lesion(
    sampler: _Sampler,
    region: np.ndarray,
    level_fn: Callable[[int, int, tuple[int, int, int, int]], np.ndarray],
    target_ml: float,
    level_max: float,
    margin_px: int,
) -> tuple[tuple[int, int, int], np.ndarray, float]:
    """Evaluate a level field on sub-samples in a region's box, solve its size for a volume.

    Returns the crop origin, the levels (K, J, h, w) and the solved level s: a sub-sample
    is inside where its level <= s, and s is the smallest level whose inside samples,
    each weighing its voxel volume / J, add up to ``target_ml``.
    """
    box = _bounding_box(region, margin_px)
    if box is None:
        raise ValueError("no room for the lesion in this anatomy")
    k0, k1, r0, r1, c0, c1 = box
    k0, k1 = _expand_slices(sampler, k0, k1)
    crop = (r0, r1, c0, c1)
    levels = np.empty((k1 - k0, sampler.samples, r1 - r0, c1 - c0), dtype=np.float32)
    for i, k in enumerate(range(k0, k1)):
        for j in range(sampler.samples):
            levels[i, j] = level_fn(k, j, crop)
    weights = (sampler.voxel_ml[k0:k1] / sampler.samples)[:, None, None, None]
    level = _solve_level(levels, weights, target_ml, level_max)
    return (k0, r0, c0), levels, level


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _in_plane_frame(
    sampler: _Sampler, centre: np.ndarray
) -> Callable[[int, int, tuple[int, int, int, int]], tuple[np.ndarray, np.ndarray]]:
    """Closure giving the in-plane angle (rad) and axial coordinate (mm) about the head axis."""

    def coords(k: int, j: int, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        u = sampler.project(sampler.rd, k, j, box) - np.float32(centre @ sampler.rd)
        v = sampler.project(sampler.cd, k, j, box) - np.float32(centre @ sampler.cd)
        z = sampler.project(sampler.n, k, j, box) - np.float32(centre @ sampler.n)
        return np.arctan2(v, u), z

    return coords


def _pick_table_point(
    sampler: _Sampler, rng: np.random.Generator, centre: np.ndarray, min_area_fraction: float
) -> tuple[float, float, float]:
    """A random point on the inner table of a large slice: (angle rad, radius mm, z mm)."""
    anatomy = sampler.anatomy
    area = anatomy.intracranial.sum(axis=(1, 2))
    eligible = np.flatnonzero(area >= min_area_fraction * area.max())
    k = int(rng.choice(eligible))
    edge_mm = 1.5 * max(sampler.row_mm, sampler.col_mm)
    mask = anatomy.intracranial[k]
    hull = np.zeros(mask.shape, dtype=np.uint8)
    cv2.fillConvexPoly(hull, _hull(mask), 1)
    hull_depth = ndimage.distance_transform_edt(hull, sampling=(sampler.row_mm, sampler.col_mm))
    rows, cols = np.nonzero(mask & (hull_depth <= edge_mm + 1.0))
    if rows.size == 0:
        rows, cols = np.nonzero(mask & (anatomy.depth_mm[k] <= edge_mm))
    i = int(rng.integers(rows.size))
    point = sampler.voxel_points(np.array([k]), rows[i : i + 1] * 1.0, cols[i : i + 1] * 1.0)[0]
    d = point - centre
    u, v, z = float(d @ sampler.rd), float(d @ sampler.cd), float(d @ sampler.n)
    return float(np.arctan2(v, u)), float(np.hypot(u, v)), z


def _hull(mask: np.ndarray) -> np.ndarray:
    """Convex hull (OpenCV points) of a non-empty 2D mask."""
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    return cv2.convexHull(np.concatenate(contours, axis=0))


def _convexity_depth(sampler: _Sampler, region: np.ndarray, margin_px: int) -> np.ndarray:
    """In-plane distance (mm) from the convex hull of each slice's intracranial mask.

    Inside the intracranial mask only (0 elsewhere), on the slices and box of
    ``region``. Unlike the distance to the mask edge it ignores concave parts of
    the inner table (sphenoid wing, petrous ridge, falx notch), so convexity
    collections hug the vault, not the skull base.
    """
    anatomy = sampler.anatomy
    field = np.zeros(sampler.shape, dtype=np.float32)
    box = _bounding_box(region, margin_px + 8)
    if box is None:
        return field
    k0, k1, r0, r1, c0, c1 = box
    k0, k1 = _expand_slices(sampler, k0, k1)
    for k in range(k0, k1):
        mask = anatomy.intracranial[k]
        if not mask.any():
            continue
        hull = _hull(mask)
        filled = np.zeros(mask.shape, dtype=np.uint8)
        cv2.fillConvexPoly(filled, hull, 1)
        crop = filled[r0:r1, c0:c1].astype(bool)
        distance = ndimage.distance_transform_edt(
            crop, sampling=(sampler.row_mm, sampler.col_mm)
        ).astype(np.float32)
        field[k, r0:r1, c0:c1] = np.where(mask[r0:r1, c0:c1], distance, 0.0)
    return field


def _convexity_region(
    sampler: _Sampler,
    centre: np.ndarray,
    theta0: float,
    half_arc: float,
    z0: float,
    half_span: float,
    depth_max: float,
) -> np.ndarray:
    """Voxels (at slice centres) that may hold a convexity lesion, with slack."""
    anatomy = sampler.anatomy
    slices = sampler.shape[0]
    region = np.zeros(sampler.shape, dtype=bool)
    z_slices = sampler.origins @ sampler.n - centre @ sampler.n
    thick = np.abs(sampler.offsets).max(axis=1)
    for k in range(slices):
        if abs(z_slices[k] - z0) > half_span + thick[k] + 2.0:
            continue
        near = anatomy.intracranial[k] & (anatomy.depth_mm[k] <= depth_max + 3.0)
        if not near.any():
            continue
        rows, cols = np.nonzero(near)
        d = sampler.voxel_points(np.full(rows.size, k), rows * 1.0, cols * 1.0) - centre
        dtheta = np.abs(_wrap(np.arctan2(d @ sampler.cd, d @ sampler.rd) - theta0))
        ok = dtheta <= half_arc * 1.15 + 0.05
        region[k, rows[ok], cols[ok]] = True
    return region


def _epidural(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    centre = _head_centre(sampler)
    theta0, radius, z0 = _pick_table_point(sampler, rng, centre, 0.7)
    radius = max(radius, 30.0)
    # Footprint from the volume: lens of thickness kappa*a over an ellipse a x rho*a.
    kappa, rho = rng.uniform(0.25, 0.5), rng.uniform(0.6, 1.0)
    a = (2.0 * target_ml * 1000.0 / (np.pi * kappa * rho)) ** (1.0 / 3.0)
    half_arc = min(a / radius, np.deg2rad(EPIDURAL_MAX_ARC_DEG) / 2.0)
    half_span = float(np.clip(rho * a, 8.0, EPIDURAL_MAX_HALF_SPAN_MM))
    depth_max = 45.0
    coords = _in_plane_frame(sampler, centre)

    def level(k: int, j: int, box: tuple[int, int, int, int]) -> np.ndarray:
        theta, z = coords(k, j, box)
        q = (_wrap(theta - theta0) / half_arc) ** 2 + ((z - z0) / half_span) ** 2
        depth = sampler.sample(convex, k, j, box)
        inside = sampler.sample(sampler.inside, k, j, box) >= 0.5
        out = np.full(q.shape, np.inf, dtype=np.float32)
        ok = inside & (q < 1.0)
        out[ok] = depth[ok] / (1.0 - q[ok])
        return out

    region = _convexity_region(sampler, centre, theta0, half_arc, z0, half_span, depth_max)
    convex = _convexity_depth(sampler, region, 4)
    origin, levels, s = _geometric_lesion(sampler, region, level, target_ml, depth_max, 4)
    return origin, (levels <= s).mean(axis=1, dtype=np.float32), None


def _subdural(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    centre = _head_centre(sampler)
    u = rng.random()
    falx = u < SUBDURAL_FALX_PROBABILITY
    tentorial = not falx and u < SUBDURAL_FALX_PROBABILITY + SUBDURAL_TENTORIUM_PROBABILITY
    if falx and target_ml <= SUBDURAL_FALX_MAX_ML:
        origin, fraction, _ = _subdural_falx(sampler, rng, target_ml, centre)
        voxel_ml = sampler.voxel_ml[origin[0] : origin[0] + fraction.shape[0]]
        if float(fraction.sum(axis=(1, 2)) @ voxel_ml) >= 0.9 * target_ml:
            return origin, fraction, None
        # The falx is too short here for this volume: put it on the convexity.
    if tentorial and target_ml <= SUBDURAL_TENTORIUM_MAX_ML:
        try:
            origin, fraction, _ = _subdural_tentorium(sampler, rng, target_ml)
        except ValueError:
            pass  # no tentorium in this anatomy (no ventricles to find it by)
        else:
            voxel_ml = sampler.voxel_ml[origin[0] : origin[0] + fraction.shape[0]]
            if float(fraction.sum(axis=(1, 2)) @ voxel_ml) >= 0.9 * target_ml:
                return origin, fraction, None
        # The tentorium holds too little here: put it on the convexity.
    theta0, radius, z0 = _pick_table_point(sampler, rng, centre, 0.7)
    radius = max(radius, 30.0)
    # A crescent: thin for its extent, thicker when large (about 2-4 mm at 3 mL, 10-14 at 80).
    thickness = float(
        np.clip(rng.uniform(0.7, 1.3) * (2.0 + 0.12 * target_ml), 2.0, SUBDURAL_MAX_THICKNESS_MM)
    )
    half_arc = np.deg2rad(rng.uniform(35.0, SUBDURAL_MAX_ARC_DEG / 2.0))
    half_span = rng.uniform(25.0, 50.0)
    area = 4.0 * half_arc * radius * half_span * 0.85
    scale = np.sqrt(target_ml * 1000.0 / thickness / area)
    half_arc = float(
        np.clip(half_arc * scale, np.deg2rad(20.0), np.deg2rad(SUBDURAL_MAX_ARC_DEG / 2.0))
    )
    half_span = float(np.clip(half_span * scale, 10.0, 50.0))
    depth_max = SUBDURAL_MAX_THICKNESS_MM + 3.0
    coords = _in_plane_frame(sampler, centre)

    def level(k: int, j: int, box: tuple[int, int, int, int]) -> np.ndarray:
        theta, z = coords(k, j, box)
        x = (_wrap(theta - theta0) / half_arc) ** 4
        y = ((z - z0) / half_span) ** 4
        shape = np.sqrt(np.clip(1.0 - x, 0.0, 1.0) * np.clip(1.0 - y, 0.0, 1.0))
        depth = sampler.sample(convex, k, j, box)
        inside = sampler.sample(sampler.inside, k, j, box) >= 0.5
        out = np.full(shape.shape, np.inf, dtype=np.float32)
        ok = inside & (shape > 0.0)
        out[ok] = depth[ok] / shape[ok]
        return out

    region = _convexity_region(sampler, centre, theta0, half_arc, z0, half_span, depth_max)
    convex = _convexity_depth(sampler, region, 4)
    origin, levels, s = _geometric_lesion(sampler, region, level, target_ml, depth_max, 4)
    return origin, (levels <= s).mean(axis=1, dtype=np.float32), None


def _midline_axis(sampler: _Sampler, slices: np.ndarray) -> np.ndarray:
    """Unit in-plane vector (rows mm, columns mm) of the head's long (antero-posterior) axis."""
    k, r, c = np.nonzero(sampler.anatomy.intracranial[slices][:, ::2, ::2])
    y = (r * 2.0 - r.mean() * 2.0) * sampler.row_mm
    x = (c * 2.0 - c.mean() * 2.0) * sampler.col_mm
    moments = np.array([[np.mean(y * y), np.mean(x * y)], [np.mean(x * y), np.mean(x * x)]])
    _values, vectors = np.linalg.eigh(moments)
    axis = vectors[:, -1]
    return axis if axis[0] >= 0 else -axis


def _subdural_falx(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float, centre: np.ndarray
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    """A thin parafalcine band on one side of the midline, supratentorial."""
    anatomy = sampler.anatomy
    side = 1.0 if rng.random() < 0.5 else -1.0
    half_length = rng.uniform(25.0, 50.0)
    half_span = rng.uniform(15.0, 35.0)
    thickness = rng.uniform(2.0, 5.0)
    # Extent for the volume: thickness x (2 x 0.8 half-length) x (2 x 0.8 half-span).
    scale = max(np.sqrt(target_ml * 1000.0 / thickness / (2.56 * half_length * half_span)), 1.0)
    half_length = min(half_length * scale, 60.0)
    half_span = min(half_span * scale, 45.0)
    area = anatomy.intracranial.sum(axis=(1, 2))
    z_slices = (sampler.origins - centre) @ sampler.n
    eligible = np.flatnonzero((area >= 0.5 * area.max()) & (z_slices >= -5.0))
    if eligible.size == 0:
        eligible = np.flatnonzero(area >= 0.5 * area.max())
    k_seed = int(rng.choice(eligible))
    z0 = float(z_slices[k_seed])
    t0 = rng.uniform(-20.0, 20.0)
    band_max = 8.0
    axis = _midline_axis(sampler, eligible)  # (rows, columns) components, mm
    normal = np.array([-axis[1], axis[0]])
    centroid_row = np.array(
        [
            np.mean(np.nonzero(anatomy.intracranial[k])[0]) if area[k] else sampler.shape[1] / 2
            for k in range(sampler.shape[0])
        ]
    )
    midline = anatomy.midline_column
    # The falx ends above the corpus callosum: no blood within about 10 mm of the ventricles.
    kernel = cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE,
        (2 * int(10.0 / sampler.col_mm) + 1, 2 * int(10.0 / sampler.row_mm) + 1),
    )
    near_ventricle = np.zeros(sampler.shape, dtype=bool)

    def line_coords(k: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dy = (rows - centroid_row[k]) * sampler.row_mm
        dx = (cols - midline[k]) * sampler.col_mm
        return dy * axis[0] + dx * axis[1], (dy * normal[0] + dx * normal[1]) * side

    def level(k: int, j: int, box: tuple[int, int, int, int]) -> np.ndarray:
        r0, r1, c0, c1 = box
        rows = np.arange(r0, r1, dtype=np.float32)[:, None]
        cols = np.arange(c0, c1, dtype=np.float32)[None, :]
        along, distance = line_coords(k, rows, cols)
        z = sampler.project(sampler.n, k, j, box) - np.float32(centre @ sampler.n)
        shape = np.sqrt(
            np.clip(1.0 - ((along - t0) / half_length) ** 4, 0.0, 1.0)
            * np.clip(1.0 - ((z - z0) / half_span) ** 4, 0.0, 1.0)
        )
        inside = sampler.sample(sampler.inside, k, j, box) >= 0.5
        out = np.full(shape.shape, np.inf, dtype=np.float32)
        ok = inside & (shape > 0.0) & (distance >= 0.0) & ~near_ventricle[k, r0:r1, c0:c1]
        out[ok] = (distance / np.maximum(shape, 1e-6))[ok]
        return out

    rows = np.arange(sampler.shape[1], dtype=np.float32)[:, None]
    cols = np.arange(sampler.shape[2], dtype=np.float32)[None, :]
    region = np.zeros(sampler.shape, dtype=bool)
    for k in np.flatnonzero(np.abs(z_slices - z0) <= half_span + 8.0):
        along, distance = line_coords(int(k), rows, cols)
        if anatomy.ventricles[k].any():
            near_ventricle[k] = cv2.dilate(anatomy.ventricles[k].astype(np.uint8), kernel) > 0
        region[k] = ~near_ventricle[k] & (
            anatomy.intracranial[k]
            & (np.abs(distance) <= band_max + 2.0)
            & (np.abs(along - t0) <= half_length + 2.0)
        )
    origin, levels, s = _geometric_lesion(sampler, region, level, target_ml, band_max, 4)
    return origin, (levels <= s).mean(axis=1, dtype=np.float32), None


def _subdural_tentorium(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    """A thin crescent on the upper surface of one leaf of the tentorium."""
    landmarks = find_landmarks(sampler.volume, sampler.anatomy)
    model = random_tentorium(landmarks, rng)  # ValueError without a pineal site
    side = 1.0 if rng.random() < 0.5 else -1.0
    band_max = SUBDURAL_TENTORIUM_MAX_THICKNESS_MM
    thickness = float(rng.uniform(2.0, band_max))
    rho0 = float(rng.uniform(25.0, 45.0))
    aspect = float(rng.uniform(1.2, 2.5))
    # Footprint for the volume: a superellipse patch (about 0.8 of its box) x 0.6 x thickness.
    area = target_ml * 1000.0 / (0.6 * thickness)
    half_width = float(np.clip(np.sqrt(area / (3.2 * aspect)), 6.0, rho0 - 5.0))
    half_angle = float(np.clip(aspect * half_width / rho0, np.deg2rad(15.0), np.deg2rad(70.0)))
    theta0 = float(np.deg2rad(rng.uniform(35.0, 110.0)))

    def patch(x: np.ndarray, y: np.ndarray, slack: float) -> tuple[np.ndarray, np.ndarray]:
        theta = np.arctan2(x * np.float32(side), y)
        rho = np.sqrt(x * x + y * y)
        a = ((theta - np.float32(theta0)) / np.float32(half_angle * slack)) ** 4
        b = ((rho - np.float32(rho0)) / np.float32(half_width * slack)) ** 4
        shape = np.sqrt(np.clip(1.0 - a, 0.0, 1.0) * np.clip(1.0 - b, 0.0, 1.0))
        return shape, (x * np.float32(side) > 0.0) & model.on_sheet(x, y)

    def level(k: int, j: int, box: tuple[int, int, int, int]) -> np.ndarray:
        x, y, z = model.head_coordinates(lambda e: sampler.project(e, k, j, box))
        height = model.height_mm(x, y, z)
        shape, allowed = patch(x, y, 1.0)
        inside = sampler.sample(sampler.inside, k, j, box) >= 0.5
        out = np.full(shape.shape, np.inf, dtype=np.float32)
        ok = inside & allowed & (shape > 0.0) & (height >= 0.0)
        out[ok] = (height / np.maximum(shape, 1e-6))[ok]
        return out

    region = np.zeros(sampler.shape, dtype=bool)
    full = (0, sampler.shape[1], 0, sampler.shape[2])
    middle = sampler.samples // 2
    thick = np.abs(sampler.offsets).max(axis=1)
    for k in range(sampler.shape[0]):
        if not sampler.anatomy.intracranial[k].any():
            continue

        def dot(e: np.ndarray, k: int = k) -> np.ndarray:
            return sampler.project(e, k, middle, full)

        x, y, z = model.head_coordinates(dot)
        height = model.height_mm(x, y, z)
        shape, allowed = patch(x, y, 1.15)
        region[k] = (
            sampler.anatomy.intracranial[k]
            & allowed
            & (shape > 0.0)
            & (np.abs(height) <= band_max + thick[k] + 3.0)
        )
    origin, levels, s = _geometric_lesion(sampler, region, level, target_ml, band_max, 4)
    return origin, (levels <= s).mean(axis=1, dtype=np.float32), None


def _intraparenchymal(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float
) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray | None]:
    anatomy = sampler.anatomy
    radius = (3.0 * target_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    axes = np.array([1.0, rng.uniform(0.65, 1.0), rng.uniform(0.65, 1.0)])
    axes /= np.prod(axes) ** (1.0 / 3.0)
    candidates = np.empty((0, 3), dtype=np.int64)
    for margin in (radius * axes.max() + 6.0, radius + 3.0, radius * 0.5, 0.0):
        allowed = anatomy.brain & (anatomy.depth_mm > margin) & ~anatomy.ventricles
        candidates = np.argwhere(allowed[:, ::2, ::2])
        if len(candidates) > 0:
            break
    if len(candidates) == 0:
        raise ValueError("no parenchyma to place an intraparenchymal hemorrhage in")
    k, r, c = candidates[int(rng.integers(len(candidates)))]
    centre = sampler.voxel_points(np.array([k]), np.array([2.0 * r]), np.array([2.0 * c]))[0]
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    bumps = [
        (_random_unit(rng), rng.uniform(2.0, 5.0), rng.uniform(0, 2 * np.pi)) for _ in range(5)
    ]
    amplitudes = rng.uniform(0.03, 0.12, size=5)
    with_edema = rng.random() < EDEMA_PROBABILITY
    edema_width = rng.uniform(0.2, 0.5)
    level_max = 60.0

    def level(kk: int, j: int, box: tuple[int, int, int, int]) -> np.ndarray:
        local = [
            (sampler.project(rotation[:, i], kk, j, box) - np.float32(centre @ rotation[:, i]))
            / np.float32(axes[i])
            for i in range(3)
        ]
        rho = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2) + np.float32(1e-6)
        g = np.zeros(rho.shape, dtype=np.float32)
        for (d, freq, phase), amp in zip(bumps, amplitudes, strict=True):
            cosine = (local[0] * d[0] + local[1] * d[1] + local[2] * d[2]) / rho
            g += np.float32(amp) * np.cos(np.float32(freq) * cosine + np.float32(phase))
        inside = sampler.sample(sampler.inside, kk, j, box) >= 0.5
        out = rho / (1.0 + g)
        out[~inside] = np.inf
        return out

    # rho <= s (1 + g) with g <= sum(amplitudes), s about the equivalent radius.
    bulge = 1.0 + float(amplitudes.sum())
    reach = radius * float(axes.max()) * bulge * (1.0 + edema_width) * 1.1 + 3.0
    ks, rs, cs = np.ogrid[: sampler.shape[0], : sampler.shape[1], : sampler.shape[2]]
    z_slices = (sampler.origins - centre) @ sampler.n
    row_c = (centre - sampler.origins[int(k)]) @ sampler.cd / sampler.row_mm
    col_c = (centre - sampler.origins[int(k)]) @ sampler.rd / sampler.col_mm
    region = (
        (np.abs(z_slices)[:, None, None] <= reach)
        & (np.abs(rs - row_c) * sampler.row_mm <= reach + 5.0)
        & (np.abs(cs - col_c) * sampler.col_mm <= reach + 5.0)
    )
    region &= anatomy.intracranial
    origin, levels, s = _geometric_lesion(sampler, region, level, target_ml, level_max, 4)
    fraction = (levels <= s).mean(axis=1, dtype=np.float32)
    edema = None
    if with_edema:
        edema = ((levels > s) & (levels <= s * (1.0 + edema_width))).mean(axis=1, dtype=np.float32)
    return origin, fraction, edema


def _grid_fraction(
    sampler: _Sampler, mask: np.ndarray, box: tuple[int, int, int, int, int, int]
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Partial-volume fraction of a voxel mask interpolated along the normal between slices."""
    k0, k1, r0, r1, c0, c1 = box
    k0, k1 = _expand_slices(sampler, k0, k1)
    field = mask.astype(np.float32)
    crop = (r0, r1, c0, c1)
    fraction = np.zeros((k1 - k0, r1 - r0, c1 - c0), dtype=np.float32)
    for i, k in enumerate(range(k0, k1)):
        for j in range(sampler.samples):
            fraction[i] += sampler.sample(field, k, j, crop)
    fraction /= sampler.samples
    return (k0, r0, c0), fraction


def _subarachnoid(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    anatomy = sampler.anatomy
    seeds = np.argwhere(anatomy.sulci_cisterns)
    if len(seeds) == 0:
        raise ValueError("no sulci or cisterns to place a subarachnoid hemorrhage in")
    seed = seeds[int(rng.integers(len(seeds)))]
    reach_mm = 60.0
    rows, columns = sampler.shape[1:]
    half_r = int(np.ceil(reach_mm / sampler.row_mm))
    half_c = int(np.ceil(reach_mm / sampler.col_mm))
    along = sampler.origins @ sampler.n
    ks = np.flatnonzero(np.abs(along - along[seed[0]]) <= reach_mm)
    k0, k1 = int(ks[0]), int(ks[-1]) + 1
    r0, r1 = max(seed[1] - half_r, 0), min(seed[1] + half_r + 1, rows)
    c0, c1 = max(seed[2] - half_c, 0), min(seed[2] + half_c + 1, columns)
    crop = (slice(k0, k1), slice(r0, r1), slice(c0, c1))
    plane = np.zeros((1, 3, 3), dtype=bool)
    plane[0] = True
    inside = anatomy.intracranial[crop] & ~anatomy.ventricles[crop]
    candidate = ndimage.binary_dilation(anatomy.sulci_cisterns[crop], structure=plane) & inside
    # Blood spreads between neighbouring sulci: connect them across gaps of about 2 mm.
    bridge = max(int(round(1.0 / min(sampler.row_mm, sampler.col_mm))), 1)
    connected = ndimage.binary_dilation(candidate, structure=plane, iterations=bridge) & inside
    # "Partially": keep the sulci where a smooth random field is high.
    sigma_px = (0.0, 3.0 / sampler.row_mm, 3.0 / sampler.col_mm)
    keep_field = ndimage.gaussian_filter(rng.standard_normal(candidate.shape), sigma=sigma_px)
    keep = keep_field > np.quantile(keep_field, rng.uniform(0.15, 0.4))
    # A connected subset: distance (mm) from the seed within the seed's network of sulci;
    # other networks in reach only once the seed's is full.
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    local_seed = (seed[0] - k0, seed[1] - r0, seed[2] - c0)
    connected[local_seed] = True
    networks, _count = ndimage.label(connected, structure=structure)
    fill = keep & candidate
    kk, rr, cc = np.nonzero(fill)
    points = sampler.voxel_points(kk + k0, (rr + r0) * 1.0, (cc + c0) * 1.0)
    seed_point = sampler.voxel_points(
        np.array([seed[0]]), np.array([seed[1] * 1.0]), np.array([seed[2] * 1.0])
    )[0]
    distance = np.linalg.norm(points - seed_point, axis=1)
    distance[networks[kk, rr, cc] != networks[local_seed]] += 2.0 * reach_mm
    steps = np.full(candidate.shape, np.inf, dtype=np.float32)
    steps[kk, rr, cc] = distance
    step = 3.0 * reach_mm
    voxel_ml = sampler.voxel_ml[k0:k1][:, None, None]
    mask = np.zeros(sampler.shape, dtype=bool)
    goal = target_ml
    origin, fraction = (k0, r0, c0), np.zeros((k1 - k0, r1 - r0, c1 - c0), dtype=np.float32)
    for _ in range(3):
        level = _solve_level(steps, voxel_ml, goal, step)
        mask[crop] = steps <= level
        box = _bounding_box(mask, 2)
        if box is None:
            break
        origin, fraction = _grid_fraction(sampler, mask, box)
        voxel = sampler.voxel_ml[origin[0] : origin[0] + len(fraction)]
        got = float(fraction.sum(axis=(1, 2)) @ voxel)
        if got <= 0 or abs(got - target_ml) <= 0.03 * target_ml:
            break
        goal *= target_ml / got
        mask[crop] = False
    return origin, fraction, None


def _intraventricular(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    anatomy = sampler.anatomy
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    labels, count = ndimage.label(anatomy.ventricles, structure=structure)
    if count == 0:
        raise ValueError("no ventricle to place an intraventricular hemorrhage in")
    ks = np.nonzero(labels)[0]
    volumes = np.bincount(labels[labels > 0], weights=sampler.voxel_ml[ks], minlength=count + 1)[1:]
    # Prefer a ventricle that can hold the volume (blood fills at most 85 % of it).
    large = volumes >= target_ml / 0.85
    weights = np.where(large, volumes, 0.0) if large.any() else (volumes == volumes.max()) * 1.0
    pick = int(rng.choice(count, p=weights / weights.sum())) + 1
    component = labels == pick
    box = _bounding_box(component, 3)
    assert box is not None
    k0, k1, r0, r1, c0, c1 = box
    k0, k1 = _expand_slices(sampler, k0, k1)
    crop = (r0, r1, c0, c1)
    field = component.astype(np.float32)
    fluid_level = rng.random() < FLUID_LEVEL_PROBABILITY
    roughness = None
    if not fluid_level:
        sigma_px = (0.0, 4.0 / sampler.row_mm, 4.0 / sampler.col_mm)
        noise = ndimage.gaussian_filter(rng.standard_normal((k1 - k0, r1 - r0, c1 - c0)), sigma_px)
        roughness = (noise / max(float(noise.std()), 1e-6) * 3.0).astype(np.float32)
    shape = (k1 - k0, sampler.samples, r1 - r0, c1 - c0)
    levels = np.empty(shape, dtype=np.float32)
    occupancy = np.empty(shape, dtype=np.float32)
    for i, k in enumerate(range(k0, k1)):
        for j in range(sampler.samples):
            occupancy[i, j] = sampler.sample(field, k, j, crop)
            levels[i, j] = -sampler.project(_POSTERIOR, k, j, crop)
            if roughness is not None:
                levels[i, j] += roughness[i]
    levels[occupancy <= 0.0] = np.inf
    weights = occupancy * (sampler.voxel_ml[k0:k1] / sampler.samples)[:, None, None, None]
    available = float(weights.sum())
    goal = min(target_ml, 0.85 * available)
    finite = levels[np.isfinite(levels)]
    level = _solve_level(levels, weights, goal, float(finite.max()) + 1.0)
    fraction = np.where(levels <= level, occupancy, 0.0).mean(axis=1, dtype=np.float32)
    return (k0, r0, c0), fraction, None


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


def _spec(sampler: _Sampler, lesion: _Lesion) -> LesionSpec:
    k0, r0, c0 = lesion.origin
    frac = lesion.fraction
    voxel_ml = sampler.voxel_ml[k0 : k0 + frac.shape[0]]
    inserted = float(frac.sum(axis=(1, 2)) @ voxel_ml)
    mask = float(np.count_nonzero(frac >= 0.5, axis=(1, 2)) @ voxel_ml)
    k, r, c = np.nonzero(frac)
    if k.size:
        points = sampler.voxel_points(k + k0, (r + r0) * 1.0, (c + c0) * 1.0)
        w = frac[k, r, c].astype(np.float64)
        centre = tuple(float(x) for x in (points * w[:, None]).sum(axis=0) / w.sum())
    else:
        centre = (float("nan"),) * 3
    return LesionSpec(
        subtype=lesion.subtype,
        hu=lesion.hu,
        inserted_volume_ml=inserted,
        mask_volume_ml=mask,
        centre_mm=centre,  # type: ignore[arg-type]
    )


class _NoiseModel:
    """Per-slice noise SD (HU) measured in brain, cached."""

    def __init__(self, hu: np.ndarray, brain: np.ndarray) -> None:
        self.hu = hu
        self.brain = brain
        self.cache: dict[int, float] = {}

    def sd(self, k: int, rows: slice, cols: slice) -> float:
        """SD in slice k, measured around the given crop (64 pixels of margin) on first use."""
        if k not in self.cache:
            height, width = self.hu.shape[1:]
            margin = 64
            box = (
                slice(max(rows.start - margin, 0), min(rows.stop + margin, height)),
                slice(max(cols.start - margin, 0), min(cols.stop + margin, width)),
            )
            image = self.hu[k][box].astype(np.float64)
            where = self.brain[k][box]
            if where.sum() < 200:
                where = (image >= 0.0) & (image <= 80.0)
            self.cache[k] = _high_pass_sd(image, where)
        return self.cache[k]


def _blend(
    hu: np.ndarray,
    labels: np.ndarray | None,
    lesion: _Lesion,
    brain: np.ndarray,
    noise: _NoiseModel,
    rng: np.random.Generator,
    pixel_spacing_mm: tuple[float, float],
) -> None:
    """Blend one lesion into ``hu`` in place (edema first, then blood); write its label."""
    index = lesion.index
    row_mm, col_mm = pixel_spacing_mm
    if lesion.edema is not None:
        hu[index] += lesion.edema * brain[index] * np.float32(lesion.edema_hu)
    k0 = lesion.origin[0]
    for i in range(lesion.fraction.shape[0]):
        f = lesion.fraction[i]
        if not f.any():
            continue
        rows = np.flatnonzero(f.any(axis=1))
        cols = np.flatnonzero(f.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        sub = f[r0:r1, c0:c1]
        k = k0 + i
        rr = slice(index[1].start + r0, index[1].start + r1)
        cc = slice(index[2].start + c0, index[2].start + c1)
        sd = noise.sd(k, rr, cc)
        noisy = np.full(sub.shape, lesion.hu, dtype=np.float32)
        if lesion.texture_hu > 0:
            blob = rng.standard_normal(sub.shape).astype(np.float32)
            blob = cv2.GaussianBlur(blob, (0, 0), CLOT_TEXTURE_SIGMA_MM / min(row_mm, col_mm))
            noisy += blob * np.float32(lesion.texture_hu / max(float(blob.std()), 1e-6))
        if sd > 0:
            noisy += (_unit_noise(sub.shape, rng) * sd).astype(np.float32)
        old = hu[k, rr, cc]
        hu[k, rr, cc] = (1.0 - sub) * old + sub * noisy
        if labels is not None:
            labels[k, rr, cc][sub >= 0.5] = subtype_label(lesion.subtype)


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


def _mass_effect(
    hu: np.ndarray, sampler: _Sampler, lesion: _Lesion, spec: LesionSpec, rng: np.random.Generator
) -> None:
    """Push tissue radially away from a lesion, in plane, inside the skull (in place)."""
    anatomy = sampler.anatomy
    radius = (3.0 * spec.inserted_volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    amplitude = radius * rng.uniform(0.15, 0.35)  # mm of displacement at the lesion rim
    centre = np.asarray(spec.centre_mm)
    rows, columns = sampler.shape[1:]
    grid_r, grid_c = np.mgrid[0:rows, 0:columns].astype(np.float32)
    z_slices = (sampler.origins - centre) @ sampler.n
    falloff_mm = 10.0
    for k in range(sampler.shape[0]):
        dz = float(z_slices[k])
        if abs(dz) > 2.0 * radius + 10.0 or not anatomy.intracranial[k].any():
            continue
        rel = centre - sampler.origins[k]
        r_c = float(rel @ sampler.cd / sampler.row_mm)
        c_c = float(rel @ sampler.rd / sampler.col_mm)
        dy = (grid_r - r_c) * sampler.row_mm
        dx = (grid_c - c_c) * sampler.col_mm
        distance = np.sqrt(dx * dx + dy * dy) + 1e-3
        push = (
            amplitude
            * np.exp(-((dz / (1.5 * radius)) ** 2))
            * np.exp(-(((distance - radius) / (1.5 * radius)) ** 2))
        )
        weight = np.clip(anatomy.depth_mm[k] / falloff_mm, 0.0, 1.0)
        push = (push * weight).astype(np.float32)
        # Sample from closer to the centre: tissue appears pushed outwards.
        map_c = grid_c - push * dx / distance / np.float32(sampler.col_mm)
        map_r = grid_r - push * dy / distance / np.float32(sampler.row_mm)
        warped = cv2.remap(hu[k], map_c, map_r, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = anatomy.intracranial[k]
        hu[k][inside] = warped[inside]


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


def case_to_datasets(
    datasets: Sequence[pydicom.Dataset], case: SyntheticCase, *, seed: int
) -> list[pydicom.Dataset]:
    """Write a synthetic case into copies of its source series, with new UIDs.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        The single-frame CT instances the case's base volume was loaded from,
        in any order; not modified. Rows and Columns must match the case.
    case : SyntheticCase
        The case (:func:`make_case`).
    seed : int
        Seed of the new UIDs (:func:`dicom_node.training.synthetic.with_new_uids`).

    Returns
    -------
    list of pydicom.Dataset
        Copies in the input order, HU written as stored values through each
        slice's rescale (clipped to the stored range), Series Description and
        Derivation Description marking the series as synthetic, new Study,
        Series, Frame of Reference and SOP Instance UIDs.

    Raises
    ------
    ValueError
        If a slice of the case has no dataset with its SOP Instance UID, or
        the pixel matrix differs.

    References
    ----------
    DICOM PS3.3 C.8.2.1 CT Image Module (Rescale Slope, Rescale Intercept);
    PS3.3 C.7.3.1 General Series Module (Series Description); PS3.3 C.7.6.1
    General Image Module (Derivation Description); PS3.5 section 9 (UIDs).
    """
    copies = [copy.deepcopy(ds) for ds in datasets]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in copies}
    rows, columns = case.volume.shape[1:]
    for k, uid in enumerate(case.volume.sop_instance_uids):
        if uid not in by_uid:
            raise ValueError(f"no dataset with SOP Instance UID {uid}")
        ds = by_uid[uid]
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise ValueError(
                f"instance {uid} is {ds.Rows}x{ds.Columns}, the case is {rows}x{columns}"
            )
        _write_hu(ds, case.volume.hu[k])
    names = ", ".join(s.subtype for s in case.lesions) or "no lesion"
    for ds in copies:
        description = str(ds.get("SeriesDescription", "") or "")
        if SYNTHETIC_CASE_NOTE not in description:
            suffix = f" ({SYNTHETIC_CASE_NOTE})" if description else SYNTHETIC_CASE_NOTE
            ds.SeriesDescription = (description[: 64 - len(suffix)] + suffix).strip()
        ds.DerivationDescription = (
            f"Synthetic training case by dicom-node, seed {case.seed}: {names}; "
            "not a patient finding"
        )[:1024]
    return with_new_uids(copies, seed=seed)
