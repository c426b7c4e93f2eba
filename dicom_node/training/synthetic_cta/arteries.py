"""Placing the template arteries in the head and occluding one of them.

:func:`_build_arteries` moves the template (:mod:`.template`) into patient
coordinates at the landmarks with a random global transform, smooth
deformation and jitter; :func:`_occlude` fills a segment (ICA-T, M1, M2)
with thrombus and lowers the opacity of everything downstream to the
collateral fraction.

References
----------
Osborn AG. Diagnostic Cerebral Angiography, 2nd ed. Lippincott Williams &
Wilkins; 1999 (branching of the circle of Willis; territory downstream of
an occlusion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dicom_node.training.synthetic_cta.model import (
    OCCLUSION_SEGMENTS,
    Artery,
    HeadLandmarks,
    OcclusionTruth,
)
from dicom_node.training.synthetic_cta.render import _arc_length, _dense_centreline
from dicom_node.training.synthetic_cta.template import _side_sign, _smooth_field, _template


def _build_arteries(
    landmarks: HeadLandmarks,
    rng: np.random.Generator,
    deformation_mm: float,
    occlusion: str | None,
    side: str | None,
    collateral_fraction: float,
    draws: dict,
) -> tuple[list[Artery], OcclusionTruth | None]:
    segments, nodes, template_draws = _template(rng)
    draws.update(template_draws)
    frame = landmarks.frame
    # Global transform in the frame: anisotropic scale, small rotations, shift.
    scale = rng.uniform(0.92, 1.08, 3)
    yaw, pitch = np.deg2rad(rng.uniform(-4.0, 4.0)), np.deg2rad(rng.uniform(-3.0, 3.0))
    rotation = np.array(
        [[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0, 0, 1]]
    ) @ np.array(
        [[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]]
    )
    shift = rng.uniform(-2.5, 2.5, 3)
    field_at = _smooth_field(rng, deformation_mm)
    draws["template"] = {
        "scale": np.round(scale, 3).tolist(),
        "yaw_deg": round(float(np.rad2deg(yaw)), 2),
        "pitch_deg": round(float(np.rad2deg(pitch)), 2),
        "shift_mm": np.round(shift, 2).tolist(),
        "deformation_mm": deformation_mm,
    }

    def deform(local: np.ndarray) -> np.ndarray:
        moved = rotation @ (scale * local) + shift
        return moved + field_at(moved[None, :])[0] + rng.normal(0.0, 0.8, 3)

    placed_nodes = {name: deform(point) for name, point in nodes.items()}

    def place(point: str | np.ndarray) -> np.ndarray:
        local = placed_nodes[point] if isinstance(point, str) else deform(point)
        return frame.to_patient(local)

    brain = landmarks.brain_mask
    volume = landmarks.volume
    by_name: dict[str, Artery] = {}
    arteries: list[Artery] = []
    for segment in segments:
        if segment.start_fraction is not None:
            parent = by_name[str(segment.parent)]
            arc = _arc_length(parent.centreline_mm)
            position = int(np.searchsorted(arc, segment.start_fraction * arc[-1]))
            start = parent.centreline_mm[min(position, len(arc) - 1)]
            if segment.relative:
                sign = np.array([_side_sign(segment.side), 1.0, 1.0])
                start_local = frame.to_local(start)
                rest = [
                    frame.to_patient(start_local + sign * np.asarray(c) + rng.normal(0.0, 0.8, 3))
                    for c in segment.control
                ]
            else:
                rest = [place(c) for c in segment.control]
            patient = np.stack([start, *rest])
        else:
            patient = np.stack([place(c) for c in segment.control])
        centreline = _dense_centreline(patient)
        if segment.clip_to_brain:
            index = volume.nearest_voxel_indices(centreline)
            inside = (index[:, 0] >= 0) & brain[index[:, 0], index[:, 1], index[:, 2]]
            outside = np.flatnonzero(~inside[8:])
            if outside.size:
                centreline = centreline[: 8 + int(outside[0])]
        arc = _arc_length(centreline)
        total = max(arc[-1], 1e-6)
        radius = segment.radius_mm[0] + (segment.radius_mm[1] - segment.radius_mm[0]) * arc / total
        artery = Artery(
            name=segment.name,
            side=segment.side,
            centreline_mm=centreline,
            radius_mm=radius,
            opacity=np.ones(len(centreline)),
            parent=segment.parent,
        )
        by_name[artery.name] = artery
        arteries.append(artery)

    truth = None
    if occlusion is not None:
        assert side is not None
        arteries, truth = _occlude(arteries, occlusion, side, collateral_fraction, rng, draws)
    return arteries, truth


def _descendants(arteries: Sequence[Artery], name: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for artery in arteries:
        if artery.parent is not None:
            children.setdefault(artery.parent, []).append(artery.name)
    found: set[str] = set()
    stack = [name]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _occlude(
    arteries: list[Artery],
    segment: str,
    side: str,
    collateral_fraction: float,
    rng: np.random.Generator,
    draws: dict,
) -> tuple[list[Artery], OcclusionTruth]:
    """Occlude one named segment: thrombus from a point to the segment's end, collaterals beyond."""
    by_name = {a.name: a for a in arteries}
    ica = f"internal_carotid_artery_{side}"
    m1 = f"middle_cerebral_artery_m1_{side}"
    a1 = f"anterior_cerebral_artery_a1_{side}"
    if segment == "ICA-T":
        arc = _arc_length(by_name[ica].centreline_mm)
        start_mm = float(arc[-1] - rng.uniform(4.0, 10.0))
        clot = {ica: start_mm, m1: 0.0, a1: 0.0}
        downstream = _descendants(arteries, m1)
        first = ica
    elif segment == "M1":
        arc = _arc_length(by_name[m1].centreline_mm)
        start_mm = float(rng.uniform(0.0, 0.7) * arc[-1])
        clot = {m1: start_mm}
        downstream = _descendants(arteries, m1)
        # The anterior temporal artery leaves the M1 at 55 %: only downstream when after the clot.
        temporal = f"anterior_temporal_artery_{side}"
        if start_mm > 0.55 * arc[-1]:
            downstream.discard(temporal)
        first = m1
    elif segment == "M2":
        division = str(rng.choice(["superior", "inferior"]))
        name = f"middle_cerebral_artery_m2_{division}_{side}"
        arc = _arc_length(by_name[name].centreline_mm)
        start_mm = float(rng.uniform(0.0, 0.6) * arc[-1])
        clot = {name: start_mm}
        downstream = _descendants(arteries, name)
        first = name
        draws["occluded_division"] = division
    else:
        raise ValueError(f"occlusion must be one of {OCCLUSION_SEGMENTS}, got {segment!r}")

    updated: list[Artery] = []
    for artery in arteries:
        opacity = artery.opacity.copy()
        if artery.name in clot:
            arc = _arc_length(artery.centreline_mm)
            occluded = arc >= clot[artery.name]
            opacity[occluded] = 0.0
        elif artery.name in downstream:
            # Downstream of the thrombus: filled through collaterals only.
            opacity[:] = collateral_fraction
        updated.append(
            Artery(
                artery.name,
                artery.side,
                artery.centreline_mm,
                artery.radius_mm,
                opacity,
                artery.parent,
            )
        )
    first_artery = by_name[first]
    arc = _arc_length(first_artery.centreline_mm)
    point = first_artery.centreline_mm[int(np.searchsorted(arc, clot[first]))]
    truth = OcclusionTruth(
        segment=segment,
        side=side,
        artery=first,
        point_mm=(float(point[0]), float(point[1]), float(point[2])),
        collateral_fraction=float(collateral_fraction),
    )
    draws["occlusion_start_mm"] = round(float(clot[first]), 2)
    return updated, truth
