"""Blood in the CSF spaces: subarachnoid (sulci and cisterns) and intraventricular.

- **subarachnoid**: a partial, connected filling of sulci and cisterns near a
  seed point, dilated by about one pixel, replacing CSF density.
- **intraventricular**: blood in the dependent (posterior, patient supine)
  part of a ventricle, usually below a horizontal fluid level
  (:data:`FLUID_LEVEL_PROBABILITY`).

References
----------
Osborn AG. Osborn's Brain: Imaging, Pathology, and Anatomy. 2nd ed.
Elsevier; 2017 (chapter "Trauma": subarachnoid and intraventricular
hemorrhage). Parizel PM, et al. Eur Radiol. 2001;11(9):1770-1783.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dicom_node.training.lesions.geometry import (
    _bounding_box,
    _expand_slices,
    _grid_fraction,
    _Sampler,
    _solve_level,
)

#: Probability of a sharp horizontal fluid level in an intraventricular hemorrhage.
FLUID_LEVEL_PROBABILITY = 0.7

#: Unit vector of the patient's posterior direction (+Y in LPS): dependent when supine.
_POSTERIOR = np.array([0.0, 1.0, 0.0])


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
