"""Geometry every shape model shares: sub-slice sampling, level fields solved for a volume.

:class:`_Sampler` evaluates a volume's geometry and fields on its grid at
several sub-positions spread over each slice's own thickness along the slice
normal, in patient coordinates (gantry tilt and uneven slice steps
respected; fields are interpolated along the normal between slices with each
slice's own in-plane offset). :func:`_geometric_lesion` evaluates a shape's
level field on those sub-samples and solves its size so that the
partial-volume sum reaches the requested volume; :func:`_grid_fraction` gives
the partial-volume fraction of a voxel mask.

References
----------
Solomon J, Samei E. A generic framework to simulate realistic lung, liver
and renal pathologies in CT imaging. Phys Med Biol. 2014;59(21):6637-6657,
and Robins M, et al. Techniques for virtual lung nodule insertion. J Med
Imaging. 2017;4(1):013503 (image-domain insertion with partial volume).
DICOM PS3.3 C.7.6.2 Image Plane Module.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from dicom_node.series.volume import CTVolume
from dicom_node.training.anatomy import HeadAnatomy


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
