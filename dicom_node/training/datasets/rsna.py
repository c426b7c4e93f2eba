"""Reader of RSNA 2019 Brain CT Hemorrhage (:func:`read_rsna_ich`): DICOM files, a label CSV.

Also the RSNA label CSV parsing that the renders reader (:mod:`.renders`)
shares, and the fixes for the challenge's known DICOM quirks ("ID_" UIDs,
the 12-bit pixel wrap).

References
----------
Flanders AE, et al. Construction of a Machine Learning Dataset through
Collaboration: The RSNA 2019 Brain CT Hemorrhage Challenge. Radiol Artif
Intell 2020;2(3):e190211, doi:10.1148/ryai.2020190211;
https://www.kaggle.com/c/rsna-intracranial-hemorrhage-detection.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from dicom_node.errors import DatasetError, SeriesLoadError
from dicom_node.imaging.ich_input import ICH_SUBTYPES
from dicom_node.series.volume import CTVolume, load_ct_volume, read_datasets
from dicom_node.training.datasets.common import (
    LabelledSlices,
    _flag,
    _read_csv_rows,
    _require_file,
)

logger = logging.getLogger(__name__)

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
