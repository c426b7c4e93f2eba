"""Reader of the "renders" JPEG derivative of RSNA 2019 (:func:`read_ich_renders`).

Windowed JPEG renders of the RSNA 2019 images, one folder per window, with
slice-level labels from a CSV in the RSNA label format.

References
----------
Flanders AE, et al. Construction of a Machine Learning Dataset through
Collaboration: The RSNA 2019 Brain CT Hemorrhage Challenge. Radiol Artif
Intell 2020;2(3):e190211, doi:10.1148/ryai.2020190211.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from dicom_node.errors import DatasetError
from dicom_node.training.datasets.common import (
    LabelledSlices,
    _flag,
    _read_csv_rows,
    _require_file,
)
from dicom_node.training.datasets.rsna import (
    _RSNA_ANY,
    _RSNA_BIT,
    _RSNA_IMAGE_ID,
    RSNA_KNOWN_CORRUPT,
    RSNA_SUBTYPES,
    _rsna_flags,
)

logger = logging.getLogger(__name__)

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
