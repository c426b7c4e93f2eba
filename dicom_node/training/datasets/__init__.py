"""Readers for the public intracranial hemorrhage (ICH) datasets, in their published layouts.

The readers live in :mod:`dicom_node.training.datasets.common`; this package
re-exports its public names.
"""

from __future__ import annotations

from dicom_node.training.datasets.common import (
    BHSD_LABEL_TO_SUBTYPE_LABEL,
    PHYSIONET_SUBTYPE_COLUMNS,
    RENDER_FOLDERS,
    RENDER_WINDOWS,
    RSNA_KNOWN_CORRUPT,
    RSNA_SUBTYPES,
    UNKNOWN_SUBTYPE_LABEL,
    DatasetError,
    LabelledSlices,
    LabelledVolume,
    SeriesLoadError,
    open_dataset,
    read_bhsd,
    read_ich_renders,
    read_physionet_ct_ich,
    read_rsna_ich,
)

__all__ = [
    "BHSD_LABEL_TO_SUBTYPE_LABEL",
    "PHYSIONET_SUBTYPE_COLUMNS",
    "RENDER_FOLDERS",
    "RENDER_WINDOWS",
    "RSNA_KNOWN_CORRUPT",
    "RSNA_SUBTYPES",
    "UNKNOWN_SUBTYPE_LABEL",
    "DatasetError",
    "LabelledSlices",
    "LabelledVolume",
    "SeriesLoadError",
    "open_dataset",
    "read_bhsd",
    "read_ich_renders",
    "read_physionet_ct_ich",
    "read_rsna_ich",
]
