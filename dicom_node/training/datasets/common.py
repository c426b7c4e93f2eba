"""Output types and shared helpers of the ICH dataset readers.

:class:`LabelledVolume` (voxel labels) and :class:`LabelledSlices`
(slice-level labels), :data:`UNKNOWN_SUBTYPE_LABEL`, and the helpers every
reader uses: checked CSV reading and NIfTI loading with the reorientation
to the node's (slices, rows, columns) LPS axis order. The conventions are
described in :mod:`dicom_node.training.datasets`.

References
----------
NIfTI-1 data format, https://nifti.nimh.nih.gov/nifti-1 (qform/sform map
voxel indices to RAS+ mm; scl_slope/scl_inter rescale stored values).
DICOM PS3.3 C.7.6.2 Image Plane Module (LPS patient coordinates).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import nibabel as nib
import numpy as np
from nibabel import orientations

from dicom_node.errors import DatasetError
from dicom_node.imaging.ich_input import ICH_SUBTYPES, subtype_label
from dicom_node.series.volume import CTVolume

#: Label of voxels that are hemorrhage of an unknown subtype (ignored by a subtype loss).
UNKNOWN_SUBTYPE_LABEL: int = 255

#: Target axis codes (nibabel convention) of (slice, row, column): superior, posterior, left.
_SLICE_ROW_COLUMN_AXCODES: tuple[str, str, str] = ("S", "P", "L")
#: RAS+ (NIfTI) to LPS (DICOM) patient coordinates.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Largest distance of a label value from an integer before it is "not a label".
_LABEL_INTEGER_TOLERANCE = 1e-3


def _subtype(name: str) -> int:
    return subtype_label(f"{name} hemorrhage")


# ---------------------------------------------------------------- output types
@dataclass(frozen=True, eq=False)
class LabelledVolume:
    """One CT volume in HU with voxel labels in the model's subtype order.

    Parameters
    ----------
    case_id : str
        The dataset's own case name (file stem), for example ``"049"`` or
        ``"ID_0237f3c9_ID_40015688b9"``.
    hu : numpy.ndarray
        float32 array (slices, rows, columns) in Hounsfield units, stored
        values rescaled (NIfTI scl_slope/scl_inter). Axis order and direction
        as described in the module docstring.
    labels : numpy.ndarray
        uint8 array of the shape of ``hu``: 0 background, 1..5 the subtype
        ``ICH_SUBTYPES[label - 1]``, :data:`UNKNOWN_SUBTYPE_LABEL` hemorrhage
        of unknown subtype.
    slice_labels : numpy.ndarray
        bool array (slices, 5): subtype ``ICH_SUBTYPES[i]`` present on the
        slice, in :data:`ICH_SUBTYPES` order.
    affine : numpy.ndarray
        float64 4 x 4 matrix mapping (slice, row, column, 1) to LPS mm, in the
        convention of :attr:`dicom_node.series.volume.CTVolume.affine`.
    source : str
        The dataset (``"physionet-ct-ich"`` or ``"bhsd"``).

    Raises
    ------
    ValueError
        If the arrays disagree in shape or type.
    """

    case_id: str
    hu: np.ndarray
    labels: np.ndarray
    slice_labels: np.ndarray
    affine: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if self.hu.ndim != 3 or self.hu.dtype != np.float32:
            raise ValueError(f"hu must be float32 (slices, rows, columns), got {self.hu.shape}")
        if self.labels.shape != self.hu.shape or self.labels.dtype != np.uint8:
            raise ValueError(f"labels must be uint8 {self.hu.shape}, got {self.labels.shape}")
        if self.slice_labels.shape != (self.hu.shape[0], len(ICH_SUBTYPES)):
            raise ValueError(f"slice_labels must be ({self.hu.shape[0]}, {len(ICH_SUBTYPES)})")
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4 x 4, got {self.affine.shape}")

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """tuple of float: (row spacing, column spacing) in mm, as DICOM Pixel Spacing."""
        return (
            float(np.linalg.norm(self.affine[:3, 1])),
            float(np.linalg.norm(self.affine[:3, 2])),
        )

    @property
    def slice_spacing_mm(self) -> float:
        """float: distance in mm between the centres of neighbouring slices."""
        return float(np.linalg.norm(self.affine[:3, 0]))

    @property
    def any_hemorrhage(self) -> np.ndarray:
        """numpy.ndarray: bool (slices,), a slice has hemorrhage voxels or a subtype flag."""
        voxels = np.any(self.labels.reshape(self.labels.shape[0], -1) != 0, axis=1)
        return voxels | np.any(self.slice_labels, axis=1)


@dataclass(frozen=True, eq=False)
class LabelledSlices:
    """Slices with slice-level labels only: a CT series in HU, or 8-bit windowed images.

    Exactly one of ``volume`` (RSNA DICOM: HU and geometry) and ``windowed``
    (rendered JPEGs: no HU) is given.

    Parameters
    ----------
    case_id : str
        RSNA: the Series Instance UID; renders: the image name (``"ID_..."``).
    slice_ids : tuple of str
        The dataset's image name of each slice (``"ID_<hex>"``), in slice order.
    slice_labels : numpy.ndarray
        bool array (slices, 5) in :data:`ICH_SUBTYPES` order.
    any_hemorrhage : numpy.ndarray
        bool array (slices,): the dataset's own "any" label.
    source : str
        ``"rsna-ich"`` or ``"rsna-ich-renders"``.
    volume : CTVolume or None
        The series in HU with the geometry of every slice; slice order is
        ascending along the normal, never file name.
    windowed : mapping of str to numpy.ndarray or None
        Window folder name (for example ``"brain_window"``) to a uint8 array
        (slices, rows, columns) of display values 0-255. Hounsfield units
        cannot be recovered from these exactly: values outside the window are
        clipped, inside it the 80-ish HU of a brain window are quantised to
        256 levels, and JPEG compression adds error.

    Raises
    ------
    ValueError
        If both or neither of ``volume`` and ``windowed`` are given, or the
        shapes disagree.
    """

    case_id: str
    slice_ids: tuple[str, ...]
    slice_labels: np.ndarray
    any_hemorrhage: np.ndarray
    source: str
    volume: CTVolume | None = None
    windowed: Mapping[str, np.ndarray] | None = field(default=None)

    def __post_init__(self) -> None:
        if (self.volume is None) == (self.windowed is None):
            raise ValueError("give exactly one of volume and windowed")
        n = len(self.slice_ids)
        if self.slice_labels.shape != (n, len(ICH_SUBTYPES)) or self.slice_labels.dtype != bool:
            raise ValueError(f"slice_labels must be bool ({n}, {len(ICH_SUBTYPES)})")
        if self.any_hemorrhage.shape != (n,) or self.any_hemorrhage.dtype != bool:
            raise ValueError(f"any_hemorrhage must be bool ({n},)")
        if self.volume is not None and self.volume.shape[0] != n:
            raise ValueError(f"volume has {self.volume.shape[0]} slices for {n} slice ids")
        if self.windowed is not None:
            for name, images in self.windowed.items():
                if images.ndim != 3 or images.shape[0] != n or images.dtype != np.uint8:
                    raise ValueError(f"window {name!r} must be uint8 ({n}, rows, columns)")
            object.__setattr__(self, "windowed", MappingProxyType(dict(self.windowed)))

    @property
    def hu(self) -> np.ndarray | None:
        """numpy.ndarray or None: float32 (slices, rows, columns) in HU; None for renders."""
        return None if self.volume is None else self.volume.hu


# --------------------------------------------------------------------- helpers
def _require_file(path: Path, rule: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: rule '{rule}' broken: file not found")
    return path


def _read_csv_rows(path: Path, required: Sequence[str]) -> Iterator[dict[str, str]]:
    """Yield the rows of a CSV with a header, lazily; skip empty rows; check the columns.

    Each row maps stripped column names to stripped values, plus ``"__line__"``.
    """
    _require_file(path, "the label CSV exists")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            missing = [name for name in required if name not in header]
            if missing:
                raise DatasetError(
                    f"{path}: rule 'CSV has columns {', '.join(required)}' broken: "
                    f"missing {', '.join(missing)} (header: {', '.join(header)})"
                )
            for raw in reader:
                row = {
                    (key or "").strip(): (value or "").strip()
                    for key, value in raw.items()
                    if not isinstance(value, list)
                }
                if any(row.values()):
                    row["__line__"] = str(reader.line_num)
                    yield row
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{path}: cannot be read as CSV ({err})") from err


def _number(
    path: Path, row: Mapping[str, str], column: str, rule: str, valid: Callable[[float], bool]
) -> float:
    value = row[column]
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not valid(number):
        raise DatasetError(
            f"{path} line {row['__line__']}: rule '{column} {rule}' broken: {value!r}"
        )
    return number


def _flag(path: Path, row: Mapping[str, str], column: str) -> bool:
    return _number(path, row, column, "is 0 or 1", lambda n: n in (0.0, 1.0)) == 1.0


def _integer(path: Path, row: Mapping[str, str], column: str) -> int:
    return int(
        _number(path, row, column, "is an integer", lambda n: bool(np.isfinite(n)) and n == int(n))
    )


def _load_nifti(path: Path) -> nib.Nifti1Pair:
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for a bad file
        raise DatasetError(f"{path}: cannot be read as NIfTI ({err})") from err
    if not isinstance(image, nib.Nifti1Pair):  # NIfTI-1 or -2, single file or pair
        raise DatasetError(f"{path}: not a NIfTI file (nibabel reads it as {type(image).__name__})")
    if len(image.shape) != 3:
        raise DatasetError(f"{path}: rule 'a 3-D volume' broken: shape {image.shape}")
    return image


def _reorientation(image: nib.Nifti1Pair) -> tuple[np.ndarray, np.ndarray]:
    """Return the nibabel axis transform to (slice, row, column) and the LPS affine after it."""
    start = orientations.io_orientation(image.affine)
    transform = orientations.ornt_transform(
        start, orientations.axcodes2ornt(_SLICE_ROW_COLUMN_AXCODES)
    )
    ras = image.affine @ orientations.inv_ornt_aff(transform, image.shape)
    return transform, _RAS_TO_LPS @ ras


def _reoriented_hu(image: nib.Nifti1Pair, transform: np.ndarray, path: Path) -> np.ndarray:
    try:
        data = image.get_fdata(dtype=np.float32)
    except Exception as err:  # truncated or corrupt data block
        raise DatasetError(f"{path}: voxel data cannot be read ({err})") from err
    return np.ascontiguousarray(orientations.apply_orientation(data, transform), dtype=np.float32)


def _raw_labels(image: nib.Nifti1Pair, path: Path) -> np.ndarray:
    try:
        return np.asanyarray(image.dataobj)
    except Exception as err:
        raise DatasetError(f"{path}: voxel data cannot be read ({err})") from err


def _check_same_shape(
    mask_path: Path, mask: nib.Nifti1Pair, scan_path: Path, scan: nib.Nifti1Pair
) -> None:
    if tuple(mask.shape) != tuple(scan.shape):
        raise DatasetError(
            f"{mask_path}: rule 'label volume has the shape of its scan' broken: "
            f"{tuple(mask.shape)} vs {tuple(scan.shape)} in {scan_path}"
        )


def _slice_labels_from_volume(labels: np.ndarray) -> np.ndarray:
    flat = labels.reshape(labels.shape[0], -1)
    return np.stack([np.any(flat == i + 1, axis=1) for i in range(len(ICH_SUBTYPES))], axis=1)
