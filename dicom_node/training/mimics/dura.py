"""Dense dura: a dense falx band and a dense tentorium sheet.

The falx band (1-3 mm, 50-90 HU) follows the scan's own falx above the
ventricles; the tentorium is a tent-shaped sheet
(:class:`~dicom_node.training.landmarks.TentoriumModel`) of 65-100 HU,
integrated over each slice's thickness so that thick slices cut it
obliquely, fading away from the apex and patchy.

References
----------
Osborn AG. Osborn's Brain: Imaging, Pathology, and Anatomy. 2nd ed.
Elsevier; 2017 (dural folds, pitfalls of hemorrhage on CT). Barrett JF,
Keat N. Artifacts in CT: recognition and avoidance. RadioGraphics.
2004;24(6):1679-1691 (partial volume).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from dicom_node.series.volume import CTVolume
from dicom_node.training.anatomy import HeadAnatomy
from dicom_node.training.landmarks import TentoriumModel, random_tentorium
from dicom_node.training.mimics.common import (
    DENSE_DURA,
    PSF_SIGMA_MM,
    MimicSpec,
    NoMimicSiteError,
    _falx_rows,
    _measure,
    _supratentorial_slices,
    _thickness_mm,
)

#: Reading (HU) of a dense falx.
DENSE_FALX_HU = (50.0, 90.0)
#: Thickness (mm) of a dense falx.
DENSE_FALX_THICKNESS_MM = (1.0, 3.0)
#: True CT number (HU) and thickness (mm) of a dense tentorium sheet.
DENSE_TENTORIUM_HU = (65.0, 100.0)
DENSE_TENTORIUM_THICKNESS_MM = (1.5, 4.0)


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
