"""Reader of BHSD (:func:`read_bhsd`): paired NIfTI images and multi-class label volumes.

References
----------
Wu B, et al. BHSD: A 3D Multi-class Brain Hemorrhage Segmentation Dataset.
MLMI 2023, LNCS 14348:147-156, doi:10.1007/978-3-031-45673-2_15;
https://github.com/White65534/BHSD.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
from nibabel import orientations

from dicom_node.errors import DatasetError
from dicom_node.training.datasets.common import (
    _LABEL_INTEGER_TOLERANCE,
    LabelledVolume,
    _check_same_shape,
    _load_nifti,
    _raw_labels,
    _reorientation,
    _reoriented_hu,
    _slice_labels_from_volume,
    _subtype,
)

logger = logging.getLogger(__name__)

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
