"""Reader of PhysioNet CT-ICH (:func:`read_physionet_ct_ich`): NIfTI scans, masks and a slice CSV.

References
----------
Hssayeni MD, et al. Intracranial hemorrhage segmentation using a deep
convolutional model. Data 2020;5(1):14. PhysioNet dataset "Computed
Tomography Images for Intracranial Hemorrhage Detection and Segmentation",
https://physionet.org/content/ct-ich/1.3.1/, doi:10.13026/w8q8-ky94.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
from nibabel import orientations

from dicom_node.errors import DatasetError
from dicom_node.imaging.ich_input import ICH_SUBTYPES
from dicom_node.training.datasets.common import (
    UNKNOWN_SUBTYPE_LABEL,
    LabelledVolume,
    _check_same_shape,
    _flag,
    _integer,
    _load_nifti,
    _raw_labels,
    _read_csv_rows,
    _reorientation,
    _reoriented_hu,
    _require_file,
)

logger = logging.getLogger(__name__)

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
