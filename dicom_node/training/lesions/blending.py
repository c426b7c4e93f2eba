"""Blending a lesion into the image: matched noise, clot texture, labels, mass effect.

``new = (1 - f) * old + f * (blood + noise)`` with spatially correlated noise
matched to the scan's own high-pass noise in brain (:class:`_NoiseModel`), a
faint low-frequency clot texture (SD up to :data:`CLOT_TEXTURE_MAX_HU`), the
label where ``f >= 0.5``; :func:`_mass_effect` pushes the tissue around a
large lesion radially outwards, in plane, keeping the skull still;
:func:`_spec` measures what was inserted.

References
----------
Solomon J, Samei E. Phys Med Biol. 2014;59(21):6637-6657, and Robins M, et
al. J Med Imaging. 2017;4(1):013503 (image-domain insertion with partial
volume and matched noise).
"""

from __future__ import annotations

import cv2
import numpy as np

from dicom_node.imaging.ich_input import subtype_label
from dicom_node.training.lesions.geometry import _Sampler
from dicom_node.training.lesions.specs import LesionSpec, _Lesion
from dicom_node.training.synthetic import _high_pass_sd, _unit_noise

#: Largest SD (HU) of the low-frequency heterogeneity of a clot (drawn per lesion).
CLOT_TEXTURE_MAX_HU = 3.0
#: Smoothness (Gaussian sigma, mm) of that heterogeneity.
CLOT_TEXTURE_SIGMA_MM = 2.5


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
