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

This module reads, checks and assembles the datasets
(:func:`load_ct_volume`); the :class:`CTVolume` type itself is in
:mod:`dicom_node.series.ct_volume` and is exported from here as before.

References
----------
DICOM PS3.3 C.7.6.2 Image Plane Module (Image Position (Patient), Image
Orientation (Patient), Pixel Spacing); PS3.3 C.7.6.1 General Image Module;
PS3.3 C.8.2.1 CT Image Module (Rescale Intercept, Rescale Slope).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from dicom_node.errors import SeriesLoadError
from dicom_node.series.ct_volume import (
    REGULAR_STEP_RELATIVE_TOLERANCE,
    SHEAR_ANGLE_TOLERANCE_RAD,
    CTVolume,
)
from dicom_node.series.pixel_limits import PixelLimits, check_series_pixel_limits

__all__ = [
    "DUPLICATE_POSITION_TOLERANCE_MM",
    "FRAME_OF_REFERENCE_ENTROPY",
    "MIN_SLICES",
    "ORIENTATION_TOLERANCE",
    "PIXEL_SPACING_RELATIVE_TOLERANCE",
    "REGULAR_STEP_RELATIVE_TOLERANCE",
    "SHEAR_ANGLE_TOLERANCE_RAD",
    "CTVolume",
    "derived_frame_of_reference_uid",
    "load_ct_volume",
    "read_datasets",
    "source_images_for",
]

logger = logging.getLogger(__name__)

#: Largest difference between two Image Orientation (Patient) values of one series.
ORIENTATION_TOLERANCE = 1e-4
#: Two slices closer than this along the normal are duplicates (mm).
DUPLICATE_POSITION_TOLERANCE_MM = 1e-3
#: Largest relative difference of Pixel Spacing values within one series.
PIXEL_SPACING_RELATIVE_TOLERANCE = 1e-4
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
