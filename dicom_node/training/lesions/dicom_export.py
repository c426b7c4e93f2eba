"""Writing a synthetic case into copies of its source DICOM series, with new UIDs.

References
----------
DICOM PS3.3 C.8.2.1 CT Image Module (Rescale Slope, Rescale Intercept);
PS3.3 C.7.3.1 General Series Module (Series Description); PS3.3 C.7.6.1
General Image Module (Derivation Description); PS3.5 section 9 (UIDs).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pydicom

from dicom_node.training.lesions.specs import SyntheticCase
from dicom_node.training.synthetic import _write_hu, with_new_uids

#: Text put in Series Description of a synthetic training case.
SYNTHETIC_CASE_NOTE = "synthetic ICH case"


def case_to_datasets(
    datasets: Sequence[pydicom.Dataset], case: SyntheticCase, *, seed: int
) -> list[pydicom.Dataset]:
    """Write a synthetic case into copies of its source series, with new UIDs.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        The single-frame CT instances the case's base volume was loaded from,
        in any order; not modified. Rows and Columns must match the case.
    case : SyntheticCase
        The case (:func:`make_case`).
    seed : int
        Seed of the new UIDs (:func:`dicom_node.training.synthetic.with_new_uids`).

    Returns
    -------
    list of pydicom.Dataset
        Copies in the input order, HU written as stored values through each
        slice's rescale (clipped to the stored range), Series Description and
        Derivation Description marking the series as synthetic, new Study,
        Series, Frame of Reference and SOP Instance UIDs.

    Raises
    ------
    ValueError
        If a slice of the case has no dataset with its SOP Instance UID, or
        the pixel matrix differs.

    References
    ----------
    DICOM PS3.3 C.8.2.1 CT Image Module (Rescale Slope, Rescale Intercept);
    PS3.3 C.7.3.1 General Series Module (Series Description); PS3.3 C.7.6.1
    General Image Module (Derivation Description); PS3.5 section 9 (UIDs).
    """
    copies = [copy.deepcopy(ds) for ds in datasets]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in copies}
    rows, columns = case.volume.shape[1:]
    for k, uid in enumerate(case.volume.sop_instance_uids):
        if uid not in by_uid:
            raise ValueError(f"no dataset with SOP Instance UID {uid}")
        ds = by_uid[uid]
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise ValueError(
                f"instance {uid} is {ds.Rows}x{ds.Columns}, the case is {rows}x{columns}"
            )
        _write_hu(ds, case.volume.hu[k])
    names = ", ".join(s.subtype for s in case.lesions) or "no lesion"
    for ds in copies:
        description = str(ds.get("SeriesDescription", "") or "")
        if SYNTHETIC_CASE_NOTE not in description:
            suffix = f" ({SYNTHETIC_CASE_NOTE})" if description else SYNTHETIC_CASE_NOTE
            ds.SeriesDescription = (description[: 64 - len(suffix)] + suffix).strip()
        ds.DerivationDescription = (
            f"Synthetic training case by dicom-node, seed {case.seed}: {names}; "
            "not a patient finding"
        )[:1024]
    return with_new_uids(copies, seed=seed)
