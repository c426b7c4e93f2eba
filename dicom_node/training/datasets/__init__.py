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

Modules
-------
* :mod:`~dicom_node.training.datasets.common` -- output types and shared
  CSV and NIfTI helpers;
* :mod:`~dicom_node.training.datasets.physionet` -- PhysioNet CT-ICH;
* :mod:`~dicom_node.training.datasets.bhsd` -- BHSD;
* :mod:`~dicom_node.training.datasets.rsna` -- RSNA 2019;
* :mod:`~dicom_node.training.datasets.renders` -- the RSNA 2019 renders;
* :mod:`~dicom_node.training.datasets.dispatch` -- :func:`open_dataset`.

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

from dicom_node.errors import DatasetError, SeriesLoadError
from dicom_node.training.datasets.bhsd import BHSD_LABEL_TO_SUBTYPE_LABEL, read_bhsd
from dicom_node.training.datasets.common import (
    UNKNOWN_SUBTYPE_LABEL,
    LabelledSlices,
    LabelledVolume,
)
from dicom_node.training.datasets.dispatch import open_dataset
from dicom_node.training.datasets.physionet import PHYSIONET_SUBTYPE_COLUMNS, read_physionet_ct_ich
from dicom_node.training.datasets.renders import RENDER_FOLDERS, RENDER_WINDOWS, read_ich_renders
from dicom_node.training.datasets.rsna import RSNA_KNOWN_CORRUPT, RSNA_SUBTYPES, read_rsna_ich

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
