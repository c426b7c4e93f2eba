"""The procedural circle of Willis: template segments in the anatomical frame, random deformation.

:func:`_template` lays out every drawn segment (ICA, MCA M1-M4, ACA, AComm,
basilar, PCA, PComm) as control points in a frame of left, posterior and
superior mm, drawing per-side calibre and branch counts;
:func:`_smooth_field` draws the smooth displacement field applied to them.

References
----------
Osborn AG. Diagnostic Cerebral Angiography, 2nd ed. Lippincott Williams &
Wilkins; 1999 (course and calibre of the circle of Willis and its branches).
Rai AT, et al. Cerebrovascular geometry in the anterior circulation: an
analysis of diameter, length and the vessel taper. J Neurointerv Surg.
2013;5(4):371-375 (ICA/M1/M2 diameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicom_node.training.synthetic_cta.model import SIDES


@dataclass
class _Segment:
    """A template segment: control points in frame coordinates (left, posterior, superior; mm).

    A control point is a node name (shared between segments, placed once) or
    an array. With ``start_fraction`` the segment starts at that fraction of
    its parent's length; with ``relative`` its other points are offsets from
    that start, their left coordinate multiplied by the side sign.
    """

    name: str
    side: str
    control: list[str | np.ndarray]
    radius_mm: tuple[float, float]
    parent: str | None
    clip_to_brain: bool = False
    start_fraction: float | None = None
    relative: bool = False


def _side_sign(side: str) -> float:
    return 1.0 if side == "left" else -1.0


def _template(rng: np.random.Generator) -> tuple[list[_Segment], dict[str, np.ndarray], dict]:
    """The circle of Willis and branches in frame coordinates (mm), with per-side variation.

    Returns the segments, the shared nodes and the random draws made.
    """
    draws: dict = {"sides": {}}
    segments: list[_Segment] = []

    def p(*xyz: float) -> np.ndarray:
        return np.asarray(xyz, dtype=np.float64)

    nodes: dict[str, np.ndarray] = {
        "basilar_low": p(0.0, 16.0, -30.0),
        "basilar_tip": p(0.0, 9.0, -3.0),
    }
    for side in SIDES:
        s = _side_sign(side)
        lateral = float(rng.uniform(0.93, 1.07))
        calibre = float(rng.uniform(0.88, 1.12))
        draws["sides"][side] = {"lateral_scale": round(lateral, 3), "calibre": round(calibre, 3)}

        def q(x: float, y: float, z: float, *, _s: float = s, _lat: float = lateral) -> np.ndarray:
            return p(_s * x * _lat, y, z)

        nodes[f"ica_entry_{side}"] = q(16.0, -5.0, -26.0)
        nodes[f"ica_t_{side}"] = q(13.0, -3.0, 0.0)
        nodes[f"mca_bif_{side}"] = q(33.0, -9.0, 2.0) + rng.normal(0.0, 1.5, 3)
        nodes[f"m2s_end_{side}"] = q(41.0, 4.0, 34.0) + rng.normal(0.0, 2.5, 3)
        nodes[f"m2i_end_{side}"] = q(44.0, 20.0, 18.0) + rng.normal(0.0, 2.5, 3)
        nodes[f"p1p2_{side}"] = q(7.0, 10.0, -1.0)
        nodes[f"acom_{side}"] = p(s * 1.5, -15.0, 2.0)

        def seg(
            name: str,
            control: list[str | np.ndarray],
            radius: tuple[float, float],
            parent: str | None,
            *,
            clip: bool = False,
            start_fraction: float | None = None,
            relative: bool = False,
            _side: str = side,
            _calibre: float = calibre,
        ) -> None:
            segments.append(
                _Segment(
                    name=f"{name}_{_side}",
                    side=_side,
                    control=[c if isinstance(c, np.ndarray) else f"{c}_{_side}" for c in control],
                    radius_mm=(radius[0] * _calibre, radius[1] * _calibre),
                    parent=parent if parent in (None, "basilar_artery") else f"{parent}_{_side}",
                    clip_to_brain=clip,
                    start_fraction=start_fraction,
                    relative=relative,
                )
            )

        seg(
            "internal_carotid_artery",
            ["ica_entry", q(16.5, -8.0, -16.0), q(15.0, -8.0, -7.0), "ica_t"],
            (2.2, 2.0),
            None,
        )
        seg(
            "middle_cerebral_artery_m1",
            ["ica_t", q(20.0, -5.0, 1.0), q(27.0, -8.0, 2.0), "mca_bif"],
            (1.5, 1.35),
            "internal_carotid_artery",
        )
        seg(
            "middle_cerebral_artery_m2_superior",
            ["mca_bif", q(37.0, -8.0, 7.0), q(39.0, -4.0, 15.0), q(40.0, 0.0, 25.0), "m2s_end"],
            (1.1, 0.9),
            "middle_cerebral_artery_m1",
        )
        seg(
            "middle_cerebral_artery_m2_inferior",
            ["mca_bif", q(38.0, -5.0, 4.0), q(41.0, 3.0, 8.0), q(43.0, 12.0, 13.0), "m2i_end"],
            (1.0, 0.85),
            "middle_cerebral_artery_m1",
        )
        seg(
            "anterior_cerebral_artery_a1",
            ["ica_t", q(8.0, -10.0, 1.0), "acom"],
            (1.1, 1.0),
            "internal_carotid_artery",
        )
        seg(
            "anterior_cerebral_artery_a2",
            [
                "acom",
                p(s * 2.0, -22.0, 10.0),
                p(s * 2.5, -29.0, 22.0),
                p(s * 3.0, -26.0, 36.0),
                p(s * 3.0, -12.0, 48.0),
                p(s * 3.0, 8.0, 56.0),
            ],
            (1.0, 0.8),
            "anterior_cerebral_artery_a1",
            clip=True,
        )
        seg(
            "posterior_cerebral_artery_p1",
            ["p1p2"],
            (1.1, 1.05),
            "basilar_artery",
            start_fraction=1.0,
        )
        seg(
            "posterior_cerebral_artery_p2",
            [
                "p1p2",
                q(14.0, 16.0, 0.0),
                q(21.0, 27.0, 2.0),
                q(24.0, 42.0, 5.0),
                q(21.0, 57.0, 8.0),
                q(15.0, 72.0, 12.0),
            ],
            (1.05, 0.75),
            "posterior_cerebral_artery_p1",
            clip=True,
        )
        seg(
            "posterior_communicating_artery",
            [q(10.0, 4.0, -1.0), "p1p2"],
            (0.6, 0.6),
            "internal_carotid_artery",
            start_fraction=0.85,
        )
        seg(
            "anterior_temporal_artery",
            [q(33.0, -14.0, -6.0), q(40.0, -14.0, -14.0)],
            (0.7, 0.5),
            "middle_cerebral_artery_m1",
            clip=True,
            start_fraction=0.55,
        )
        for division, post_range, sup_range in (
            ("superior", (-0.8, 0.5), (0.3, 0.9)),
            ("inferior", (-0.2, 0.9), (-0.3, 0.4)),
        ):
            count = int(rng.integers(2, 4))
            draws["sides"][side][f"cortical_{division}"] = count
            for index in range(count):
                direction = np.array(
                    [1.0, rng.uniform(*post_range), rng.uniform(*sup_range)], dtype=np.float64
                )
                direction /= np.linalg.norm(direction)
                length = float(rng.uniform(22.0, 36.0))
                seg(
                    f"middle_cerebral_artery_cortical_{division}_{index + 1}",
                    [direction * length * 0.5 + rng.normal(0.0, 3.0, 3), direction * length],
                    (0.75, 0.5),
                    f"middle_cerebral_artery_m2_{division}",
                    clip=True,
                    start_fraction=float(rng.uniform(0.55, 1.0)),
                    relative=True,
                )
    segments.insert(
        0,
        _Segment(
            "basilar_artery",
            "midline",
            ["basilar_low", p(0.0, 13.0, -16.0), "basilar_tip"],
            (1.7, 1.5),
            None,
        ),
    )
    segments.append(
        _Segment(
            "anterior_communicating_artery",
            "midline",
            ["acom_right", "acom_left"],
            (0.7, 0.7),
            "anterior_cerebral_artery_a1_right",
        )
    )
    return segments, nodes, draws


def _smooth_field(rng: np.random.Generator, amplitude_mm: float):
    """A smooth random displacement field: a sum of three random plane waves (mm)."""
    waves = []
    for _ in range(3):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        displacement = rng.normal(size=3)
        displacement *= rng.uniform(0.5, 1.0) * amplitude_mm / np.linalg.norm(displacement)
        wavelength = rng.uniform(50.0, 100.0)
        phase = rng.uniform(0.0, 2 * np.pi)
        waves.append((direction, displacement, wavelength, phase))

    def field_at(points: np.ndarray) -> np.ndarray:
        out = np.zeros_like(points)
        for direction, displacement, wavelength, phase in waves:
            out += (
                np.sin(2 * np.pi * (points @ direction) / wavelength + phase)[..., None]
                * displacement
            )
        return out

    return field_at
