"""Synthetic CT angiograms drawn on a real head CT, with exact ground truth.

There is no public CT angiogram with vessel and occlusion ground truth in the
project's data, so tests and the evaluation of the ``cta`` pipeline draw one:
a procedural circle of Willis with its main branches is placed in a real
non-contrast head CT (``../shared/data/head-ct-ge``) and blended into the
pixels as contrast-filled tubes. Optionally one named segment is occluded.

What is drawn, per case (all seeded, so a seed always gives the same series):

* **Head pose.** The real head is moved in its slice planes (rotation about
  the slice normal, shift, isotropic scale), so that the midline and the
  circle of Willis are not at the same pixels in every case.
* **Arteries.** Internal carotid arteries (supraclinoid part to the
  terminus), middle cerebral arteries (M1; superior and inferior M2
  divisions; two or three cortical M3/M4 branches per division; the anterior
  temporal artery), anterior cerebral arteries (A1, anterior communicating
  artery, A2 to the pericallosal segment), basilar artery, posterior cerebral
  arteries (P1, P2) and posterior communicating arteries. Positions come from
  a template in an anatomical frame (left, posterior, superior; mm) anchored
  at the mid-sagittal plane and the suprasellar level of the head; every
  control point is moved by a random global transform, a smooth random
  displacement field and independent jitter, and calibres vary per side.
  Diameters are about 1-5 mm (ICA 4.4 mm, M1 3 mm, M2 2 mm, cortical 1.5 mm tapering
  to 1 mm, before the per-side and pose scaling of about +-15 %).
* **Contrast.** A lumen fully filled with contrast has one CT number per case
  (250-450 HU). Each slice integrates the tubes over its own thickness along
  the slice normal and over 2 x 2 sub-pixels (partial volume), the result is
  blurred in-plane by a 0.35 mm Gaussian (scanner point-spread), and noise
  with the slice's own measured high-pass SD is added inside the vessels.
* **Occlusion** (optional): one of ``"ICA-T"`` (carotid terminus: the distal
  ICA, the ipsilateral M1 and A1), ``"M1"`` (from a random point of the M1 to
  its end) or ``"M2"`` (one division, from a random point to its end), left
  or right. The occluded lumen holds unenhanced thrombus (40-55 HU); arteries
  downstream of it fill only through collaterals, at a random fraction
  (0-0.5) of the contrast enhancement.

Ground truth is kept on the source grid: the vessel mask (voxels at least
half filled with contrast-equivalent lumen: partial-volume fraction times
opacity at least 0.5, the half-maximum boundary a CTA reader sees), the
thrombus mask, the occlusion point in LPS mm, and every artery's centreline.

What is *not* drawn: veins and dural sinuses (which enhance on a real CTA),
the cavernous and petrous ICA, vertebral, cerebellar and small perforating
arteries, calcified plaque, streak artefacts, and any parenchymal change.
The series keeps the base scan's slices (4 then 7 mm on the GE head), which
is far coarser than a real CTA (0.5-1 mm).

References
----------
Osborn AG. Diagnostic Cerebral Angiography, 2nd ed. Lippincott Williams &
Wilkins; 1999 (course and calibre of the circle of Willis and its branches).
Rai AT, et al. Cerebrovascular geometry in the anterior circulation: an
analysis of diameter, length and the vessel taper. J Neurointerv Surg.
2013;5(4):371-375 (ICA/M1/M2 diameters). DICOM PS3.3 C.7.6.2 Image Plane
Module; PS3.3 C.8.2.1 CT Image Module; PS3.3 C.7.6.4 Contrast/Bolus Module.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import pydicom
from scipy import ndimage
from scipy.interpolate import CubicSpline

from dicom_node.imaging.masks import intracranial_mask
from dicom_node.imaging.midline import HeadFrame, estimate_midsagittal_plane, head_frame
from dicom_node.series.volume import CTVolume, load_ct_volume
from dicom_node.training.synthetic import _high_pass_sd, _unit_noise, _write_hu, with_new_uids

logger = logging.getLogger(__name__)

#: Series Description of a generated CT angiogram.
SYNTHETIC_CTA_SERIES_DESCRIPTION = "CTA HEAD (synthetic)"
#: Contrast/Bolus Agent (0018,0010) written into a generated CT angiogram.
SYNTHETIC_CONTRAST_AGENT = "IODINATED CONTRAST (SYNTHETIC)"
#: Occlusion sites the generator can draw.
OCCLUSION_SEGMENTS: tuple[str, ...] = ("ICA-T", "M1", "M2")
#: Sides, as the words used in reports (laterality).
SIDES: tuple[str, ...] = ("left", "right")
#: CT number (HU) range of a lumen fully filled with contrast.
CONTRAST_HU_RANGE = (250.0, 450.0)
#: Fraction of the contrast enhancement reached through collaterals downstream of an occlusion.
COLLATERAL_FRACTION_RANGE = (0.0, 0.5)
#: CT number (HU) range of unenhanced thrombus in the occluded lumen.
THROMBUS_HU_RANGE = (40.0, 55.0)
#: CT number (HU) of unenhanced blood, the zero of the contrast scale.
BLOOD_HU = 40.0
#: Arc-length step (mm) of the dense centreline samples.
CENTRELINE_STEP_MM = 0.25
#: Step (mm) of the sub-positions across the slice thickness.
THICKNESS_STEP_MM = 0.5
#: Gaussian sigma (mm) of the in-plane point-spread blur.
POINT_SPREAD_SIGMA_MM = 0.35
#: Fraction of the intracranial AP extent (from the front) at which the circle of Willis lies.
WILLIS_AP_FRACTION = 0.43
#: The circle of Willis lies at the lowest slice whose brain area reaches this fraction of the max.
WILLIS_LEVEL_AREA_FRACTION = 0.85


@dataclass(frozen=True, eq=False)
class Artery:
    """One drawn arterial segment.

    Parameters
    ----------
    name : str
        Clinical name with side, for example ``"middle_cerebral_artery_m1_left"``.
    side : str
        ``"left"``, ``"right"`` or ``"midline"``.
    centreline_mm : numpy.ndarray
        float64 array (n, 3): dense centreline samples in LPS mm, from the
        proximal to the distal end, about 0.25 mm apart.
    radius_mm : numpy.ndarray
        float64 array (n,): lumen radius at each sample in mm.
    opacity : numpy.ndarray
        float64 array (n,): 1 where the lumen is filled with contrast, the
        collateral fraction downstream of an occlusion, and 0 in thrombus.
    parent : str or None
        Name of the artery it branches from.
    """

    name: str
    side: str
    centreline_mm: np.ndarray
    radius_mm: np.ndarray
    opacity: np.ndarray
    parent: str | None

    @property
    def length_mm(self) -> float:
        """float: centreline length in mm."""
        return float(np.linalg.norm(np.diff(self.centreline_mm, axis=0), axis=1).sum())


@dataclass(frozen=True)
class OcclusionTruth:
    """Where the generator occluded an artery.

    Parameters
    ----------
    segment : str
        ``"ICA-T"``, ``"M1"`` or ``"M2"``.
    side : str
        ``"left"`` or ``"right"`` (patient side).
    artery : str
        Name of the artery holding the proximal end of the thrombus.
    point_mm : tuple of float
        Proximal end of the thrombus (where enhancement stops) in LPS mm.
    collateral_fraction : float
        Fraction of the contrast enhancement reached downstream.
    """

    segment: str
    side: str
    artery: str
    point_mm: tuple[float, float, float]
    collateral_fraction: float


@dataclass(frozen=True, eq=False)
class HeadLandmarks:
    """Where the circle of Willis goes in a base head CT; computed once per base series.

    Parameters
    ----------
    volume : CTVolume
        The base (non-contrast) head CT.
    brain_mask : numpy.ndarray
        Boolean intracranial mask (slices, rows, columns).
    frame : HeadFrame
        Anatomical frame at the estimated centre of the circle of Willis.
    """

    volume: CTVolume
    brain_mask: np.ndarray
    frame: HeadFrame


@dataclass(frozen=True, eq=False)
class SyntheticCTA:
    """A generated CT angiogram and its ground truth.

    Parameters
    ----------
    datasets : list of pydicom.Dataset
        The new series, in the input order: new UIDs (unless disabled),
        Contrast/Bolus Agent set, Series Description
        ``"CTA HEAD (synthetic)"``.
    vessel_mask : numpy.ndarray
        Boolean (slices, rows, columns), slices in
        :func:`~dicom_node.series.volume.load_ct_volume` order: voxels whose
        contrast-equivalent lumen fraction is at least 0.5.
    opacified_fraction : numpy.ndarray
        float32 (slices, rows, columns) in [0, 1]: partial-volume lumen
        fraction times opacity, before the point-spread blur.
    thrombus_mask : numpy.ndarray
        Boolean (slices, rows, columns): voxels at least a quarter filled
        with occluded lumen; all False without occlusion.
    sop_instance_uids : tuple of str
        SOP Instance UID of each mask slice (the new UIDs).
    arteries : tuple of Artery
        Every drawn segment.
    occlusion : OcclusionTruth or None
        The occlusion, None for a normal angiogram.
    contrast_hu : float
        CT number of a lumen fully filled with contrast.
    noise_hu : tuple of float
        SD (HU) of the noise added per slice (0 where nothing was drawn).
    willis_center_mm : tuple of float
        Centre of the circle of Willis (template origin after the head pose
        and deformation) in LPS mm.
    parameters : dict
        Seed and every random draw, JSON-serialisable.
    """

    datasets: list[pydicom.Dataset]
    vessel_mask: np.ndarray
    opacified_fraction: np.ndarray
    thrombus_mask: np.ndarray
    sop_instance_uids: tuple[str, ...]
    arteries: tuple[Artery, ...]
    occlusion: OcclusionTruth | None
    contrast_hu: float
    noise_hu: tuple[float, ...]
    willis_center_mm: tuple[float, float, float]
    parameters: dict = field(default_factory=dict)

    def artery(self, name: str) -> Artery:
        """Return the drawn artery called ``name``.

        Parameters
        ----------
        name : str
            For example ``"internal_carotid_artery_left"``.

        Returns
        -------
        Artery
            The segment.

        Raises
        ------
        KeyError
            If no artery has that name.
        """
        for artery in self.arteries:
            if artery.name == name:
                return artery
        raise KeyError(name)


# --------------------------------------------------------------------- landmarks
def locate_head_landmarks(volume: CTVolume) -> HeadLandmarks:
    """Estimate where a circle of Willis belongs in a non-contrast head CT.

    The mid-sagittal plane is fitted to the intracranial mask
    (:func:`~dicom_node.imaging.midline.estimate_midsagittal_plane`). The
    suprasellar level is taken as the lowest slice whose mask area reaches
    85 % of the largest one (above it the cerebrum is cut broadly, below it
    the middle cranial fossae narrow); on that slice the centre is placed on
    the mid-sagittal plane at 43 % of the mask's anterior-posterior extent
    from the front. These fractions were read off the GE head
    (``head-ct-ge``: suprasellar cistern on slice 12) and are only a
    heuristic for other heads.

    Parameters
    ----------
    volume : CTVolume
        The base head CT, axial (with or without gantry tilt).

    Returns
    -------
    HeadLandmarks
        The mask and the anatomical frame at the estimated centre.

    Raises
    ------
    ValueError
        If no intracranial region is found.

    References
    ----------
    Osborn AG. Diagnostic Cerebral Angiography. 1999 (circle of Willis in
    the suprasellar cistern).
    """
    brain = intracranial_mask(volume)
    if not brain.any():
        raise ValueError("no intracranial region in the base series")
    plane = estimate_midsagittal_plane(volume, brain)
    areas = brain.sum(axis=(1, 2))
    level = int(np.flatnonzero(areas >= WILLIS_LEVEL_AREA_FRACTION * areas.max())[0])
    provisional = head_frame(volume, plane, plane.point_mm)
    points = volume.patient_coordinates(level)[brain[level]]
    near_midline = np.abs(plane.signed_distance_mm(points)) < 5.0
    posterior = (points[near_midline] - plane.point_mm) @ provisional.posterior
    front, back = float(posterior.min()), float(posterior.max())
    slice_centre = points[near_midline].mean(axis=0)
    origin = (
        slice_centre
        + (
            (front + WILLIS_AP_FRACTION * (back - front))
            - (slice_centre - plane.point_mm) @ provisional.posterior
        )
        * provisional.posterior
    )
    origin = origin - plane.signed_distance_mm(origin) * plane.normal
    frame = head_frame(volume, plane, origin)
    logger.debug("circle of Willis placed at slice %d, %s mm", level, np.round(origin, 1).tolist())
    return HeadLandmarks(volume=volume, brain_mask=brain, frame=frame)


# ------------------------------------------------------------------ template
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


def _dense_centreline(control: np.ndarray) -> np.ndarray:
    """Sample a cubic spline through control points every ~0.25 mm (chord-length parameter)."""
    chords = np.linalg.norm(np.diff(control, axis=0), axis=1)
    keep = np.concatenate([[True], chords > 1e-6])
    control = control[keep]
    chords = chords[chords > 1e-6]
    if len(control) < 2:
        return control.copy()
    t = np.concatenate([[0.0], np.cumsum(chords)])
    count = max(int(math.ceil(t[-1] / CENTRELINE_STEP_MM)) + 1, 2)
    samples = np.linspace(0.0, t[-1], count)
    if len(control) == 2:
        return control[0] + (samples / t[-1])[:, None] * (control[1] - control[0])
    spline = CubicSpline(t, control, axis=0, bc_type="natural")
    return spline(samples)


def _arc_length(points: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


# ------------------------------------------------------------------ head pose
@dataclass(frozen=True)
class _HeadPose:
    """In-plane similarity applied to every slice about the same pixel (a smooth 3D warp)."""

    angle_rad: float
    scale: float
    shift_mm: tuple[float, float]
    centre_mm: tuple[float, float]

    def matrix_mm(self) -> np.ndarray:
        c, s = math.cos(self.angle_rad), math.sin(self.angle_rad)
        linear = self.scale * np.array([[c, -s], [s, c]])
        centre = np.asarray(self.centre_mm)
        out = np.eye(3)
        out[:2, :2] = linear
        out[:2, 2] = centre + np.asarray(self.shift_mm) - linear @ centre
        return out


def _stack_line(volume: CTVolume) -> tuple[np.ndarray, np.ndarray]:
    """Fit the line of Image Positions: IPP(w) = a + b w, w the position along the normal (mm)."""
    w = volume.slice_positions_mm
    design = np.stack([np.ones_like(w), w], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, volume.image_positions_mm, rcond=None)
    return coefficients[0], coefficients[1]


def _apply_pose_to_points(volume: CTVolume, pose: _HeadPose, points: np.ndarray) -> np.ndarray:
    """Map LPS points through the per-slice in-plane similarity (exact for sheared stacks)."""
    a, b = _stack_line(volume)
    w = points @ volume.normal
    origin = a + w[:, None] * b
    relative = points - origin
    along_row = relative @ volume.row_direction
    along_column = relative @ volume.column_direction
    matrix = pose.matrix_mm()
    new_row = matrix[0, 0] * along_row + matrix[0, 1] * along_column + matrix[0, 2]
    new_column = matrix[1, 0] * along_row + matrix[1, 1] * along_column + matrix[1, 2]
    return (
        origin
        + new_row[:, None] * volume.row_direction
        + new_column[:, None] * volume.column_direction
    )


def _warp_slices(volume: CTVolume, pose: _HeadPose) -> np.ndarray:
    """Apply the pose to every slice image (linear interpolation, padding value outside)."""
    row_mm, col_mm = volume.pixel_spacing_mm
    to_mm = np.diag([col_mm, row_mm, 1.0])
    matrix = np.linalg.inv(to_mm) @ pose.matrix_mm() @ to_mm
    rows, columns = volume.shape[1:]
    out = np.empty_like(volume.hu)
    for k in range(volume.shape[0]):
        out[k] = cv2.warpAffine(
            volume.hu[k],
            matrix[:2],
            (columns, rows),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=float(volume.hu[k].min()),
        )
    return out


# ------------------------------------------------------------------ rendering
def _render_fraction(
    volume: CTVolume, points: np.ndarray, radii: np.ndarray, slice_index: int
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Partial-volume fraction of a union of spheres in one slice, on its bounding box."""
    if len(points) == 0:
        return None
    k = slice_index
    thickness = volume.slice_thicknesses_mm[k] or float(volume.slice_spacing_mm[k])
    relative = points - volume.image_positions_mm[k]
    height = relative @ volume.normal
    near = np.abs(height) < radii + thickness / 2.0
    if not near.any():
        return None
    row_mm, col_mm = volume.pixel_spacing_mm
    height, radii = height[near], radii[near]
    rows_f = relative[near] @ volume.column_direction / row_mm
    cols_f = relative[near] @ volume.row_direction / col_mm
    margin_rows = float(radii.max()) / row_mm + 2
    margin_cols = float(radii.max()) / col_mm + 2
    _, n_rows, n_cols = volume.shape
    r_lo = max(int(math.floor(rows_f.min() - margin_rows)), 0)
    r_hi = min(int(math.ceil(rows_f.max() + margin_rows)) + 1, n_rows)
    c_lo = max(int(math.floor(cols_f.min() - margin_cols)), 0)
    c_hi = min(int(math.ceil(cols_f.max() + margin_cols)) + 1, n_cols)
    if r_lo >= r_hi or c_lo >= c_hi:
        return None
    samples = max(int(math.ceil(thickness / THICKNESS_STEP_MM)), 3)
    offsets = ((np.arange(samples) + 0.5) / samples - 0.5) * thickness
    shift = 3
    scale = 2 * (1 << shift)
    centre_x = np.rint((2.0 * (cols_f - c_lo) + 0.5) * (1 << shift)).astype(np.int64)
    centre_y = np.rint((2.0 * (rows_f - r_lo) + 0.5) * (1 << shift)).astype(np.int64)
    accumulated = np.zeros((2 * (r_hi - r_lo), 2 * (c_hi - c_lo)), dtype=np.float32)
    canvas = np.zeros(accumulated.shape, dtype=np.uint8)
    pixel_mm = 0.5 * (row_mm + col_mm)
    for offset in offsets:
        dz = height - offset
        inside = np.abs(dz) < radii
        if not inside.any():
            continue
        canvas[:] = 0
        in_plane = np.sqrt(radii[inside] ** 2 - dz[inside] ** 2) / pixel_mm
        for x, y, radius in zip(
            centre_x[inside],
            centre_y[inside],
            np.rint(in_plane * scale).astype(np.int64),
            strict=True,
        ):
            cv2.circle(canvas, (int(x), int(y)), int(radius), 1, -1, cv2.LINE_8, shift)
        accumulated += canvas
    fraction = accumulated.reshape(r_hi - r_lo, 2, c_hi - c_lo, 2).mean(axis=(1, 3)) / samples
    return fraction, (r_lo, r_hi, c_lo, c_hi)


def _render_group(volume: CTVolume, points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    fraction = np.zeros(volume.shape, dtype=np.float32)
    for k in range(volume.shape[0]):
        rendered = _render_fraction(volume, points, radii, k)
        if rendered is None:
            continue
        box, (r_lo, r_hi, c_lo, c_hi) = rendered
        fraction[k, r_lo:r_hi, c_lo:c_hi] = np.maximum(fraction[k, r_lo:r_hi, c_lo:c_hi], box)
    return fraction


# ------------------------------------------------------------------ generator
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


def generate_synthetic_cta(
    datasets: Sequence[pydicom.Dataset],
    *,
    seed: int,
    occlusion: str | None = None,
    side: str | None = None,
    contrast_hu: float | None = None,
    collateral_fraction: float | None = None,
    noise_hu: float | None = None,
    deformation_mm: float = 2.5,
    head_pose: bool = True,
    landmarks: HeadLandmarks | None = None,
    new_uids: bool = True,
) -> SyntheticCTA:
    """Draw a contrast-enhanced circle of Willis into a head CT, optionally with an occlusion.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        A non-contrast, single-frame axial head CT series (pixel data
        included), in any order. Not modified.
    seed : int
        Seed of every random draw (anatomy, pose, contrast, noise, UIDs).
    occlusion : {None, "ICA-T", "M1", "M2"}
        Segment to occlude; None draws a normal angiogram.
    side : {None, "left", "right"}
        Side of the occlusion (patient side); None draws one at random.
        Ignored without ``occlusion``.
    contrast_hu : float or None
        CT number (HU) of a lumen fully filled with contrast; None draws one
        in 250-450 HU.
    collateral_fraction : float or None
        Fraction (0-1) of the enhancement reached downstream of the
        occlusion; None draws one in 0-0.5.
    noise_hu : float or None
        SD (HU) of the noise added in the vessels; None matches each slice's
        own noise (robust SD of its high-pass residual in tissue 0-80 HU).
    deformation_mm : float
        Amplitude (mm) of the smooth random displacement of the template.
    head_pose : bool
        Move the head in-plane (rotation within 6 deg, shift within 6 mm,
        scale 0.95-1.05) before drawing.
    landmarks : HeadLandmarks or None
        Landmarks of this base series from :func:`locate_head_landmarks`,
        to skip recomputing them for every case; computed when None.
    new_uids : bool
        Give the series new Study, Series, Frame of Reference and SOP
        Instance UIDs (:func:`~dicom_node.training.synthetic.with_new_uids`).
        Never send a series with ``new_uids=False`` anywhere.

    Returns
    -------
    SyntheticCTA
        The new series and its ground truth.

    Raises
    ------
    ValueError
        If ``occlusion`` or ``side`` is not a known value, or no
        intracranial region is found.
    SeriesLoadError
        If the datasets do not form a volume.

    References
    ----------
    Osborn AG. Diagnostic Cerebral Angiography. 1999; Rai AT, et al.
    J Neurointerv Surg. 2013;5(4):371-375; DICOM PS3.3 C.7.6.4
    Contrast/Bolus Module.
    """
    if occlusion is not None and occlusion not in OCCLUSION_SEGMENTS:
        raise ValueError(
            f"occlusion must be one of {OCCLUSION_SEGMENTS} or None, got {occlusion!r}"
        )
    if side is not None and side not in SIDES:
        raise ValueError(f"side must be one of {SIDES} or None, got {side!r}")
    rng = np.random.default_rng(np.random.SeedSequence([0xC7A, int(seed)]))
    copies = [copy.deepcopy(ds) for ds in datasets]
    if landmarks is None:
        landmarks = locate_head_landmarks(load_ct_volume(copies))
    volume = landmarks.volume
    if occlusion is not None and side is None:
        side = str(rng.choice(SIDES))
    if occlusion is None:
        side = None
    if contrast_hu is None:
        contrast_hu = float(rng.uniform(*CONTRAST_HU_RANGE))
    if collateral_fraction is None:
        collateral_fraction = float(rng.uniform(*COLLATERAL_FRACTION_RANGE))
    thrombus_hu = float(rng.uniform(*THROMBUS_HU_RANGE))
    draws: dict = {
        "seed": int(seed),
        "occlusion": occlusion,
        "side": side,
        "contrast_hu": round(contrast_hu, 1),
        "collateral_fraction": round(collateral_fraction, 3) if occlusion else None,
        "thrombus_hu": round(thrombus_hu, 1) if occlusion else None,
    }

    arteries, truth = _build_arteries(
        landmarks, rng, deformation_mm, occlusion, side, collateral_fraction, draws
    )
    hu = volume.hu
    pose = None
    if head_pose:
        row_mm, col_mm = volume.pixel_spacing_mm
        pose = _HeadPose(
            angle_rad=float(np.deg2rad(rng.uniform(-6.0, 6.0))),
            scale=float(rng.uniform(0.95, 1.05)),
            shift_mm=(float(rng.uniform(-6.0, 6.0)), float(rng.uniform(-6.0, 6.0))),
            centre_mm=(volume.shape[2] * col_mm / 2.0, volume.shape[1] * row_mm / 2.0),
        )
        draws["head_pose"] = {
            "rotation_deg": round(float(np.rad2deg(pose.angle_rad)), 2),
            "scale": round(pose.scale, 3),
            "shift_mm": [round(x, 2) for x in pose.shift_mm],
        }
        hu = _warp_slices(volume, pose)
        arteries = [
            Artery(
                a.name,
                a.side,
                _apply_pose_to_points(volume, pose, a.centreline_mm),
                a.radius_mm * pose.scale,
                a.opacity,
                a.parent,
            )
            for a in arteries
        ]
        if truth is not None:
            moved = _apply_pose_to_points(volume, pose, np.asarray([truth.point_mm]))[0]
            truth = OcclusionTruth(
                truth.segment,
                truth.side,
                truth.artery,
                (float(moved[0]), float(moved[1]), float(moved[2])),
                truth.collateral_fraction,
            )
    centre = landmarks.frame.origin_mm
    if pose is not None:
        centre = _apply_pose_to_points(volume, pose, centre[None, :])[0]

    groups: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        "full": ([], []),
        "collateral": ([], []),
        "thrombus": ([], []),
    }
    for artery in arteries:
        for key, selected in (
            ("full", artery.opacity >= 0.999),
            ("collateral", (artery.opacity > 0.0) & (artery.opacity < 0.999)),
            ("thrombus", artery.opacity <= 0.0),
        ):
            if selected.any():
                groups[key][0].append(artery.centreline_mm[selected])
                groups[key][1].append(artery.radius_mm[selected])
    fractions = {}
    for key, (points, radii) in groups.items():
        if points:
            fractions[key] = _render_group(volume, np.concatenate(points), np.concatenate(radii))
        else:
            fractions[key] = np.zeros(volume.shape, dtype=np.float32)
    full = fractions["full"]
    collateral = np.minimum(fractions["collateral"], 1.0 - full)
    thrombus = np.minimum(fractions["thrombus"], 1.0 - full - collateral)
    opacified = (full + collateral_fraction * collateral).astype(np.float32)

    index_of_uid = {str(ds.SOPInstanceUID): i for i, ds in enumerate(copies)}
    row_mm, col_mm = volume.pixel_spacing_mm
    blur = (POINT_SPREAD_SIGMA_MM / row_mm, POINT_SPREAD_SIGMA_MM / col_mm)
    noise_used = np.zeros(volume.shape[0])
    collateral_hu = BLOOD_HU + collateral_fraction * (contrast_hu - BLOOD_HU)
    for k in range(volume.shape[0]):
        touched = (full[k] > 0) | (collateral[k] > 0) | (thrombus[k] > 0)
        old = hu[k].astype(np.float64)
        if touched.any():
            f_full = ndimage.gaussian_filter(full[k].astype(np.float64), blur)
            f_coll = ndimage.gaussian_filter(collateral[k].astype(np.float64), blur)
            f_clot = ndimage.gaussian_filter(thrombus[k].astype(np.float64), blur)
            total = np.clip(f_full + f_coll + f_clot, 0.0, 1.0)
            if noise_hu is None:
                sd = _high_pass_sd(old, (old >= 0.0) & (old <= 80.0))
            else:
                sd = float(noise_hu)
            noise = _unit_noise(old.shape, rng) * sd if sd > 0 else np.zeros_like(old)
            noise_used[k] = sd
            new = (
                (1.0 - total) * old
                + f_full * (contrast_hu + noise)
                + f_coll * (collateral_hu + noise)
                + f_clot * (thrombus_hu + noise)
            )
        else:
            new = old
        if touched.any() or pose is not None:
            _write_hu(copies[index_of_uid[volume.sop_instance_uids[k]]], new)

    for ds in copies:
        _note_synthetic_cta(ds)
    sop_instance_uids = volume.sop_instance_uids
    if new_uids:
        uid_seed = int(np.random.SeedSequence([0xC7A, int(seed), 1]).generate_state(1)[0])
        copies = with_new_uids(copies, seed=uid_seed)
        new_uid_of = {
            str(old.SOPInstanceUID): str(new.SOPInstanceUID)
            for old, new in zip(datasets, copies, strict=True)
        }
        sop_instance_uids = tuple(new_uid_of[uid] for uid in volume.sop_instance_uids)

    vessel_mask = opacified >= 0.5
    thrombus_mask = thrombus >= 0.25
    logger.info(
        "synthetic CTA (seed %d): %s, contrast %.0f HU, vessel mask %.2f mL",
        seed,
        f"{occlusion} {side} occlusion" if occlusion else "no occlusion",
        contrast_hu,
        volume.mask_volume_ml(vessel_mask),
    )
    return SyntheticCTA(
        datasets=copies,
        vessel_mask=vessel_mask,
        opacified_fraction=opacified,
        thrombus_mask=thrombus_mask,
        sop_instance_uids=sop_instance_uids,
        arteries=tuple(arteries),
        occlusion=truth,
        contrast_hu=float(contrast_hu),
        noise_hu=tuple(float(x) for x in noise_used),
        willis_center_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
        parameters=draws,
    )


def _note_synthetic_cta(dataset: pydicom.Dataset) -> None:
    """Mark a generated angiogram: contrast attributes, description, derivation."""
    dataset.ContrastBolusAgent = SYNTHETIC_CONTRAST_AGENT
    dataset.ContrastBolusRoute = "IV"
    dataset.SeriesDescription = SYNTHETIC_CTA_SERIES_DESCRIPTION
    dataset.DerivationDescription = (
        "Synthetic arterial contrast drawn by dicom-node into a non-contrast CT; "
        "not a patient finding"
    )
