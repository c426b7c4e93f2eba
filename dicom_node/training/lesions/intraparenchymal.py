"""Intraparenchymal hemorrhage: an irregular round lesion in parenchyma, with optional edema.

An ellipsoid perturbed by low-frequency radial noise, placed in brain away
from the ventricles and the surface, with (:data:`EDEMA_PROBABILITY`) a
hypodense rim of edema that is not labelled.

References
----------
Osborn AG. Osborn's Brain: Imaging, Pathology, and Anatomy. 2nd ed.
Elsevier; 2017 (chapter "Trauma": parenchymal hemorrhage). Parizel PM, et
al. Eur Radiol. 2001;11(9):1770-1783.
"""

from __future__ import annotations

import numpy as np

from dicom_node.training.lesions.geometry import _geometric_lesion, _random_unit, _Sampler

#: Probability of a hypodense edema rim around an intraparenchymal hematoma.
EDEMA_PROBABILITY = 0.6


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
