"""Masks on a regular grid, for SEG readers that need one (dcmqi, hence 3D Slicer).

The node's default SEG has one frame per source image, at the source image's
position, so it lies exactly on the CT a viewer shows. On a series with a
gantry tilt or uneven slice spacing (the GE head: 18.5 degree tilt, 4 mm then
7 mm steps) those frames are sheared and unevenly spaced, and dcmqi's
``segimage2itkimage`` refuses the SEG ("Frame 0 origin ... is outside image
geometry"): it reconstructs one regular volume from the frame positions.

:func:`resample_to_regular_grid` puts the masks on the regular grid such
readers expect: the source's row and column directions and pixel spacing,
planes perpendicular to their normal, evenly spaced by the smallest source
step, from the first source plane to the last. Each new plane takes the
nearest source plane (nearest neighbour along the normal), moved in-plane by
the shear between the two planes' origins (rounded to whole pixels), so a
voxel keeps its patient position to within half a pixel in-plane and half a
step along the normal.

References
----------
DICOM PS3.3 C.7.6.2 Image Plane Module (Image Position and Orientation
Patient, Pixel Spacing); C.7.6.16.2.3 Plane Position Sequence, .1 Pixel
Measures, .4 Plane Orientation (the functional groups of the SEG);
dcmqi ``ImageSEGConverter`` (QIICR/dcmqi, reads a SEG into an ITK image of one
origin, spacing and direction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from dicom_node.errors import ResultBuildError


@dataclass(frozen=True)
class RegularGrid:
    """Masks resampled onto a regular grid, with the SEG geometry that describes it.

    Attributes
    ----------
    pixel_array : numpy.ndarray
        Shape (planes, rows, columns, segments), the dtype of the input.
    plane_positions : list of highdicom.PlanePositionSequence
        Image Position (Patient) of each plane, mm (LPS).
    plane_orientation : highdicom.PlaneOrientationSequence
        The source's Image Orientation (Patient).
    pixel_measures : highdicom.PixelMeasuresSequence
        Pixel spacing (mm) of the source; slice thickness and spacing between
        slices the grid step (mm).
    step_mm : float
        Distance between planes along the normal, mm.
    """

    pixel_array: np.ndarray
    plane_positions: list[hd.PlanePositionSequence]
    plane_orientation: hd.PlaneOrientationSequence
    pixel_measures: hd.PixelMeasuresSequence
    step_mm: float


def _shifted(plane: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``out[i, j] = plane[i + rows, j + columns]``, zero where that is outside."""
    out = np.zeros_like(plane)
    height, width = plane.shape[:2]
    src_r0, src_r1 = max(0, rows), min(height, height + rows)
    src_c0, src_c1 = max(0, columns), min(width, width + columns)
    if src_r0 >= src_r1 or src_c0 >= src_c1:
        return out
    out[src_r0 - rows : src_r1 - rows, src_c0 - columns : src_c1 - columns] = plane[
        src_r0:src_r1, src_c0:src_c1
    ]
    return out


def resample_to_regular_grid(
    source_images: Sequence[Dataset], pixel_array: np.ndarray, *, max_planes: int = 2000
) -> RegularGrid:
    """Resample per-source-image masks onto a regular, untilted grid (see the module docstring).

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        Single-frame images of one series, ``pixel_array[i]`` lying on
        ``source_images[i]``; all with one Image Orientation (Patient) and
        Pixel Spacing.
    pixel_array : numpy.ndarray
        Shape (slices, rows, columns, segments), binary (bool or uint8).
    max_planes : int
        Refuse grids with more planes than this (a step of almost zero).

    Returns
    -------
    RegularGrid
        The resampled masks and the geometry for highdicom's Segmentation.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the images lack position or orientation, differ in orientation or
        pixel spacing, two share a position along the normal, or the grid
        would exceed ``max_planes``.
    """
    if pixel_array.ndim != 4 or pixel_array.shape[0] != len(source_images):
        raise ResultBuildError(
            f"masks of shape {pixel_array.shape} do not match {len(source_images)} source images"
        )
    try:
        orientation = np.array([float(v) for v in source_images[0].ImageOrientationPatient])
        spacing = [float(v) for v in source_images[0].PixelSpacing]
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in source_images])
    except (AttributeError, TypeError, ValueError) as err:
        raise ResultBuildError(f"the source images have no usable plane geometry: {err}") from err
    for ds in source_images[1:]:
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], orientation, atol=1e-4):
            raise ResultBuildError("the source images differ in Image Orientation (Patient)")
        if not np.allclose([float(v) for v in ds.PixelSpacing], spacing, atol=1e-4):
            raise ResultBuildError("the source images differ in Pixel Spacing")
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    along = positions @ normal
    order = np.argsort(along)
    steps = np.diff(along[order])
    if steps.size and steps.min() < 1e-3:
        raise ResultBuildError("two source images share one position along the plane normal")
    step = (
        float(steps.min())
        if steps.size
        else max(float(source_images[0].get("SliceThickness", 1.0) or 1.0), 1e-3)
    )
    span = float(along[order][-1] - along[order][0])
    planes = int(round(span / step)) + 1
    if planes > max_planes:
        raise ResultBuildError(f"a regular grid would need {planes} planes (step {step:.3f} mm)")
    origin = positions[order[0]]
    row_spacing, column_spacing = spacing  # between rows (along col_dir), between columns
    out = np.zeros((planes, *pixel_array.shape[1:]), dtype=pixel_array.dtype)
    plane_positions = []
    for k in range(planes):
        target = origin + k * step * normal
        nearest = int(np.argmin(np.abs(along - (target @ normal))))
        offset = target - positions[nearest]
        shift_rows = int(round(float(offset @ col_dir) / row_spacing))
        shift_columns = int(round(float(offset @ row_dir) / column_spacing))
        out[k] = _shifted(pixel_array[nearest], shift_rows, shift_columns)
        plane_positions.append(
            hd.PlanePositionSequence(
                coordinate_system=hd.CoordinateSystemNames.PATIENT,
                image_position=[round(float(v), 4) for v in target],
            )
        )
    return RegularGrid(
        pixel_array=out,
        plane_positions=plane_positions,
        plane_orientation=hd.PlaneOrientationSequence(
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            image_orientation=[float(v) for v in orientation],
        ),
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=spacing,
            slice_thickness=round(step, 4),
            spacing_between_slices=round(step, 4),
        ),
        step_mm=step,
    )
