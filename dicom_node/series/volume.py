"""Assemble one CT series into a volume in Hounsfield units with its geometry.

Why not simply a :class:`highdicom.Volume`
------------------------------------------
A :class:`highdicom.Volume` is a voxel array plus one affine whose 3 x 3 part
must be orthogonal: every slice is the previous one moved by the same step,
perpendicular to the image plane. Real acute head CT often breaks both
assumptions:

* **Gantry tilt.** Sequential head scanners tilt the gantry (here +18.5 deg on
  the GE HiSpeed in ``shared/data/head-ct-ge``) to spare the orbits. The image
  plane is tilted, but the table, and so Image Position (Patient), moves
  along z only: each slice is shifted in-plane relative to the one below. The
  stack is *sheared*; no orthogonal affine describes it.
* **Irregular steps.** Protocols that use thin slices through the posterior
  fossa and thick ones above (4 mm then 7 mm on the GE head, with a 1.08 mm
  overlap at the junction) have no single slice spacing.

Resampling to a regular orthogonal grid would break the one-to-one mapping
from mask frames back to the source SOP instances that the SEG needs. So
:class:`CTVolume` keeps every slice on its own plane with its own Image
Position (Patient): :meth:`CTVolume.patient_coordinates` is exact for every
slice of any stack, and volumes are integrated per slice with the Cavalieri
estimator (:attr:`CTVolume.voxel_volume_ml`). :meth:`CTVolume.to_highdicom`
converts to a :class:`highdicom.Volume` when, and only when, the stack is
regular and unsheared.

Slices are ordered by their position along the slice normal, never by file
name or Instance Number.

References
----------
DICOM PS3.3 C.7.6.2 Image Plane Module (Image Position (Patient), Image
Orientation (Patient), Pixel Spacing); PS3.3 C.7.6.1 General Image Module;
PS3.3 C.8.2.1 CT Image Module (Rescale Intercept, Rescale Slope).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from dicom_node.errors import SeriesLoadError
from dicom_node.series.pixel_limits import PixelLimits, check_series_pixel_limits

if TYPE_CHECKING:
    import highdicom

logger = logging.getLogger(__name__)

#: Largest difference between two Image Orientation (Patient) values of one series.
ORIENTATION_TOLERANCE = 1e-4
#: Two slices closer than this along the normal are duplicates (mm).
DUPLICATE_POSITION_TOLERANCE_MM = 1e-3
#: Largest relative difference of Pixel Spacing values within one series.
PIXEL_SPACING_RELATIVE_TOLERANCE = 1e-4
#: Slice steps are "regular" when each step vector is within this fraction of the mean step.
REGULAR_STEP_RELATIVE_TOLERANCE = 0.01
#: The stack is sheared when the slice step leaves the normal by more than this (radians).
SHEAR_ANGLE_TOLERANCE_RAD = 1e-3
#: Fewest slices accepted as a volume.
MIN_SLICES = 3
#: Fixed text hashed with the Series Instance UID into a derived Frame of Reference UID.
FRAME_OF_REFERENCE_ENTROPY = "dicom-node frame of reference"


def read_datasets(paths: Sequence[Path]) -> list[pydicom.Dataset]:
    """Read DICOM files completely, pixel data included.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        Files to read, in any order; the order is kept in the result.

    Returns
    -------
    list of pydicom.Dataset
        One dataset per path, in the order of ``paths``.

    Raises
    ------
    SeriesLoadError
        If a file cannot be read or is not a DICOM Part 10 file; the message
        names the file.

    References
    ----------
    DICOM PS3.10 section 7 (DICOM File Format).
    """
    datasets: list[pydicom.Dataset] = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path))
        except InvalidDicomError as err:
            raise SeriesLoadError(f"{path}: not a DICOM file ({err})") from err
        except OSError as err:
            raise SeriesLoadError(f"{path}: cannot be read ({err})") from err
    return datasets


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
        (:func:`derived_frame_of_reference_uid`).
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
        builders then need :func:`source_images_for`.
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


def _float_values(dataset: pydicom.Dataset, keyword: str, count: int) -> np.ndarray:
    value = dataset.get(keyword)
    sop_instance_uid = dataset.get("SOPInstanceUID", "?")
    if value is None or value == "":
        raise SeriesLoadError(f"instance {sop_instance_uid} has no {keyword}")
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.shape != (count,):
        raise SeriesLoadError(
            f"instance {sop_instance_uid}: {keyword} must have {count} values, has {values.size}"
        )
    return values


def _hu_slice(dataset: pydicom.Dataset) -> np.ndarray:
    sop_instance_uid = dataset.get("SOPInstanceUID", "?")
    if "PixelData" not in dataset:
        raise SeriesLoadError(f"instance {sop_instance_uid} has no Pixel Data")
    if int(dataset.get("SamplesPerPixel", 1)) != 1:
        raise SeriesLoadError(f"instance {sop_instance_uid} is not monochrome (Samples per Pixel)")
    if int(dataset.get("NumberOfFrames", 1) or 1) != 1:
        raise SeriesLoadError(
            f"instance {sop_instance_uid} is multi-frame; only single-frame CT is supported"
        )
    slope = dataset.get("RescaleSlope")
    intercept = dataset.get("RescaleIntercept")
    if slope is None or intercept is None:
        raise SeriesLoadError(
            f"instance {sop_instance_uid} lacks Rescale Slope/Intercept; "
            "stored values cannot be converted to HU"
        )
    try:
        stored = dataset.pixel_array
    except Exception as err:  # decoder plugins raise many types
        raise SeriesLoadError(
            f"instance {sop_instance_uid}: pixel data cannot be decoded "
            f"({dataset.file_meta.get('TransferSyntaxUID', 'unknown transfer syntax')}): {err}"
        ) from err
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _single_value(datasets: Sequence[pydicom.Dataset], keyword: str) -> str:
    values = [str(ds.get(keyword, "") or "") for ds in datasets]
    empty = values.count("")
    if empty:
        raise SeriesLoadError(
            f"rule 'one {keyword}' broken: {empty} of {len(values)} instances lack {keyword}"
        )
    distinct = set(values)
    if len(distinct) != 1:
        raise SeriesLoadError(
            f"rule 'one {keyword}' broken: found {len(distinct)} distinct {keyword}s"
        )
    return distinct.pop()


def derived_frame_of_reference_uid(series_instance_uid: str) -> str:
    """Return the Frame of Reference UID the node derives for a series that has none.

    Deterministic: the same Series Instance UID always gives the same UID, so
    every result of a series (and every result version) shares one frame of
    reference.

    Parameters
    ----------
    series_instance_uid : str
        Series Instance UID of the source series.

    Returns
    -------
    str
        A UID under pydicom's root, made from a hash of a fixed text and
        ``series_instance_uid``.

    References
    ----------
    DICOM PS3.3 C.7.4.1 Frame of Reference Module; PS3.5 9.1 and B.2 (UIDs
    derived from a hash).
    """
    return str(
        pydicom.uid.generate_uid(entropy_srcs=[FRAME_OF_REFERENCE_ENTROPY, series_instance_uid])
    )


def _frame_of_reference(
    datasets: Sequence[pydicom.Dataset], series_instance_uid: str
) -> tuple[str, bool]:
    """The series' Frame of Reference UID and whether the node derived it."""
    values = [str(ds.get("FrameOfReferenceUID", "") or "") for ds in datasets]
    if all(value == "" for value in values):
        uid = derived_frame_of_reference_uid(series_instance_uid)
        logger.info(
            "series %s: no instance has a FrameOfReferenceUID; using %s, derived from the "
            "Series Instance UID",
            series_instance_uid,
            uid,
        )
        return uid, True
    return _single_value(datasets, "FrameOfReferenceUID"), False


def source_images_for(
    volume: CTVolume, datasets: Sequence[pydicom.Dataset]
) -> list[pydicom.Dataset]:
    """Return the source datasets of a volume in its slice order, fit for the result builders.

    When the volume's Frame of Reference UID was derived
    (:attr:`CTVolume.frame_of_reference_derived`), each dataset is replaced
    by a copy (a new dataset sharing the original's elements, pixel data
    included) that carries the derived Frame of Reference UID, so the SEG,
    SR and SC built from them are in that frame of reference. The given
    datasets, and the files they came from, are never modified.

    Parameters
    ----------
    volume : CTVolume
        The volume loaded from ``datasets``.
    datasets : sequence of pydicom.Dataset
        The instances the volume was loaded from, in any order.

    Returns
    -------
    list of pydicom.Dataset
        One dataset per slice, in the order of :attr:`CTVolume.sop_instance_uids`.

    Raises
    ------
    SeriesLoadError
        If a slice of the volume has no dataset among ``datasets``.

    References
    ----------
    DICOM PS3.3 C.7.4.1 Frame of Reference Module.
    """
    by_uid = {str(ds.get("SOPInstanceUID", "")): ds for ds in datasets}
    missing = [uid for uid in volume.sop_instance_uids if uid not in by_uid]
    if missing:
        raise SeriesLoadError(
            f"{len(missing)} slice(s) of series {volume.series_instance_uid} have no dataset, "
            f"for example {missing[0]}"
        )
    ordered = [by_uid[uid] for uid in volume.sop_instance_uids]
    if not volume.frame_of_reference_derived:
        return ordered
    copies = []
    for dataset in ordered:
        copy = pydicom.Dataset()
        if hasattr(dataset, "file_meta"):
            copy.file_meta = dataset.file_meta
        for element in dataset:
            copy.add(element)
        copy.FrameOfReferenceUID = volume.frame_of_reference_uid
        copies.append(copy)
    return copies


def _contrast_bolus_agent(datasets: Sequence[pydicom.Dataset]) -> str | None:
    """Contrast/Bolus Agent (0018,0010) of the first instance that names one."""
    for ds in datasets:
        value = str(ds.get("ContrastBolusAgent", "") or "").strip()
        if value:
            return value
    return None


def load_ct_volume(
    datasets: Sequence[pydicom.Dataset], *, pixel_limits: PixelLimits | None = None
) -> CTVolume:
    """Assemble single-frame CT instances of one series into a :class:`CTVolume`.

    Slices are sorted by the projection of Image Position (Patient) on the
    slice normal (never by file name or Instance Number). Gantry-tilted
    (sheared) and irregularly spaced stacks are accepted.

    A series in which *no* instance has a Frame of Reference UID (some
    anonymisers remove it, as in the CQ500 head CT of the shared data) gets
    one derived from its Series Instance UID
    (:func:`derived_frame_of_reference_uid`, logged at INFO), and the volume
    says so (:attr:`CTVolume.frame_of_reference_derived`). A series in which
    only some instances have one is refused.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        The instances of one series, pixel data included, in any order.
    pixel_limits : PixelLimits or None
        Caps on the decoded size, checked before any pixel is decoded
        (:func:`~dicom_node.series.pixel_limits.check_series_pixel_limits`);
        the defaults when None.

    Returns
    -------
    CTVolume
        The volume, slices ascending along the normal.

    Raises
    ------
    SeriesLoadError
        If a rule is broken; the message names it: fewer than 3 slices; more
        than one Study Instance UID, Series Instance UID or Frame of Reference
        UID, or some instances without one (how many is said); Image
        Orientation (Patient) differing by more than 1e-4; different
        Rows, Columns or Pixel Spacing; a duplicate SOP Instance UID or two
        slices at the same position; missing geometry, rescale or pixel data;
        pixel data that cannot be decoded (the SOP Instance UID is named);
        pixel data that would decode beyond ``pixel_limits``.

    References
    ----------
    DICOM PS3.3 C.7.6.2 Image Plane Module; PS3.3 C.8.2.1 CT Image Module;
    PS3.5 section 8 (encapsulated transfer syntaxes are decoded through
    pydicom's pixel data handlers).
    """
    if len(datasets) < MIN_SLICES:
        raise SeriesLoadError(
            f"rule 'at least {MIN_SLICES} slices' broken: series has {len(datasets)}"
        )
    study_instance_uid = _single_value(datasets, "StudyInstanceUID")
    series_instance_uid = _single_value(datasets, "SeriesInstanceUID")
    frame_of_reference_uid, frame_of_reference_derived = _frame_of_reference(
        datasets, series_instance_uid
    )

    sop_instance_uids = [str(ds.get("SOPInstanceUID", "")) for ds in datasets]
    if "" in sop_instance_uids:
        raise SeriesLoadError("rule 'every instance has a SOP Instance UID' broken")
    seen: set[str] = set()
    for uid in sop_instance_uids:
        if uid in seen:
            raise SeriesLoadError(f"rule 'no duplicate instances' broken: {uid} appears twice")
        seen.add(uid)

    orientation = _float_values(datasets[0], "ImageOrientationPatient", 6)
    spacing = _float_values(datasets[0], "PixelSpacing", 2)
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    positions = np.empty((len(datasets), 3), dtype=np.float64)
    for i, ds in enumerate(datasets):
        uid = sop_instance_uids[i]
        other = _float_values(ds, "ImageOrientationPatient", 6)
        if np.max(np.abs(other - orientation)) > ORIENTATION_TOLERANCE:
            raise SeriesLoadError(
                f"rule 'one Image Orientation (Patient)' broken: instance {uid} has "
                f"{other.round(5).tolist()}, first instance {orientation.round(5).tolist()}"
            )
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise SeriesLoadError(
                f"rule 'one Rows/Columns' broken: instance {uid} is {ds.Rows}x{ds.Columns}, "
                f"first instance {rows}x{columns}"
            )
        other_spacing = _float_values(ds, "PixelSpacing", 2)
        if np.any(np.abs(other_spacing - spacing) > PIXEL_SPACING_RELATIVE_TOLERANCE * spacing):
            raise SeriesLoadError(
                f"rule 'one Pixel Spacing' broken: instance {uid} has {other_spacing.tolist()}, "
                f"first instance {spacing.tolist()}"
            )
        positions[i] = _float_values(ds, "ImagePositionPatient", 3)

    row_direction, column_direction = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(row_direction) - 1.0) > 1e-3
        or abs(np.linalg.norm(column_direction) - 1.0) > 1e-3
        or abs(float(row_direction @ column_direction)) > 1e-3
    ):
        raise SeriesLoadError(
            "rule 'Image Orientation (Patient) is two orthogonal unit vectors' broken: "
            f"{orientation.round(5).tolist()}"
        )
    normal = np.cross(row_direction, column_direction)
    normal /= np.linalg.norm(normal)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    sorted_along = along[order]
    gaps = np.diff(sorted_along)
    duplicate = np.flatnonzero(gaps < DUPLICATE_POSITION_TOLERANCE_MM)
    if duplicate.size:
        a, b = order[duplicate[0]], order[duplicate[0] + 1]
        raise SeriesLoadError(
            "rule 'no two slices at the same position' broken: instances "
            f"{sop_instance_uids[a]} and {sop_instance_uids[b]} are both at "
            f"{sorted_along[duplicate[0]]:.3f} mm along the normal"
        )

    check_series_pixel_limits(datasets, pixel_limits or PixelLimits())  # before decoding
    hu = np.empty((len(datasets), rows, columns), dtype=np.float32)
    for k, i in enumerate(order):
        hu[k] = _hu_slice(datasets[i])

    thicknesses: list[float | None] = []
    for i in order:
        value = datasets[i].get("SliceThickness")
        thicknesses.append(float(value) if value not in (None, "") else None)
    distinct = set(thicknesses)
    slice_thickness_mm = thicknesses[0] if len(distinct) == 1 else None

    volume = CTVolume(
        hu=hu,
        sop_instance_uids=tuple(sop_instance_uids[i] for i in order),
        image_positions_mm=positions[order],
        image_orientation=orientation,
        pixel_spacing_mm=(float(spacing[0]), float(spacing[1])),
        slice_thickness_mm=slice_thickness_mm,
        frame_of_reference_uid=frame_of_reference_uid,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        slice_thicknesses_mm=tuple(thicknesses),
        frame_of_reference_derived=frame_of_reference_derived,
        contrast_bolus_agent=_contrast_bolus_agent(datasets),
    )
    logger.debug(
        "loaded series %s: %d slices %dx%d, regular=%s, sheared=%s",
        series_instance_uid,
        len(datasets),
        rows,
        columns,
        volume.is_regular,
        volume.is_sheared,
    )
    return volume
