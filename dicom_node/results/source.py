"""Inputs of the result builders: source-image headers and UIDs.

Result objects inherit the Patient and General Study modules of their source
images. Real series are not always valid themselves: the GE head CT in the
shared test data lacks Patient's Birth Date and Patient's Sex (Type 2) and has
an empty De-identification Method (Type 1C). highdicom reads several of these
attributes unconditionally, and copying the gaps would make our objects
invalid too. :func:`prepare_source_images` therefore returns light copies of
the headers (no pixel data, the caller's datasets untouched) in which:

* absent Type 2 Patient and General Study attributes are present and empty
  (PS3.5 7.4.3: zero length means "unknown");
* De-identification Method, when Patient Identity Removed is YES and neither it
  nor the De-identification Method Code Sequence has a value, says that the
  method was not recorded in the source images.

Nothing else is changed or invented. It also checks that the images form one
series on one grid in one frame of reference, as the SEG builder needs.
:func:`uid_or_new` checks UIDs given by callers or makes new ones.

References
----------
PS3.3 C.7.1.1 Patient Module; C.7.2.1 General Study Module;
PS3.5 7.4 Data Element Type; PS3.5 9.1 UID Encoding Rules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import RE_VALID_UID, generate_uid

from dicom_node.errors import InvalidUIDError, ResultBuildError

logger = logging.getLogger(__name__)

#: Text written into De-identification Method when the source has no value.
DEIDENTIFICATION_METHOD_UNRECORDED = "Not recorded in the source images"

# Type 2 attributes of the Patient and General Study modules, with their VRs.
_TYPE2_PATIENT_STUDY = (
    ("PatientName", "PN"),
    ("PatientID", "LO"),
    ("PatientBirthDate", "DA"),
    ("PatientSex", "CS"),
    ("StudyDate", "DA"),
    ("StudyTime", "TM"),
    ("ReferringPhysicianName", "PN"),
    ("StudyID", "SH"),
    ("AccessionNumber", "SH"),
)

_PIXEL_DATA_TAGS = frozenset(
    Tag(t) for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
)

_REQUIRED = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Rows",
    "Columns",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
)


def is_valid_uid(value: str) -> bool:
    """Return whether ``value`` is a valid UID (PS3.5 9.1), without warnings.

    Parameters
    ----------
    value : str
        Candidate UID.

    Returns
    -------
    bool
        True for dot-separated numeric components without leading zeros, at
        most 64 characters.
    """
    return isinstance(value, str) and len(value) <= 64 and RE_VALID_UID.fullmatch(value) is not None


def uid_or_new(keyword: str, value: str | None) -> str:
    """Return a given UID after checking it, or a new UID.

    Parameters
    ----------
    keyword : str
        DICOM keyword the UID is for, used in the error message.
    value : str or None
        The UID, or None for a new one (pydicom's UID root).

    Returns
    -------
    str
        A valid UID.

    Raises
    ------
    dicom_node.errors.InvalidUIDError
        If ``value`` is not a valid UID (PS3.5 9.1).
    """
    if value is None:
        return str(generate_uid())
    if not is_valid_uid(value):
        raise InvalidUIDError(f"{keyword} {value!r} is not a valid UID")
    return str(value)


def _header_copy(dataset: Dataset) -> Dataset:
    """Return a new dataset sharing ``dataset``'s elements, without pixel data."""
    header = Dataset()
    if hasattr(dataset, "file_meta"):
        header.file_meta = dataset.file_meta
    for element in dataset:
        if element.tag not in _PIXEL_DATA_TAGS:
            header.add(element)
    return header


def prepare_source_images(
    source_images: Sequence[Dataset], *, require_geometry: bool = True
) -> list[Dataset]:
    """Check the source series and return header copies fit for inheritance.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        Single-frame images of one series, in the slice order of the masks
        (pixel data need not be loaded). They are not modified.
    require_geometry : bool
        Require what a SEG needs (single-frame images on one grid in one frame
        of reference). False for objects that only reference the images (the
        "not analysable" report of a series that failed a geometry gate):
        then only the UIDs and one study and series are required.

    Returns
    -------
    list of pydicom.Dataset
        Copies without pixel data, same order, with absent Type 2 Patient and
        General Study attributes added empty and an empty De-identification
        Method explained (see the module docstring).

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the sequence is empty, an image lacks an attribute the builders
        need (UIDs, geometry), is multi-frame, or the images do not share
        Study Instance UID, Series Instance UID, Frame of Reference UID, Rows
        and Columns, or repeat a SOP Instance UID.

    References
    ----------
    PS3.3 C.7.1.1 Patient Module, C.7.2.1 General Study Module, A.51
    Segmentation IOD (source images of one frame of reference).
    """
    if len(source_images) == 0:
        raise ResultBuildError("no source images given")
    required = _REQUIRED if require_geometry else _REQUIRED[:4]
    for index, dataset in enumerate(source_images):
        missing = [kw for kw in required if dataset.get(kw) in (None, "")]
        if missing:
            raise ResultBuildError(
                f"source image {index} lacks {', '.join(missing)}; cannot build results"
            )
        if require_geometry and int(dataset.get("NumberOfFrames", 1) or 1) != 1:
            raise ResultBuildError(f"source image {index} is multi-frame; expected single-frame")
    first = source_images[0]
    shared: tuple[str, ...] = ("StudyInstanceUID", "SeriesInstanceUID")
    if require_geometry:
        shared += ("FrameOfReferenceUID", "Rows", "Columns")
    for keyword in shared:
        values = {dataset.get(keyword) for dataset in source_images}
        if len(values) != 1:
            raise ResultBuildError(f"source images differ in {keyword}; expected one series")
    sop_instance_uids = [dataset.SOPInstanceUID for dataset in source_images]
    if len(set(sop_instance_uids)) != len(sop_instance_uids):
        raise ResultBuildError("source images repeat a SOP Instance UID")

    headers = [_header_copy(dataset) for dataset in source_images]
    filled: set[str] = set()
    for header in headers:
        for keyword, vr in _TYPE2_PATIENT_STUDY:
            if keyword not in header:
                header.add_new(keyword, vr, None)
                filled.add(keyword)
        if (
            str(header.get("PatientIdentityRemoved", "")).upper() == "YES"
            and not header.get("DeidentificationMethod")
            and not header.get("DeidentificationMethodCodeSequence")
        ):
            header.add_new("DeidentificationMethod", "LO", DEIDENTIFICATION_METHOD_UNRECORDED)
            filled.add("DeidentificationMethod")
    if filled:
        logger.info(
            "series %s: source lacks %s; results carry them empty or explained",
            first.SeriesInstanceUID,
            ", ".join(sorted(filled)),
        )
    return headers
