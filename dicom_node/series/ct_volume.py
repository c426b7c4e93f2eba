"""The :class:`CTVolume` type: a CT series in Hounsfield units with the geometry of every slice.

Holds the volume and its geometry: slice normal and positions, the per-slice
extent and voxel volumes of the Cavalieri estimator, the affine of a regular
stack, exact patient coordinates of any stack (sheared or irregular) and the
conversion to a :class:`highdicom.Volume`. Why a volume keeps every slice on its
own plane rather than being a :class:`highdicom.Volume` is said in
:mod:`dicom_node.series.volume`, which reads, checks and assembles the
datasets (:func:`~dicom_node.series.volume.load_ct_volume`) and still exports
this type; split from it (issue 14).

References
----------
DICOM PS3.3 C.7.6.2 Image Plane Module (Image Position (Patient), Image
Orientation (Patient), Pixel Spacing); PS3.3 C.8.2.1 CT Image Module.
Cavalieri principle: Gundersen HJ, Jensen EB. The efficiency of systematic
sampling in stereology and its prediction. J Microsc. 1987;147:229-263.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dicom_node.errors import SeriesLoadError

if TYPE_CHECKING:
    import highdicom


#: Slice steps are "regular" when each step vector is within this fraction of the mean step.
REGULAR_STEP_RELATIVE_TOLERANCE = 0.01
#: The stack is sheared when the slice step leaves the normal by more than this (radians).
SHEAR_ANGLE_TOLERANCE_RAD = 1e-3


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT series as an array in HU plus the geometry of every slice.

    Slices are sorted by ascending position along :attr:`normal`. Arrays are
    not copied on access; treat them as read-only.

    Parameters
    ----------
    hu : numpy.ndarray
        float32 array of shape (slices, rows, columns) in Hounsfield units,
        Rescale Slope and Rescale Intercept applied per slice. Pixel padding
        values are kept as rescaled (for example -1500 HU outside the
        reconstruction circle on GE scanners).
    sop_instance_uids : tuple of str
        SOP Instance UID of each slice, in slice order.
    image_positions_mm : numpy.ndarray
        float64 array of shape (slices, 3): Image Position (Patient) of each
        slice, the centre of its first pixel, in LPS patient coordinates (mm).
    image_orientation : numpy.ndarray
        float64 array of shape (6,): Image Orientation (Patient), direction
        cosines of the first row then of the first column.
    pixel_spacing_mm : tuple of float
        (row spacing, column spacing) in mm, as in Pixel Spacing: the distance
        between the centres of adjacent rows, then of adjacent columns.
    slice_thickness_mm : float or None
        Slice Thickness when every slice has the same value, else None.
    frame_of_reference_uid : str
        Frame of Reference UID shared by every slice; when no slice has one,
        the UID derived from the Series Instance UID
        (:func:`~dicom_node.series.volume.derived_frame_of_reference_uid`).
    study_instance_uid : str
        Study Instance UID.
    series_instance_uid : str
        Series Instance UID.
    slice_thicknesses_mm : tuple of (float or None)
        Slice Thickness of each slice in slice order (None where absent);
        empty means ``slice_thickness_mm`` for every slice.
    frame_of_reference_derived : bool
        True when no source instance has a Frame of Reference UID and
        ``frame_of_reference_uid`` was derived by the node; the result
        builders then need
        :func:`~dicom_node.series.volume.source_images_for`.
    contrast_bolus_agent : str or None
        Contrast/Bolus Agent (0018,0010) when an instance names one (PS3.3
        C.7.6.4); pipelines for non-contrast CT refuse such a series.

    Raises
    ------
    ValueError
        If the arrays and tuples do not agree in shape with ``hu``.

    References
    ----------
    DICOM PS3.3 C.7.6.2 Image Plane Module; PS3.3 C.8.2.1 CT Image Module.
    """

    hu: np.ndarray
    sop_instance_uids: tuple[str, ...]
    image_positions_mm: np.ndarray
    image_orientation: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    slice_thickness_mm: float | None
    frame_of_reference_uid: str
    study_instance_uid: str
    series_instance_uid: str
    slice_thicknesses_mm: tuple[float | None, ...] = ()
    frame_of_reference_derived: bool = False
    contrast_bolus_agent: str | None = None

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"hu must be (slices, rows, columns), got shape {self.hu.shape}")
        slices = self.hu.shape[0]
        if len(self.sop_instance_uids) != slices:
            raise ValueError(f"{len(self.sop_instance_uids)} SOP Instance UIDs for {slices} slices")
        positions = np.asarray(self.image_positions_mm, dtype=np.float64)
        if positions.shape != (slices, 3):
            raise ValueError(f"image_positions_mm must be ({slices}, 3), got {positions.shape}")
        orientation = np.asarray(self.image_orientation, dtype=np.float64)
        if orientation.shape != (6,):
            raise ValueError(f"image_orientation must have 6 values, got {orientation.shape}")
        object.__setattr__(self, "image_positions_mm", positions)
        object.__setattr__(self, "image_orientation", orientation)
        if not self.slice_thicknesses_mm:
            object.__setattr__(self, "slice_thicknesses_mm", (self.slice_thickness_mm,) * slices)
        elif len(self.slice_thicknesses_mm) != slices:
            raise ValueError(
                f"{len(self.slice_thicknesses_mm)} slice thicknesses for {slices} slices"
            )

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, int, int]:
        """tuple of int: (slices, rows, columns)."""
        return tuple(int(n) for n in self.hu.shape)  # type: ignore[return-value]

    # --------------------------------------------------------------- geometry
    @property
    def row_direction(self) -> np.ndarray:
        """numpy.ndarray: unit vector (3,) along a row, direction of increasing column index.

        References
        ----------
        DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
        """
        return np.asarray(self.image_orientation[:3], dtype=np.float64)

    @property
    def column_direction(self) -> np.ndarray:
        """numpy.ndarray: unit vector (3,) along a column, direction of increasing row index.

        References
        ----------
        DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
        """
        return np.asarray(self.image_orientation[3:], dtype=np.float64)

    @property
    def normal(self) -> np.ndarray:
        """numpy.ndarray: unit slice normal (3,), cross(row direction, column direction).

        References
        ----------
        DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
        """
        n = np.cross(self.row_direction, self.column_direction)
        return n / np.linalg.norm(n)

    @property
    def slice_positions_mm(self) -> np.ndarray:
        """numpy.ndarray: position (slices,) of each slice along :attr:`normal` in mm, ascending.

        References
        ----------
        DICOM PS3.3 C.7.6.2 Image Plane Module.
        """
        return self.image_positions_mm @ self.normal

    @property
    def slice_steps_mm(self) -> np.ndarray:
        """numpy.ndarray: steps (slices - 1,) in mm between neighbouring slices, along the normal.

        References
        ----------
        DICOM PS3.3 C.7.6.2 Image Plane Module.
        """
        return np.diff(self.slice_positions_mm)

    @property
    def slice_spacing_mm(self) -> np.ndarray:
        """numpy.ndarray: extent (slices,) along the normal that each slice stands for, mm.

        Half the distance to each neighbour; an edge slice mirrors its one
        neighbour, so it counts one full step. The values sum to the distance
        between the first and last slice plus one step at each end, which is
        what the Cavalieri estimator integrates over.

        References
        ----------
        Cavalieri principle: Gundersen HJ, Jensen EB. The efficiency of
        systematic sampling in stereology and its prediction. J Microsc.
        1987;147:229-263.
        """
        steps = self.slice_steps_mm
        padded = np.concatenate([steps[:1], steps, steps[-1:]])
        return 0.5 * (padded[:-1] + padded[1:])

    @property
    def voxel_volume_ml(self) -> np.ndarray:
        """numpy.ndarray: volume (slices,) of one voxel of each slice in mL.

        Pixel area times :attr:`slice_spacing_mm`, divided by 1000 (1 mL =
        1000 mm^3). The in-plane pixel area times the extent along the normal
        is the voxel volume also in a sheared stack (shear preserves volume).

        References
        ----------
        Cavalieri principle (see :attr:`slice_spacing_mm`); DICOM PS3.3
        C.7.6.2.1.2 Pixel Spacing.
        """
        row_mm, col_mm = self.pixel_spacing_mm
        return row_mm * col_mm * self.slice_spacing_mm / 1000.0

    def mask_volume_ml(self, mask: np.ndarray) -> float:
        """Return the volume of a mask on this grid in mL.

        Parameters
        ----------
        mask : numpy.ndarray
            Boolean (or 0/1) array of shape (slices, rows, columns), slice axis
            in the order of :attr:`sop_instance_uids`.

        Returns
        -------
        float
            Sum over slices of the voxel count times :attr:`voxel_volume_ml`.

        Raises
        ------
        ValueError
            If ``mask`` does not have the volume's shape.

        References
        ----------
        Cavalieri principle (see :attr:`slice_spacing_mm`).
        """
        mask = np.asarray(mask)
        if mask.shape != self.hu.shape:
            raise ValueError(f"mask shape {mask.shape} differs from volume shape {self.hu.shape}")
        per_slice = np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1)
        return float(per_slice @ self.voxel_volume_ml)

    @property
    def mean_slice_step_mm(self) -> np.ndarray:
        """numpy.ndarray: mean vector (3,) between consecutive Image Positions, LPS mm.

        References
        ----------
        DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
        """
        n = self.image_positions_mm.shape[0]
        return (self.image_positions_mm[-1] - self.image_positions_mm[0]) / (n - 1)

    @property
    def is_regular(self) -> bool:
        """bool: whether every slice step equals the mean step within 1 %.

        Compares step *vectors* (differences of Image Position (Patient)), so
        a regular stack is exactly described by :attr:`affine`.

        References
        ----------
        DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
        """
        steps = np.diff(self.image_positions_mm, axis=0)
        mean = self.mean_slice_step_mm
        deviation = np.linalg.norm(steps - mean, axis=1)
        return bool(np.all(deviation <= REGULAR_STEP_RELATIVE_TOLERANCE * np.linalg.norm(mean)))

    @property
    def is_sheared(self) -> bool:
        """bool: whether the slice step leaves the normal (gantry tilt not reformatted).

        References
        ----------
        DICOM PS3.3 C.8.2.1.1.1 (Gantry/Detector Tilt does not change the
        meaning of Image Position and Image Orientation).
        """
        step = self.mean_slice_step_mm
        cosine = abs(float(step @ self.normal)) / float(np.linalg.norm(step))
        return bool(np.arccos(min(cosine, 1.0)) > SHEAR_ANGLE_TOLERANCE_RAD)

    @property
    def affine(self) -> np.ndarray:
        """numpy.ndarray: 4 x 4 matrix mapping (slice, row, column, 1) to LPS mm.

        Columns: the mean slice step vector, the column direction times the
        row spacing, the row direction times the column spacing, and the
        first slice's Image Position (Patient). Exact when :attr:`is_regular`;
        for an irregular stack it is built from the mean step
        (:attr:`mean_slice_step_mm`) and is only an approximation away from
        the first slice — use :meth:`patient_coordinates` for exact positions.
        For a sheared stack the 3 x 3 part is not orthogonal.

        References
        ----------
        DICOM PS3.3 C.7.6.2.1.1, equation C.7.6.2.1-1.
        """
        row_mm, col_mm = self.pixel_spacing_mm
        affine = np.eye(4)
        affine[:3, 0] = self.mean_slice_step_mm
        affine[:3, 1] = self.column_direction * row_mm
        affine[:3, 2] = self.row_direction * col_mm
        affine[:3, 3] = self.image_positions_mm[0]
        return affine

    def patient_coordinates(self, slice_index: int) -> np.ndarray:
        """Return LPS coordinates of every pixel centre of one slice.

        Uses that slice's own Image Position (Patient), so it is exact for
        irregular and sheared stacks.

        Parameters
        ----------
        slice_index : int
            Index along the slice axis (0 .. slices - 1; negative counts from the end).

        Returns
        -------
        numpy.ndarray
            float64 array of shape (rows, columns, 3): x, y, z in LPS mm.

        Raises
        ------
        IndexError
            If ``slice_index`` is out of range.

        References
        ----------
        DICOM PS3.3 C.7.6.2.1.1, equation C.7.6.2.1-1.
        """
        slices, rows, columns = self.hu.shape
        if not -slices <= slice_index < slices:
            raise IndexError(f"slice_index {slice_index} out of range for {slices} slices")
        return self.pixel_to_patient(
            slice_index, np.arange(rows)[:, None], np.arange(columns)[None, :]
        )

    def pixel_to_patient(self, slice_index: int, rows, columns) -> np.ndarray:
        """Return LPS coordinates of (fractional) pixel positions of one slice.

        Parameters
        ----------
        slice_index : int
            Index along the slice axis.
        rows, columns : array_like
            Row and column indices, fractional allowed, broadcast together
            to shape S.

        Returns
        -------
        numpy.ndarray
            float64 array of shape S + (3,): x, y, z in LPS mm.

        Raises
        ------
        IndexError
            If ``slice_index`` is out of range.

        References
        ----------
        DICOM PS3.3 C.7.6.2.1.1, equation C.7.6.2.1-1.
        """
        row_mm, col_mm = self.pixel_spacing_mm
        r = np.asarray(rows, dtype=np.float64)[..., None]
        c = np.asarray(columns, dtype=np.float64)[..., None]
        return (
            self.image_positions_mm[slice_index]
            + r * row_mm * self.column_direction
            + c * col_mm * self.row_direction
        )

    def nearest_voxel_indices(self, points_mm: np.ndarray) -> np.ndarray:
        """Map LPS points to the nearest voxel, slice by slice.

        A point belongs to the slice whose position along the normal is
        nearest; its row and column come from that slice's own Image Position
        (Patient), so the mapping is exact for sheared and irregular stacks.

        Parameters
        ----------
        points_mm : numpy.ndarray
            Array of shape (n, 3), LPS mm.

        Returns
        -------
        numpy.ndarray
            int64 array of shape (n, 3): (slice, row, column). Rows for points
            outside the volume (beyond half a step past an edge slice, or
            outside the image) are -1.

        References
        ----------
        DICOM PS3.3 C.7.6.2.1.1, equation C.7.6.2.1-1.
        """
        points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        positions = self.slice_positions_mm
        along = points @ self.normal
        k = np.clip(np.searchsorted(positions, along), 1, len(positions) - 1)
        k = np.where(np.abs(along - positions[k - 1]) <= np.abs(along - positions[k]), k - 1, k)
        relative = points - self.image_positions_mm[k]
        row_mm, col_mm = self.pixel_spacing_mm
        r = np.rint(relative @ self.column_direction / row_mm).astype(np.int64)
        c = np.rint(relative @ self.row_direction / col_mm).astype(np.int64)
        slices, rows, columns = self.hu.shape
        half = self.slice_spacing_mm / 2.0
        inside = (
            (along >= positions[0] - half[0])
            & (along <= positions[-1] + half[-1])
            & (r >= 0)
            & (r < rows)
            & (c >= 0)
            & (c < columns)
        )
        result = np.stack([k, r, c], axis=1)
        result[~inside] = -1
        return result

    def to_highdicom(self) -> highdicom.Volume:
        """Return the volume as a :class:`highdicom.Volume` (HU, float32).

        Returns
        -------
        highdicom.Volume
            Array (slices, rows, columns) with :attr:`affine`, coordinate
            system PATIENT and this Frame of Reference UID.

        Raises
        ------
        SeriesLoadError
            If the stack is irregular (no single slice step) or sheared
            (gantry tilt): a :class:`highdicom.Volume` needs one orthogonal
            affine, which cannot describe such a stack without resampling.

        References
        ----------
        DICOM PS3.3 C.7.6.2 Image Plane Module.
        """
        import highdicom

        if not self.is_regular:
            steps = ", ".join(f"{s:.2f}" for s in np.unique(np.round(self.slice_steps_mm, 2)))
            raise SeriesLoadError(
                "series has irregular slice steps along the normal "
                f"({steps} mm); a highdicom.Volume needs one constant step"
            )
        if self.is_sheared:
            raise SeriesLoadError(
                "series is sheared (gantry tilt: slice step not along the slice normal); "
                "a highdicom.Volume needs an orthogonal affine"
            )
        return highdicom.Volume(
            array=self.hu,
            affine=self.affine,
            coordinate_system="PATIENT",
            frame_of_reference_uid=self.frame_of_reference_uid,
        )
