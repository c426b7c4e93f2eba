"""Input of ``dicom-node analyze``: the instances of one series from a DICOM folder or a NIfTI file.

:func:`read_input` reads a DICOM folder (:func:`read_dicom_folder`: searched
recursively, sidecar documents and pictures skipped, one series chosen) or a
NIfTI-1/2 file (:func:`read_nifti`: converted, without resampling, to
in-memory CT Image instances in LPS with new UIDs) into a
:class:`SeriesInput`. The rules are stated in the module docstring of
:mod:`dicom_node.analyze`, which runs the analysis and re-exports every
public name of this module, split out of it.

References
----------
PS3.3 A.3 CT Image IOD, C.7.6.2 Image Plane Module (Image Position and
Orientation (Patient) in LPS); PS3.10 section 7 (DICOM File Format);
NIfTI-1 data format (nifti1.h: qform/sform, scl_slope, scl_inter, RAS+).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from dicom_node.config import Settings
from dicom_node.errors import SeriesLoadError
from dicom_node.series.volume import read_datasets

# The records keep the logger name they had before the split (log filters, operators' greps).
logger = logging.getLogger("dicom_node.analyze")

#: Suffixes of files in a DICOM folder that are not DICOM and are skipped (case-insensitive).
SIDECAR_SUFFIXES = frozenset(
    {
        ".csv",
        ".txt",
        ".md",
        ".json",
        ".xml",
        ".html",
        ".htm",
        ".pdf",
        ".log",
        ".ini",
        ".cfg",
        ".yaml",
        ".yml",
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".zip",
    }
)
#: Media Storage Directory Storage: a DICOMDIR indexes files, it is not an image.
MEDIA_STORAGE_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"
#: Series Description of CT images converted from NIfTI.
NIFTI_SERIES_DESCRIPTION = "converted from NIfTI by dicom-node"
#: HU given to voxels whose NIfTI value is not finite (air).
NON_FINITE_HU = -1024

# NIfTI xyzt spatial units -> mm.
_NIFTI_UNITS_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}
# LPS = diag(-1, -1, 1) RAS (PS3.3 C.7.6.2.1.1; nifti1.h).
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class SeriesInput:
    """The instances to analyse and where they came from.

    Parameters
    ----------
    path : pathlib.Path
        The folder or NIfTI file given.
    kind : {"dicom", "nifti"}
        What ``path`` is.
    datasets : list of pydicom.Dataset
        The instances of one series, pixel data included (in memory for a
        NIfTI conversion).
    ignored_files : list of str
        Files of a DICOM folder that were skipped (relative to ``path``).
    other_series : list of str
        Series Instance UIDs of the folder's other series (with
        ``series_instance_uid`` given).
    conversion : dict or None
        For a NIfTI file: what the conversion did (shape, voxel size, units,
        affine in LPS, the HU rule, a note that the UIDs are new).
    """

    path: Path
    kind: str
    datasets: list[Dataset]
    ignored_files: list[str] = field(default_factory=list)
    other_series: list[str] = field(default_factory=list)
    conversion: dict[str, Any] | None = None

    @property
    def series_instance_uid(self) -> str:
        """str: Series Instance UID of the instances."""
        return str(self.datasets[0].SeriesInstanceUID)

    @property
    def study_instance_uid(self) -> str:
        """str: Study Instance UID of the instances."""
        return str(self.datasets[0].StudyInstanceUID)


def is_nifti_path(path: Path) -> bool:
    """Return whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _candidate_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Files under ``folder`` to read as DICOM, and the sidecar files skipped."""
    candidates, ignored = [], []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() in SIDECAR_SUFFIXES:
            ignored.append(path)
        else:
            candidates.append(path)
    return candidates, ignored


def read_dicom_folder(folder: Path, *, series_instance_uid: str | None = None) -> SeriesInput:
    """Read the instances of one series from a folder (recursively).

    Parameters
    ----------
    folder : pathlib.Path
        Folder with the DICOM files of one series (or of several, with
        ``series_instance_uid``).
    series_instance_uid : str or None
        The series to take when the folder holds several.

    Returns
    -------
    SeriesInput
        The chosen series' datasets, pixel data included.

    Raises
    ------
    SeriesLoadError
        If a file that is not skipped is not a DICOM Part 10 file or cannot
        be read (the file is named), a DICOM file has no Series Instance UID,
        the folder has no DICOM file, it holds several series and none was
        chosen (they are listed), or the chosen series is not there.

    References
    ----------
    PS3.10 section 7 (DICOM File Format); PS3.3 C.7.3.1 General Series Module.
    """
    candidates, ignored = _candidate_files(folder)
    by_series: dict[str, list[tuple[Path, Dataset]]] = {}
    skipped = list(ignored)
    for path in candidates:  # headers only: a study folder may hold many series
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError as err:
            raise SeriesLoadError(
                f"{path}: not a DICOM file (rule 'every file of the folder is DICOM Part 10': "
                f"{err})"
            ) from err
        except OSError as err:
            raise SeriesLoadError(f"{path}: cannot be read ({err})") from err
        if str(header.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY_STORAGE:
            skipped.append(path)
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise SeriesLoadError(f"{path}: rule 'every instance has a SeriesInstanceUID' broken")
        by_series.setdefault(uid, []).append((path, header))
    if not by_series:
        raise SeriesLoadError(f"{folder}: no DICOM file found")
    if series_instance_uid is not None:
        if series_instance_uid not in by_series:
            raise SeriesLoadError(
                f"{folder}: no series {series_instance_uid}; found " + ", ".join(sorted(by_series))
            )
        chosen = series_instance_uid
    elif len(by_series) == 1:
        chosen = next(iter(by_series))
    else:
        listing = "; ".join(
            f"{uid} ({len(items)} instance(s), {items[0][1].get('Modality', '?')}, "
            f"series number {items[0][1].get('SeriesNumber', '?')})"
            for uid, items in sorted(by_series.items())
        )
        raise SeriesLoadError(
            f"{folder} holds {len(by_series)} series; choose one with --series-uid: {listing}"
        )
    return SeriesInput(
        path=folder,
        kind="dicom",
        datasets=read_datasets([path for path, _ in by_series[chosen]]),
        ignored_files=[str(p.relative_to(folder)) for p in skipped],
        other_series=sorted(uid for uid in by_series if uid != chosen),
    )


def _ds_values(values: Sequence[float] | np.ndarray) -> list[DSfloat]:
    """Decimal strings (at most 16 characters each) for float values."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def _ct_slice(
    stored: np.ndarray,
    *,
    position_mm: np.ndarray,
    orientation: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    slice_thickness_mm: float,
    instance_number: int,
    study_instance_uid: str,
    series_instance_uid: str,
    frame_of_reference_uid: str,
) -> Dataset:
    """One single-frame CT Image (int16 stored values, slope 1, intercept 0) in memory."""
    sop_instance_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    # Patient and General Study: nothing is known about the patient; Type 2 left empty.
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
        "Manufacturer",
        "PositionReferenceIndicator",
        "KVP",
        "AcquisitionNumber",
    ):
        setattr(ds, keyword, "")
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.SeriesDescription = NIFTI_SERIES_DESCRIPTION
    ds.InstanceNumber = instance_number
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.ImagePositionPatient = _ds_values(position_mm)
    ds.ImageOrientationPatient = _ds_values(orientation)
    ds.PixelSpacing = _ds_values(pixel_spacing_mm)
    ds.SliceThickness = DSfloat(slice_thickness_mm, auto_format=True)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in stored.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<i2").tobytes()
    return ds


def read_nifti(path: Path, *, max_series_bytes: int | None = None) -> SeriesInput:
    """Convert a NIfTI volume into in-memory single-frame CT images.

    Parameters
    ----------
    path : pathlib.Path
        A ``.nii`` or ``.nii.gz`` file with a 3D volume (trailing dimensions of
        size 1 are dropped). Values after ``scl_slope``/``scl_inter`` are HU.
    max_series_bytes : int or None
        Refuse a volume whose int16 slices would exceed this many bytes,
        before its voxels are read (``pixels.max_series_bytes``).

    Returns
    -------
    SeriesInput
        ``kind="nifti"``; one CT Image per slice (see the module docstring)
        and ``conversion`` saying what was done.

    Raises
    ------
    SeriesLoadError
        If the file cannot be read as NIfTI, is not 3D, has a singular affine
        or non-orthogonal in-plane axes, or is too large; the file is named.

    References
    ----------
    NIfTI-1 (nifti1.h); PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
    """
    import nibabel as nib
    from nibabel import orientations

    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for a bad file
        raise SeriesLoadError(f"{path}: not a readable NIfTI file ({err})") from err
    if not isinstance(image, nib.Nifti1Pair):  # NIfTI-1 or -2, single file or pair
        raise SeriesLoadError(
            f"{path}: not a NIfTI file (nibabel reads it as {type(image).__name__})"
        )
    shape = tuple(int(n) for n in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise SeriesLoadError(
            f"{path}: rule 'a NIfTI volume has 3 dimensions' broken: shape {image.shape}"
        )
    if max_series_bytes is not None and math.prod(shape) * 2 > max_series_bytes:
        raise SeriesLoadError(
            f"{path}: {shape} voxels decode to more than pixels.max_series_bytes "
            f"({max_series_bytes} bytes)"
        )
    spatial_unit = str(image.header.get_xyzt_units()[0])
    unit_mm = _NIFTI_UNITS_MM.get(spatial_unit, 1.0)
    affine_ras = np.asarray(image.affine, dtype=np.float64).copy()
    affine_ras[:3, :] *= unit_mm
    if not np.all(np.isfinite(affine_ras)) or abs(np.linalg.det(affine_ras[:3, :3])) < 1e-9:
        raise SeriesLoadError(f"{path}: rule 'the NIfTI affine is invertible' broken")
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
    except Exception as err:  # truncated or corrupt data
        raise SeriesLoadError(f"{path}: NIfTI voxels cannot be read ({err})") from err
    # Permute and flip (never resample) the voxel axes towards L, P, S.
    transform = orientations.ornt_transform(
        orientations.io_orientation(affine_ras), orientations.axcodes2ornt(("L", "P", "S"))
    )
    data = orientations.apply_orientation(data, transform)
    affine_ras = affine_ras @ orientations.inv_ornt_aff(transform, shape)
    affine = _RAS_TO_LPS @ affine_ras
    columns_vector, rows_vector, slice_step = affine[:3, 0], affine[:3, 1], affine[:3, 2]
    column_mm, row_mm = float(np.linalg.norm(columns_vector)), float(np.linalg.norm(rows_vector))
    row_direction, column_direction = columns_vector / column_mm, rows_vector / row_mm
    if abs(float(row_direction @ column_direction)) > 1e-3:
        raise SeriesLoadError(
            f"{path}: rule 'the in-plane voxel axes are orthogonal' broken (the affine shears "
            "the image plane; DICOM images need orthogonal rows and columns)"
        )
    normal = np.cross(row_direction, column_direction)
    thickness_mm = abs(float(slice_step @ normal))
    non_finite = int(np.count_nonzero(~np.isfinite(data)))
    data = np.where(np.isfinite(data), data, NON_FINITE_HU)
    stored = np.clip(np.rint(data), -32768, 32767).astype(np.int16)
    study_uid, series_uid, for_uid = (str(generate_uid()) for _ in range(3))
    orientation = np.concatenate([row_direction, column_direction])
    datasets = []
    for k in range(shape[2]):
        datasets.append(
            _ct_slice(
                stored[:, :, k].T,  # (rows = j, columns = i)
                position_mm=affine[:3, :3] @ np.array([0.0, 0.0, float(k)]) + affine[:3, 3],
                orientation=orientation,
                pixel_spacing_mm=(row_mm, column_mm),
                slice_thickness_mm=thickness_mm,
                instance_number=k + 1,
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                frame_of_reference_uid=for_uid,
            )
        )
    conversion = {
        "from": "NIfTI",
        "note": "synthetic CT headers with new Study, Series, Frame of Reference and SOP "
        "Instance UIDs; the results reference these converted instances",
        "shape_ijk": list(shape),
        "reoriented": not np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]),
        "spatial_unit": spatial_unit,
        "affine_lps": [[round(float(v), 6) for v in row] for row in affine],
        "hu": "voxel values after scl_slope/scl_inter, rounded to 1 HU",
        "non_finite_voxels": non_finite,
    }
    if non_finite:
        logger.warning("%s: %d non-finite voxel(s) set to %d HU", path, non_finite, NON_FINITE_HU)
    logger.info(
        "%s: NIfTI %s converted to %d CT slice(s) of series %s", path, shape, shape[2], series_uid
    )
    return SeriesInput(path=path, kind="nifti", datasets=datasets, conversion=conversion)


def read_input(
    path: Path, *, series_instance_uid: str | None = None, settings: Settings | None = None
) -> SeriesInput:
    """Read a DICOM folder or a NIfTI file (see :func:`read_dicom_folder`, :func:`read_nifti`).

    Parameters
    ----------
    path : pathlib.Path
        A folder, or a file whose name ends in ``.nii`` or ``.nii.gz``.
    series_instance_uid : str or None
        The series to take from a folder that holds several.
    settings : Settings or None
        ``pixels.max_series_bytes`` bounds a NIfTI volume; no bound when None.

    Returns
    -------
    SeriesInput
        The instances of one series.

    Raises
    ------
    SeriesLoadError
        If the path does not exist, is neither a folder nor a NIfTI file, or
        cannot be read (the file and the rule are named).
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_folder(path, series_instance_uid=series_instance_uid)
    if path.is_file() and is_nifti_path(path):
        limit = settings.pixels.max_series_bytes if settings is not None else None
        return read_nifti(path, max_series_bytes=limit)
    if not path.exists():
        raise SeriesLoadError(f"{path}: no such file or folder")
    raise SeriesLoadError(
        f"{path}: rule 'PATH is a DICOM folder or a NIfTI file (.nii, .nii.gz)' broken"
    )
