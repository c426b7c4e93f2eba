"""Geometry and rendering of the synthetic CT angiogram.

Dense centrelines (cubic splines through control points), the in-plane head
pose applied to points and slice images, and the partial-volume fraction of
the arterial tubes in each slice (integrated over the slice thickness and
2 x 2 sub-pixels).

References
----------
DICOM PS3.3 C.7.6.2 Image Plane Module (Image Position / Orientation,
Pixel Spacing); PS3.3 C.8.2.1 CT Image Module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.interpolate import CubicSpline

from dicom_node.series.volume import CTVolume
from dicom_node.training.synthetic_cta.model import CENTRELINE_STEP_MM, THICKNESS_STEP_MM


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
