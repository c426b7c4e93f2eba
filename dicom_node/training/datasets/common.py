"""Readers for the public intracranial hemorrhage (ICH) datasets, in their published layouts.

Users train and evaluate the node's ICH model on their own copies of these
datasets. Each reader takes the dataset root as downloaded, checks the layout
and the labels, and yields cases in one of two shapes:

* :class:`LabelledVolume` -- voxel labels (PhysioNet CT-ICH, BHSD);
* :class:`LabelledSlices` -- slice-level labels only (RSNA 2019, the
  "renders" JPEG derivative of RSNA 2019).

Conventions shared with the rest of the node
--------------------------------------------
* Arrays are (slices, rows, columns). For a NIfTI volume the voxel axes are
  permuted and flipped (never resampled) to the axis order of an axial DICOM
  image in LPS patient coordinates: columns run toward the patient's left
  (+x), rows toward posterior (+y) and slices ascend toward superior (+z),
  so the slice axis ascends along the slice normal, as in
  :class:`~dicom_node.series.volume.CTVolume`. For an oblique scan the nearest
  such axes are used and the affine keeps the exact geometry.
* Labels use the model's order (:data:`~dicom_node.imaging.ich_input.ICH_SUBTYPES`):
  0 background, 1 epidural, 2 subdural, 3 subarachnoid, 4 intraparenchymal,
  5 intraventricular, and :data:`UNKNOWN_SUBTYPE_LABEL` (255) for voxels that
  are hemorrhage whose subtype is not known (to be ignored by a subtype loss,
  counted as hemorrhage by a binary one).
* Paths are built only from the dataset root and from names that the
  dataset itself defines and that are checked against its naming rule.
  Nothing identifying a patient is logged (only counts and paths).

References
----------
Hssayeni MD, et al. Intracranial hemorrhage segmentation using a deep
convolutional model. Data 2020;5(1):14. PhysioNet dataset "Computed
Tomography Images for Intracranial Hemorrhage Detection and Segmentation",
https://physionet.org/content/ct-ich/1.3.1/, doi:10.13026/w8q8-ky94.

Wu B, et al. BHSD: A 3D Multi-class Brain Hemorrhage Segmentation Dataset.
MLMI 2023, LNCS 14348:147-156, doi:10.1007/978-3-031-45673-2_15;
https://github.com/White65534/BHSD.

Flanders AE, et al. Construction of a Machine Learning Dataset through
Collaboration: The RSNA 2019 Brain CT Hemorrhage Challenge. Radiol Artif
Intell 2020;2(3):e190211, doi:10.1148/ryai.2020190211;
https://www.kaggle.com/c/rsna-intracranial-hemorrhage-detection.

NIfTI-1 data format, https://nifti.nimh.nih.gov/nifti-1 (qform/sform map
voxel indices to RAS+ mm; scl_slope/scl_inter rescale stored values).
DICOM PS3.3 C.7.6.2 Image Plane Module (LPS patient coordinates).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import cv2
import nibabel as nib
import numpy as np
import pydicom
from nibabel import orientations
from pydicom.errors import InvalidDicomError

from dicom_node.errors import DatasetError, SeriesLoadError
from dicom_node.imaging.ich_input import ICH_SUBTYPES, subtype_label
from dicom_node.series.volume import CTVolume, load_ct_volume, read_datasets

logger = logging.getLogger(__name__)

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


# -------------------------------------------------------------- PhysioNet CT-ICH
#: Subtype columns of ``hemorrhage_diagnosis_raw_ct.csv``, by our subtype name.
PHYSIONET_SUBTYPE_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        "epidural": "Epidural",
        "subdural": "Subdural",
        "subarachnoid": "Subarachnoid",
        "intraparenchymal": "Intraparenchymal",
        "intraventricular": "Intraventricular",
    }
)
#: The subtype columns in :data:`ICH_SUBTYPES` order.
_PHYSIONET_FLAG_COLUMNS = tuple(
    PHYSIONET_SUBTYPE_COLUMNS[name.removesuffix(" hemorrhage")] for name in ICH_SUBTYPES
)
_PHYSIONET_COLUMNS = ("PatientNumber", "SliceNumber", *_PHYSIONET_FLAG_COLUMNS)
_PHYSIONET_NAME = re.compile(r"^(\d{3})\.nii(\.gz)?$")


def read_physionet_ct_ich(
    root: Path, *, csv_name: str = "hemorrhage_diagnosis_raw_ct.csv"
) -> Iterator[LabelledVolume]:
    """Read PhysioNet CT-ICH: NIfTI scans, any-hemorrhage masks and per-slice subtype flags.

    Layout (PhysioNet ct-ich 1.3.1, verified against the dataset README by
    Hssayeni and its ``split_raw_data.py``)::

        root/hemorrhage_diagnosis_raw_ct.csv   PatientNumber, SliceNumber, Intraventricular,
                                               Intraparenchymal, Subarachnoid, Epidural,
                                               Subdural, No_Hemorrhage, Fracture_Yes_No
        root/ct_scans/NNN.nii                  CT in HU, NNN = PatientNumber zero-padded to 3
        root/masks/NNN.nii                     hemorrhage mask on the same voxel grid (0/255)

    ``SliceNumber`` counts from 1 along the third NIfTI voxel axis (row i of a
    patient's CSV rows is ``scan[:, :, i]`` in ``split_raw_data.py``).

    The masks do not name the subtype. A mask voxel gets the subtype label of
    its slice when exactly one subtype column is 1 on that slice; otherwise
    (no subtype flagged, or several) it gets :data:`UNKNOWN_SUBTYPE_LABEL`.
    ``slice_labels`` are the CSV flags as given. ``.nii.gz`` files are read too.

    Parameters
    ----------
    root : pathlib.Path
        The unpacked dataset folder.
    csv_name : str
        Name of the per-slice diagnosis CSV inside ``root``.

    Yields
    ------
    LabelledVolume
        One per scan, in patient-number order; ``source`` is ``"physionet-ct-ich"``.

    Raises
    ------
    DatasetError
        The message names the file and the rule broken: the CSV or a folder is
        missing, the CSV lacks a column or has a value that is not 0/1 or an
        integer; a CSV patient has no scan, or a scan has no CSV rows or no
        mask; a SliceNumber outside 1..slices or given twice; a mask whose
        shape differs from its scan; a file that is not a 3-D NIfTI volume;
        a scan whose slice axis is not the axial (third) voxel axis.

    References
    ----------
    Hssayeni MD, et al. Data 2020;5(1):14, doi:10.3390/data5010014;
    https://physionet.org/content/ct-ich/1.3.1/ (doi:10.13026/w8q8-ky94).
    """
    root = Path(root)
    csv_path = root / csv_name
    rows = list(_read_csv_rows(csv_path, _PHYSIONET_COLUMNS))  # a few thousand rows
    scan_dir, mask_dir = root / "ct_scans", root / "masks"
    for folder in (scan_dir, mask_dir):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: rule 'the dataset has this folder' broken: not found")

    scans: dict[int, Path] = {}
    for path in sorted(scan_dir.iterdir()):
        match = _PHYSIONET_NAME.match(path.name)
        if match:
            scans.setdefault(int(match.group(1)), path)

    flags_by_patient: dict[int, dict[int, np.ndarray]] = {}
    for row in rows:
        patient = _integer(csv_path, row, "PatientNumber")
        slice_number = _integer(csv_path, row, "SliceNumber")
        flags = np.array([_flag(csv_path, row, column) for column in _PHYSIONET_FLAG_COLUMNS])
        per_slice = flags_by_patient.setdefault(patient, {})
        if slice_number in per_slice:
            raise DatasetError(
                f"{csv_path} line {row['__line__']}: rule 'one row per patient and slice' "
                f"broken: patient {patient} slice {slice_number} appears twice"
            )
        per_slice[slice_number] = flags
    for patient in sorted(flags_by_patient):
        if patient not in scans:
            raise DatasetError(
                f"{csv_path}: rule 'every CSV patient has a scan' broken: no "
                f"{scan_dir / f'{patient:03d}.nii'}"
            )
    logger.info("PhysioNet CT-ICH at %s: %d scans, %d CSV rows", root, len(scans), len(rows))

    for patient, scan_path in sorted(scans.items()):
        if patient not in flags_by_patient:
            raise DatasetError(
                f"{scan_path}: rule 'every scan has rows in {csv_name}' broken: "
                f"PatientNumber {patient} not found"
            )
        candidates = (
            mask_dir / scan_path.name,
            *(mask_dir / f"{patient:03d}{suffix}" for suffix in (".nii", ".nii.gz")),
        )
        mask_path = next((p for p in candidates if p.is_file()), candidates[0])
        _require_file(mask_path, "every scan has a mask")
        yield _physionet_case(
            scan_path, mask_path, csv_path, flags_by_patient[patient], case_id=f"{patient:03d}"
        )


def _physionet_case(
    scan_path: Path,
    mask_path: Path,
    csv_path: Path,
    flags_by_slice: Mapping[int, np.ndarray],
    *,
    case_id: str,
) -> LabelledVolume:
    scan = _load_nifti(scan_path)
    mask_image = _load_nifti(mask_path)
    _check_same_shape(mask_path, mask_image, scan_path, scan)
    transform, affine = _reorientation(scan)
    if int(transform[2, 0]) != 0:
        raise DatasetError(
            f"{scan_path}: rule 'the third voxel axis is the slice axis' broken: it is not "
            "the axial axis, so the per-slice labels of the CSV cannot be placed"
        )
    depth = scan.shape[2]
    flags = np.zeros((depth, len(ICH_SUBTYPES)), dtype=bool)
    for slice_number, row_flags in flags_by_slice.items():
        if not 1 <= slice_number <= depth:
            raise DatasetError(
                f"{csv_path}: rule 'SliceNumber within 1..{depth}' broken: patient {case_id} "
                f"slice {slice_number} ({scan_path} has {depth} slices)"
            )
        flags[slice_number - 1] = row_flags
    unlabelled = depth - len(flags_by_slice)
    if unlabelled:
        logger.warning("%s: %d of %d slices have no CSV row", scan_path, unlabelled, depth)

    hemorrhage = np.rint(_raw_labels(mask_image, mask_path).astype(np.float32)) != 0
    per_slice_label = np.full(depth, UNKNOWN_SUBTYPE_LABEL, dtype=np.uint8)
    single = flags.sum(axis=1) == 1
    per_slice_label[single] = np.argmax(flags[single], axis=1) + 1
    labels_ijk = np.where(hemorrhage, per_slice_label[np.newaxis, np.newaxis, :], 0)
    unknown_slices = int(np.count_nonzero(np.any(hemorrhage, axis=(0, 1)) & ~single))
    if unknown_slices:
        logger.info(
            "%s: %d slices with mask voxels of unknown subtype (label %d)",
            mask_path,
            unknown_slices,
            UNKNOWN_SUBTYPE_LABEL,
        )

    slice_flags = flags[::-1] if int(transform[2, 1]) == -1 else flags
    labels = orientations.apply_orientation(labels_ijk.astype(np.uint8), transform)
    return LabelledVolume(
        case_id=case_id,
        hu=_reoriented_hu(scan, transform, scan_path),
        labels=np.ascontiguousarray(labels, dtype=np.uint8),
        slice_labels=np.ascontiguousarray(slice_flags),
        affine=affine,
        source="physionet-ct-ich",
    )


# ------------------------------------------------------------------------ BHSD
#: BHSD label value -> our label value. BHSD: 1 epidural, 2 intraparenchymal,
#: 3 intraventricular, 4 subarachnoid, 5 subdural (``dataset.json`` of the BHSD repository).
BHSD_LABEL_TO_SUBTYPE_LABEL: Mapping[int, int] = MappingProxyType(
    {
        0: 0,
        1: _subtype("epidural"),
        2: _subtype("intraparenchymal"),
        3: _subtype("intraventricular"),
        4: _subtype("subarachnoid"),
        5: _subtype("subdural"),
    }
)
_BHSD_PAIRED_FOLDERS: tuple[tuple[str, str], ...] = (
    ("images", "ground truths"),  # label_192.zip as released
    ("imagesTr", "labelsTr"),  # nnU-Net layout named in the repository's dataset.json
    ("imagesTs", "labelsTs"),
)


def _nifti_stem(path: Path) -> str | None:
    for suffix in (".nii.gz", ".nii"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def read_bhsd(root: Path) -> Iterator[LabelledVolume]:
    """Read BHSD, the 3-D multi-class brain hemorrhage segmentation dataset.

    Layout of the pixel-labelled release ``label_192.zip`` (verified in the
    loaders of torch-em and other public code that read the release)::

        root/images/ID_<study>_ID_<series>.nii.gz          CT in HU
        root/ground truths/ID_<study>_ID_<series>.nii.gz   labels 0..5, same voxel grid

    ``root`` may also be the folder that contains ``label_192/``, or an
    nnU-Net layout ``imagesTr/`` + ``labelsTr/`` (and ``imagesTs/`` +
    ``labelsTs/``) as listed in the repository's ``dataset.json``.

    Label values (``dataset.json`` in https://github.com/White65534/BHSD):
    0 background, 1 epidural, 2 intraparenchymal, 3 intraventricular,
    4 subarachnoid, 5 subdural; remapped to :data:`ICH_SUBTYPES` order by
    :data:`BHSD_LABEL_TO_SUBTYPE_LABEL`. The unlabelled volumes of BHSD
    (slice-level only) are not read.

    Parameters
    ----------
    root : pathlib.Path
        The unpacked dataset folder.

    Yields
    ------
    LabelledVolume
        One per labelled volume, in file-name order; ``source`` is ``"bhsd"``;
        ``slice_labels`` are derived from the voxel labels.

    Raises
    ------
    DatasetError
        The message names the file and the rule broken: no image/label folder
        pair; an image without a label volume or the reverse; a label volume
        whose shape differs from its image; a label value that is not one of
        0..5 (or not an integer); a file that is not a 3-D NIfTI volume.

    References
    ----------
    Wu B, et al. BHSD: A 3D Multi-class Brain Hemorrhage Segmentation Dataset.
    MLMI 2023, doi:10.1007/978-3-031-45673-2_15; arXiv:2308.11298;
    https://github.com/White65534/BHSD (``dataset.json``).
    """
    root = Path(root)
    if (
        not any((root / images).is_dir() for images, _ in _BHSD_PAIRED_FOLDERS)
        and (root / "label_192").is_dir()
    ):
        root = root / "label_192"
    pairs: list[tuple[str, Path, Path]] = []
    for image_folder, label_folder in _BHSD_PAIRED_FOLDERS:
        image_dir, label_dir = root / image_folder, root / label_folder
        if not image_dir.is_dir():
            continue
        if not label_dir.is_dir():
            raise DatasetError(
                f"{label_dir}: rule 'images/ has its label folder' broken: not found"
            )
        images = {stem: p for p in sorted(image_dir.iterdir()) if (stem := _nifti_stem(p))}
        labels = {stem: p for p in sorted(label_dir.iterdir()) if (stem := _nifti_stem(p))}
        for stem in sorted(set(labels) - set(images)):
            raise DatasetError(
                f"{labels[stem]}: rule 'every label volume has an image' broken: "
                f"no {image_dir / labels[stem].name}"
            )
        for stem, image_path in sorted(images.items()):
            if stem not in labels:
                raise DatasetError(
                    f"{image_path}: rule 'every image has a label volume' broken: "
                    f"no {label_dir / image_path.name}"
                )
            pairs.append((stem, image_path, labels[stem]))
    if not pairs and not any((root / f).is_dir() for f, _ in _BHSD_PAIRED_FOLDERS):
        raise DatasetError(
            f"{root}: rule 'BHSD layout: images/ + ground truths/ (or imagesTr/ + labelsTr/)' "
            "broken: no image folder"
        )
    logger.info("BHSD at %s: %d labelled volumes", root, len(pairs))
    lookup = np.zeros(max(BHSD_LABEL_TO_SUBTYPE_LABEL) + 1, dtype=np.uint8)
    for value, ours in BHSD_LABEL_TO_SUBTYPE_LABEL.items():
        lookup[value] = ours
    for stem, image_path, label_path in pairs:
        image = _load_nifti(image_path)
        label_image = _load_nifti(label_path)
        _check_same_shape(label_path, label_image, image_path, image)
        raw = _raw_labels(label_image, label_path)
        values = np.unique(raw).astype(np.float64)
        rounded = np.rint(values)
        allowed = np.isin(rounded, list(BHSD_LABEL_TO_SUBTYPE_LABEL))
        bad = values[(np.abs(values - rounded) > _LABEL_INTEGER_TOLERANCE) | ~allowed]
        if bad.size:
            raise DatasetError(
                f"{label_path}: rule 'BHSD label values are 0-5' broken: found "
                f"{', '.join(f'{v:g}' for v in bad[:10])}"
            )
        remapped = lookup[np.rint(raw).astype(np.intp)]
        transform, affine = _reorientation(image)
        label_volume = np.ascontiguousarray(
            orientations.apply_orientation(remapped, transform), dtype=np.uint8
        )
        yield LabelledVolume(
            case_id=stem,
            hu=_reoriented_hu(image, transform, image_path),
            labels=label_volume,
            slice_labels=_slice_labels_from_volume(label_volume),
            affine=affine,
            source="bhsd",
        )


# ------------------------------------------------------------------------ RSNA
#: Subtype suffixes of the RSNA label CSV in :data:`ICH_SUBTYPES` order, then ``any``.
RSNA_SUBTYPES: tuple[str, ...] = tuple(name.removesuffix(" hemorrhage") for name in ICH_SUBTYPES)
_RSNA_ANY = "any"
_RSNA_IMAGE_ID = re.compile(r"^ID_[0-9a-fA-F]+$")
#: Images whose pixel data is known to be truncated in the RSNA 2019 release.
RSNA_KNOWN_CORRUPT: frozenset[str] = frozenset({"ID_6431af929"})


_RSNA_CSV_SUBTYPES = (*RSNA_SUBTYPES, _RSNA_ANY)
#: Bit of each RSNA CSV subtype in the per-image masks of :func:`_rsna_labels`.
_RSNA_BIT = {subtype: 1 << i for i, subtype in enumerate(_RSNA_CSV_SUBTYPES)}
_RSNA_ALL_BITS = (1 << len(_RSNA_CSV_SUBTYPES)) - 1


def _rsna_labels(csv_path: Path) -> dict[str, int]:
    """Image name -> bit mask of the subtypes labelled 1 (bits of :data:`_RSNA_BIT`).

    Bit masks, not dicts: the stage 2 CSV has 4.5 million rows for 750 000 images.
    """
    values: dict[str, int] = {}
    present: dict[str, int] = {}
    for row in _read_csv_rows(csv_path, ("ID", "Label")):
        image_id, _, subtype = row["ID"].rpartition("_")
        if not _RSNA_IMAGE_ID.match(image_id) or subtype not in _RSNA_BIT:
            raise DatasetError(
                f"{csv_path} line {row['__line__']}: rule 'ID is ID_<hex>_<subtype>' broken: "
                f"{row['ID'][:64]!r}"
            )
        bit = _RSNA_BIT[subtype]
        value = bit if _flag(csv_path, row, "Label") else 0
        seen = present.get(image_id, 0)
        old = values.get(image_id, 0)
        if seen & bit and (old & bit) != value:  # the real CSV repeats some rows verbatim
            raise DatasetError(
                f"{csv_path} line {row['__line__']}: rule 'one label per image and subtype' "
                f"broken: {row['ID']} has both 0 and 1"
            )
        present[image_id] = seen | bit
        values[image_id] = old | value
    for image_id, seen in present.items():
        if seen != _RSNA_ALL_BITS:
            missing = [s for s in _RSNA_CSV_SUBTYPES if not seen & _RSNA_BIT[s]]
            raise DatasetError(
                f"{csv_path}: rule 'six rows per image' broken: {image_id} lacks "
                f"{', '.join(missing)}"
            )
    return values


def _rsna_flags(mask: int) -> tuple[np.ndarray, bool]:
    """(5,) bool in :data:`ICH_SUBTYPES` order and the "any" label, from a bit mask."""
    flags = np.array([bool(mask & _RSNA_BIT[s]) for s in RSNA_SUBTYPES], dtype=bool)
    return flags, bool(mask & _RSNA_BIT[_RSNA_ANY])


@contextmanager
def _rsna_uid_leniency() -> Iterator[None]:
    """Accept RSNA's "ID_<hex>" UIDs silently while reading (pydicom would log each one).

    pydicom's validation modes are process settings; they are restored on exit
    and never held across a ``yield`` of a reader.
    """
    settings = pydicom.config.settings
    previous = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = previous


def _fix_rsna_12_bit_wrap(dataset: pydicom.Dataset) -> bool:
    """Undo the known RSNA wrap: 12-bit signed values stored as unsigned with intercept ~0.

    Returns whether the dataset was changed. See :func:`read_rsna_ich`.
    """
    try:
        bits_stored = int(dataset.BitsStored)
        pixel_representation = int(dataset.PixelRepresentation)
        intercept = float(dataset.RescaleIntercept)
    except (AttributeError, TypeError, ValueError):
        return False
    if not (bits_stored == 12 and pixel_representation == 0 and intercept > -100):
        return False
    try:
        stored = dataset.pixel_array.astype(np.int32)
    except Exception as err:  # decoder plugins raise many types
        raise SeriesLoadError(
            f"instance {dataset.get('SOPInstanceUID', '?')}: pixel data cannot be decoded ({err})"
        ) from err
    fixed = ((stored + 1000) % 4096).astype(np.uint16)
    dataset.set_pixel_data(fixed, "MONOCHROME2", 12, generate_instance_uid=False)
    dataset.RescaleIntercept = -1000
    return True


def read_rsna_ich(
    root: Path,
    *,
    csv_name: str = "stage_2_train.csv",
    image_folder: str | None = None,
    exclude: Collection[str] = RSNA_KNOWN_CORRUPT,
    skip_unloadable: bool = False,
) -> Iterator[LabelledSlices]:
    """Read the RSNA 2019 ICH detection set: DICOM slices grouped into series, slice labels.

    Layout (Kaggle "RSNA Intracranial Hemorrhage Detection"; RSNA
    AI-Challenge-Data wiki; Flanders et al. 2020)::

        root/stage_2_train.csv            header "ID,Label"; rows ID_<hex>_<subtype>,<0|1>
                                          for epidural, intraparenchymal, intraventricular,
                                          subarachnoid, subdural and any
        root/stage_2_train/ID_<hex>.dcm   one CT slice per file

    Every image named in the CSV must have its file; files not in the CSV
    are ignored. The slices are grouped by Series Instance UID and each
    series is assembled by :func:`~dicom_node.series.volume.load_ct_volume`,
    so slices are ordered along the normal with the node's own geometry.

    Known quirks of the release, handled on the in-memory copies:

    * The files carry only 22 attributes and no Frame of Reference UID; the
      Series Instance UID is used in its place (one frame per series).
    * Some slices are 12-bit signed values stored with Pixel Representation 0
      and a Rescale Intercept near 0 (BitsStored 12, PixelRepresentation 0,
      RescaleIntercept > -100): the stored value v is re-read as
      ``(v + 1000) mod 4096`` with intercept -1000, the correction published
      by J. Howard ("Cleaning the data for rapid prototyping", Kaggle 2019)
      and used by the 2nd-place solution (appian42/kaggle-rsna-intracranial-hemorrhage).
    * ``ID_6431af929`` has truncated pixel data; it is in ``exclude`` by default.
    * The CSV repeats some rows verbatim; repeats are accepted, contradictions are not.

    Parameters
    ----------
    root : pathlib.Path
        The unpacked competition folder.
    csv_name : str
        The label CSV inside ``root`` (``stage_1_train.csv`` for stage 1).
    image_folder : str or None
        The DICOM folder inside ``root``; None: the CSV's stem
        (``stage_2_train``), else ``<stem>_images`` (stage 1 naming).
    exclude : collection of str
        Image names (``"ID_<hex>"``) to leave out of the CSV and of the series.
    skip_unloadable : bool
        If True, a series that cannot be assembled is logged (count and first
        file path) and skipped instead of raising.

    Yields
    ------
    LabelledSlices
        One per series, in Series Instance UID order, with ``volume`` set,
        ``slice_ids`` the image names in slice order and ``slice_labels``
        (slices, 5) in :data:`ICH_SUBTYPES` order; ``source`` is ``"rsna-ich"``.

    Raises
    ------
    DatasetError
        The message names the file and the rule broken: the CSV or image
        folder is missing; a CSV row is malformed, contradicts another, or
        an image lacks one of the six rows; a CSV image has no DICOM file; a
        file is not DICOM or lacks the Series Instance UID; a series breaks a
        rule of :func:`~dicom_node.series.volume.load_ct_volume` (chained
        :class:`~dicom_node.errors.SeriesLoadError`) and ``skip_unloadable``
        is False.

    References
    ----------
    Flanders AE, et al. Radiol Artif Intell 2020;2(3):e190211,
    doi:10.1148/ryai.2020190211; https://www.kaggle.com/c/rsna-intracranial-hemorrhage-detection;
    https://github.com/RSNA/AI-Challenge-Data/wiki/RSNA-Intracranial-Hemorrhage-Detection.
    DICOM PS3.3 C.7.6.2 Image Plane Module, C.8.2.1 CT Image Module.
    """
    root = Path(root)
    csv_path = root / csv_name
    labels = _rsna_labels(csv_path)
    stem = Path(csv_name).stem
    if image_folder is None:
        image_folder = stem if (root / stem).is_dir() else f"{stem}_images"
    image_dir = root / image_folder
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: rule 'the DICOM folder exists' broken: not found")
    excluded = set(exclude) & set(labels)
    for image_id in excluded:
        del labels[image_id]
    logger.info(
        "RSNA ICH at %s: %d labelled images (%d excluded)", root, len(labels), len(excluded)
    )

    series: dict[str, list[Path]] = {}
    image_of: dict[Path, str] = {}
    for count, image_id in enumerate(sorted(labels), start=1):
        path = _require_file(image_dir / f"{image_id}.dcm", "every CSV image has a DICOM file")
        try:
            with _rsna_uid_leniency():
                header = pydicom.dcmread(path, stop_before_pixels=True)
                series_instance_uid = str(header.get("SeriesInstanceUID", ""))
        except (InvalidDicomError, OSError) as err:
            raise DatasetError(f"{path}: not a readable DICOM file ({err})") from err
        if not series_instance_uid:
            raise DatasetError(f"{path}: rule 'has a Series Instance UID' broken")
        series.setdefault(series_instance_uid, []).append(path)
        image_of[path] = image_id
        if count % 10000 == 0:
            logger.info("RSNA ICH: read %d of %d headers", count, len(labels))
    logger.info("RSNA ICH: %d series", len(series))

    skipped = 0
    for series_instance_uid in sorted(series):
        paths = series[series_instance_uid]
        try:
            with _rsna_uid_leniency():
                volume, sop_to_image = _load_rsna_series(paths, image_of, series_instance_uid)
        except SeriesLoadError as err:
            if skip_unloadable:
                skipped += 1
                logger.warning(
                    "RSNA ICH: series of %s (%d files) skipped: %s", paths[0], len(paths), err
                )
                continue
            raise DatasetError(
                f"series of {paths[0]} ({len(paths)} files) cannot be assembled: {err}"
            ) from err
        slice_ids = tuple(sop_to_image[uid] for uid in volume.sop_instance_uids)
        flags = [_rsna_flags(labels[image_id]) for image_id in slice_ids]
        yield LabelledSlices(
            case_id=series_instance_uid,
            slice_ids=slice_ids,
            slice_labels=np.array([f for f, _ in flags], dtype=bool).reshape(-1, 5),
            any_hemorrhage=np.array([a for _, a in flags], dtype=bool),
            source="rsna-ich",
            volume=volume,
        )
    if skipped:
        logger.warning("RSNA ICH: %d of %d series skipped", skipped, len(series))


def _load_rsna_series(
    paths: Sequence[Path], image_of: Mapping[Path, str], series_instance_uid: str
) -> tuple[CTVolume, dict[str, str]]:
    datasets = read_datasets(paths)
    sop_to_image: dict[str, str] = {}
    fixed = 0
    for path, dataset in zip(paths, datasets, strict=True):
        sop_to_image[str(dataset.get("SOPInstanceUID", ""))] = image_of[path]
        if "FrameOfReferenceUID" not in dataset:
            dataset.FrameOfReferenceUID = series_instance_uid
        fixed += _fix_rsna_12_bit_wrap(dataset)
    if fixed:
        logger.debug("%s: %d slices with the 12-bit wrap corrected", paths[0], fixed)
    return load_ct_volume(datasets), sop_to_image


# --------------------------------------------------------------------- renders
#: Window folders of the renders dataset.
RENDER_WINDOWS: tuple[str, ...] = (
    "brain_window",
    "brain_bone_window",
    "max_contrast_window",
    "subdural_window",
)
#: Subtype folders of the renders dataset (``multi``: several subtypes; ``normal``: none).
RENDER_FOLDERS: tuple[str, ...] = (
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "multi",
    "normal",
    "subarachnoid",
    "subdural",
)
_RENDER_COLUMNS = ("Image", _RSNA_ANY, *RSNA_SUBTYPES)


def read_ich_renders(
    root: Path,
    *,
    window: str | Sequence[str] = "brain_window",
    csv_name: str = "hemorrhage-labels.csv",
    exclude: Collection[str] = RSNA_KNOWN_CORRUPT,
) -> Iterator[LabelledSlices]:
    """Read the RSNA ICH "renders": 8-bit windowed JPEGs in subtype folders with slice labels.

    Layout (the Kaggle derivative of the RSNA 2019 images distributed with
    crowd-sourced segmentation CSVs; verified in public code that reads it)::

        root/hemorrhage-labels.csv                 Image, any, epidural, intraparenchymal,
                                                   intraventricular, subarachnoid, subdural
        root/renders/<folder>/<window>/ID_<hex>.jpg
        root/flagged.txt                           optional: image names to leave out

    ``<folder>`` is one of :data:`RENDER_FOLDERS`, ``<window>`` one of
    :data:`RENDER_WINDOWS`. The CSV covers every RSNA 2019 image (about
    750 000 rows) while only a subset is rendered, so the images drive the
    iteration: CSV rows without an image are expected; an image without a
    CSV row is an error. The CSV labels, not the folder, are the truth; an
    image found in several folders is read once, from the first folder in
    :data:`RENDER_FOLDERS` order.

    The JPEGs are windowed display values, not HU: values outside the window
    are clipped and the rest quantised to 8 bits and JPEG-compressed, so HU
    cannot be recovered exactly.

    Parameters
    ----------
    root : pathlib.Path
        The folder holding ``renders/`` and the CSV.
    window : str or sequence of str
        Window folder(s) to read; each image is read in every one of them.
    csv_name : str
        The label CSV inside ``root``.
    exclude : collection of str
        Image names (``"ID_<hex>"``) to leave out, besides those in ``flagged.txt``.

    Yields
    ------
    LabelledSlices
        One per image (one slice), in folder then file-name order, with
        ``windowed`` mapping each window to a uint8 (1, rows, columns) array
        read as grayscale; ``source`` is ``"rsna-ich-renders"``.

    Raises
    ------
    DatasetError
        The message names the file and the rule broken: the CSV or
        ``renders/`` is missing; the CSV lacks a column or has a value that is
        not 0/1; an unknown window name; an image missing in one of the
        requested windows; an image without a CSV row; a file that cannot be
        decoded as an image.

    References
    ----------
    Flanders AE, et al. Radiol Artif Intell 2020;2(3):e190211 (the source
    images); DICOM PS3.3 C.11.2.1.2 Window Center and Window Width.
    """
    root = Path(root)
    windows = (window,) if isinstance(window, str) else tuple(window)
    unknown = [w for w in windows if w not in RENDER_WINDOWS]
    if not windows or unknown:
        raise DatasetError(
            f"rule 'window is one of {', '.join(RENDER_WINDOWS)}' broken: {', '.join(unknown)}"
        )
    csv_path = root / csv_name
    labels: dict[str, int] = {}
    for row in _read_csv_rows(csv_path, _RENDER_COLUMNS):
        mask = 0
        for subtype, bit in _RSNA_BIT.items():
            mask |= bit if _flag(csv_path, row, subtype) else 0
        labels[row["Image"].removesuffix(".jpg")] = mask
    render_dir = root / "renders"
    if not render_dir.is_dir():
        raise DatasetError(f"{render_dir}: rule 'the dataset has renders/' broken: not found")
    excluded = set(exclude)
    flagged_path = root / "flagged.txt"
    if flagged_path.is_file():
        lines = flagged_path.read_text(encoding="utf-8").splitlines()
        excluded |= {line.strip().removesuffix(".jpg") for line in lines if line.strip()}
    logger.info(
        "ICH renders at %s: %d CSV rows, %d images excluded", root, len(labels), len(excluded)
    )

    seen: set[str] = set()
    yielded = 0
    for folder in RENDER_FOLDERS:
        first = render_dir / folder / windows[0]
        if not first.is_dir():
            continue
        for path in sorted(first.glob("ID_*.jpg")):
            name = path.stem
            if not _RSNA_IMAGE_ID.match(name) or name in excluded or name in seen:
                continue
            seen.add(name)
            if name not in labels:
                raise DatasetError(
                    f"{path}: rule 'every image has a row in {csv_name}' broken: "
                    f"{name} not found in {csv_path}"
                )
            images = {}
            for window_name in windows:
                image_path = _require_file(
                    render_dir / folder / window_name / path.name,
                    "every image exists in every requested window",
                )
                image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
                if image is None:
                    raise DatasetError(f"{image_path}: cannot be decoded as an image")
                images[window_name] = image[np.newaxis]
            flags, any_hemorrhage = _rsna_flags(labels[name])
            yielded += 1
            yield LabelledSlices(
                case_id=name,
                slice_ids=(name,),
                slice_labels=flags[np.newaxis],
                any_hemorrhage=np.array([any_hemorrhage]),
                source="rsna-ich-renders",
                windowed=images,
            )
    if not yielded:
        logger.warning("ICH renders at %s: no image found for window %s", root, windows[0])


# ------------------------------------------------------------------ dispatcher
_READERS: dict[str, Callable[[Path], Iterator[LabelledVolume] | Iterator[LabelledSlices]]] = {
    "physionet": read_physionet_ct_ich,
    "bhsd": read_bhsd,
    "rsna": read_rsna_ich,
    "renders": read_ich_renders,
}


def open_dataset(spec: str) -> Iterator[LabelledVolume] | Iterator[LabelledSlices]:
    """Open a dataset named as ``KIND:PATH``, KIND one of physionet, bhsd, rsna, renders.

    Parameters
    ----------
    spec : str
        For example ``"bhsd:/data/label_192"`` or ``"rsna:/data/rsna-ich"``.

    Returns
    -------
    iterator of LabelledVolume or LabelledSlices
        The reader's iterator with its default options.

    Raises
    ------
    DatasetError
        If KIND is unknown or PATH is empty or not a folder.
    """
    kind, sep, path = spec.partition(":")
    if not sep or kind not in _READERS or not path:
        raise DatasetError(
            f"rule 'dataset is KIND:PATH with KIND one of {', '.join(_READERS)}' broken: "
            f"{spec[:200]!r}"
        )
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: rule 'the dataset root is a folder' broken: not found")
    return _READERS[kind](root)
