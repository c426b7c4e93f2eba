"""Artefacts of the acquisition: beam hardening, partial-volume bone, motion.

Beam hardening: a dark band between the petrous bones (the "Hounsfield
bar") and thin bright and dark streaks fanning from the dense bone of a
skull-base slice. Partial-volume bone: a rim inside the inner table raised
towards 60-120 HU where the skull is cut obliquely. Motion: neighbouring
slices blended with a shifted, turned copy of themselves.

References
----------
Barrett JF, Keat N. Artifacts in CT: recognition and avoidance.
RadioGraphics. 2004;24(6):1679-1691 (partial volume, beam hardening and
the dark bands between dense objects, motion).
"""

from __future__ import annotations

import cv2
import numpy as np

from dicom_node.training.mimics.common import (
    _PADDING_MAX_HU,
    BEAM_HARDENING,
    MOTION,
    PARTIAL_VOLUME_BONE,
    MimicSpec,
    NoMimicSiteError,
    _measure,
)

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
