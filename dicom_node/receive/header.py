"""Read what the node needs from a received instance's header, without touching pixels.

Besides the selection attributes, the header gives the evidence series
completeness uses: Image Position and Orientation (Patient), from which the
position of each slice along the slice normal follows, ImagesInAcquisition
and NumberOfFrames.

References
----------
DICOM PS3.10 section 7 (DICOM File Format); PS3.3 C.7.6.2 Image Plane Module;
PS3.3 C.7.6.1 General Image Module (ImagesInAcquisition).

Here: :class:`InstanceHeader`, :func:`parse_header` with its pydicom fallback,
the slice geometry helpers and :func:`file_meta_information`. The fast raw
scanner is in :mod:`dicom_node.receive.header_scan`, the Pixel Data
truncation checks in :mod:`dicom_node.receive.pixel_data`; their names are
importable from here too (``parse_header`` looks ``scan_header`` up in this
module).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from io import BytesIO

import pydicom
from pydicom.errors import InvalidDicomError

from dicom_node.errors import InvalidInstanceError, InvalidUIDError
from dicom_node.receive.header_scan import (
    NATIVE_SYNTAXES as NATIVE_SYNTAXES,
)
from dicom_node.receive.header_scan import (
    SCANNED_ATTRIBUTES as SCANNED_ATTRIBUTES,
)
from dicom_node.receive.header_scan import (
    ScannedHeader,
    scan_header,
)
from dicom_node.receive.pixel_data import _pydicom_pixel_data_extent, check_pixel_data
from dicom_node.uids import validate_uid


@dataclass(frozen=True)
class InstanceHeader:
    """Header attributes of one received instance.

    Parameters
    ----------
    sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid : str
        Validated UIDs (PS3.5 9.1); the first three form the spool path.
    transfer_syntax_uid : str
        Transfer syntax the bytes are encoded in (from the presentation context).
    modality, body_part_examined, study_description, series_description, protocol_name : str
        Empty string when absent.
    contrast_bolus_agent : str or None
        None when ContrastBolusAgent is absent.
    image_orientation_patient : tuple of float or None
        Six direction cosines, None when absent (e.g. Enhanced CT keeps them per frame).
    slice_thickness_mm : float or None
        SliceThickness in mm.
    frame_of_reference_uid : str or None
        FrameOfReferenceUID when present and valid.
    instance_number : int or None
    image_type : str
        ImageType values joined with a backslash, as encoded.
    number_of_frames : int
        NumberOfFrames, 1 for single-frame instances.
    image_position_patient : tuple of float or None
        Image Position (Patient) in mm (LPS), None when absent or malformed.
    images_in_acquisition : int or None
        ImagesInAcquisition (0020,1002) when present and positive.
    convolution_kernel : str
        ConvolutionKernel (0018,1210) values joined with a backslash; empty when absent.
    """

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    modality: str
    body_part_examined: str
    study_description: str
    series_description: str
    protocol_name: str
    contrast_bolus_agent: str | None
    image_orientation_patient: tuple[float, ...] | None
    slice_thickness_mm: float | None
    frame_of_reference_uid: str | None
    instance_number: int | None
    image_type: str
    number_of_frames: int
    image_position_patient: tuple[float, float, float] | None = None
    images_in_acquisition: int | None = None
    convolution_kernel: str = ""
    study_date: str = ""
    accession_number: str = ""


#: Largest difference between Image Orientation (Patient) values of one stack.
ORIENTATION_TOLERANCE = 1e-4


def position_along_normal(
    image_position_patient: tuple[float, ...] | None,
    image_orientation_patient: tuple[float, ...] | None,
) -> float | None:
    """Return the position of a slice along the normal of an image plane, in mm.

    Parameters
    ----------
    image_position_patient : tuple of float or None
        Image Position (Patient): the centre of the first pixel, (x, y, z) in mm.
    image_orientation_patient : tuple of float or None
        Image Orientation (Patient) whose normal is used: row then column direction
        cosines (6 values).

    Returns
    -------
    float or None
        ``dot(position, cross(row, column) / |cross(row, column)|)``; None when
        either input is missing, malformed or the orientation is degenerate.

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
    """
    if image_position_patient is None or image_orientation_patient is None:
        return None
    if len(image_position_patient) != 3 or len(image_orientation_patient) != 6:
        return None
    rx, ry, rz, cx, cy, cz = image_orientation_patient
    nx, ny, nz = ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx
    norm = math.sqrt(nx * nx + ny * ny + nz * nz)
    if not math.isfinite(norm) or norm < 1e-6:
        return None
    x, y, z = image_position_patient
    value = (x * nx + y * ny + z * nz) / norm
    return value if math.isfinite(value) else None


def same_orientation(first: tuple[float, ...] | None, second: tuple[float, ...] | None) -> bool:
    """Return True when two Image Orientation (Patient) values agree within 1e-4.

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
    """
    if first is None or second is None or len(first) != 6 or len(second) != 6:
        return False
    return all(abs(a - b) <= ORIENTATION_TOLERANCE for a, b in zip(first, second, strict=True))


def _floats(
    ds: pydicom.Dataset | ScannedHeader, keyword: str, count: int
) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(values) != count or not all(math.isfinite(v) for v in values):
        return None
    return values


def _text(ds: pydicom.Dataset | ScannedHeader, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _joined(ds: pydicom.Dataset | ScannedHeader, keyword: str) -> str:
    """Values of a multi-valued text attribute joined with a backslash, as encoded."""
    value = ds.get(keyword)
    if value is None or isinstance(value, str):
        return "" if value is None else value.strip()
    return "\\".join(str(v).strip() for v in value)


def _float_or_none(ds: pydicom.Dataset | ScannedHeader, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _even(value: str, pad: bytes) -> bytes:
    data = value.encode("ascii")
    return data + pad if len(data) % 2 else data


def file_meta_information(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """Encode the preamble, ``DICM`` prefix and File Meta Information of a Part 10 file.

    The same bytes as pynetdicom's ``Event.encoded_dataset(include_meta=True)``
    puts before the dataset, written directly instead of through a pydicom
    dataset (about twenty times faster; the C-STORE handler does this for
    every instance).

    Parameters
    ----------
    sop_class_uid, sop_instance_uid : str
        Media Storage SOP Class and Instance UID (from the C-STORE request).
    transfer_syntax_uid : str
        Transfer syntax of the dataset (from the presentation context).
    implementation_class_uid, implementation_version_name : str
        Who wrote the file.

    Returns
    -------
    bytes
        128 zero bytes, ``DICM`` and the group 0002 elements in Explicit VR
        Little Endian, (0002,0000) Group Length first.

    References
    ----------
    DICOM PS3.10 7.1 (DICOM File Meta Information).
    """
    elements = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _even(sop_class_uid, b"\x00")),
            _meta_element(0x0003, b"UI", _even(sop_instance_uid, b"\x00")),
            _meta_element(0x0010, b"UI", _even(transfer_syntax_uid, b"\x00")),
            _meta_element(0x0012, b"UI", _even(implementation_class_uid, b"\x00")),
            _meta_element(0x0013, b"SH", _even(implementation_version_name, b" ")),
        )
    )
    group_length = _meta_element(0x0000, b"UL", struct.pack("<I", len(elements)))
    return b"\x00" * 128 + b"DICM" + group_length + elements


def parse_header(encoded: bytes, *, transfer_syntax_uid: str | None = None) -> InstanceHeader:
    """Parse the header of an encoded instance (Part 10 file bytes), stopping before pixel data.

    Parameters
    ----------
    encoded : bytes
        Preamble, File Meta Information and dataset, as written to the spool.
    transfer_syntax_uid : str or None
        Transfer syntax of the dataset; taken from the file meta when None.

    Returns
    -------
    InstanceHeader

    Raises
    ------
    InvalidInstanceError
        If the bytes are not DICOM, SOPInstanceUID, SOPClassUID,
        StudyInstanceUID or SeriesInstanceUID is missing or not a valid UID,
        or the Pixel Data is truncated (:func:`check_pixel_data`).

    References
    ----------
    DICOM PS3.10 section 7 (DICOM File Format); PS3.5 section 9.1 (UIDs).
    """
    try:
        scanned = scan_header(encoded, transfer_syntax_uid)
        ds: pydicom.Dataset | ScannedHeader
        if scanned is None:  # not a layout the scanner reads: pydicom decides
            ds = pydicom.dcmread(BytesIO(encoded), stop_before_pixels=True)
            extent = _pydicom_pixel_data_extent(encoded)
        else:
            ds = scanned
            extent = scanned.pixel_data_extent
        # Force parsing of every element we read now, so a truncated dataset fails here.
        keywords = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")
        uids = {k: validate_uid(ds.get(k), keyword=k) for k in keywords}
        iop_tuple = _floats(ds, "ImageOrientationPatient", 6)
        ipp_tuple = _floats(ds, "ImagePositionPatient", 3)
        image_type = ds.get("ImageType")
        if image_type is None:
            image_type_text = ""
        elif isinstance(image_type, str):
            image_type_text = image_type
        else:
            image_type_text = "\\".join(str(v) for v in image_type)
        try:
            for_uid = validate_uid(ds.get("FrameOfReferenceUID"), keyword="FrameOfReferenceUID")
        except InvalidUIDError:
            for_uid = None
        try:
            instance_number = int(ds.get("InstanceNumber")) if ds.get("InstanceNumber") else None
        except (TypeError, ValueError):
            instance_number = None
        try:
            number_of_frames = max(1, int(ds.get("NumberOfFrames") or 1))
        except (TypeError, ValueError):
            number_of_frames = 1
        try:
            images_in_acquisition = int(ds.get("ImagesInAcquisition") or 0) or None
        except (TypeError, ValueError):
            images_in_acquisition = None
        if images_in_acquisition is not None and images_in_acquisition < 1:
            images_in_acquisition = None
        tsuid = transfer_syntax_uid or str(ds.file_meta.get("TransferSyntaxUID", ""))
        check_pixel_data(encoded, extent, ds, tsuid)
        contrast = ds.get("ContrastBolusAgent")
        return InstanceHeader(
            sop_instance_uid=uids["SOPInstanceUID"],
            sop_class_uid=uids["SOPClassUID"],
            study_instance_uid=uids["StudyInstanceUID"],
            series_instance_uid=uids["SeriesInstanceUID"],
            transfer_syntax_uid=tsuid,
            modality=_text(ds, "Modality"),
            body_part_examined=_text(ds, "BodyPartExamined"),
            study_description=_text(ds, "StudyDescription"),
            series_description=_text(ds, "SeriesDescription"),
            protocol_name=_text(ds, "ProtocolName"),
            contrast_bolus_agent=None if contrast is None else str(contrast),
            image_orientation_patient=iop_tuple,
            slice_thickness_mm=_float_or_none(ds, "SliceThickness"),
            frame_of_reference_uid=for_uid,
            instance_number=instance_number,
            image_type=image_type_text,
            number_of_frames=number_of_frames,
            image_position_patient=ipp_tuple,  # type: ignore[arg-type]
            images_in_acquisition=images_in_acquisition,
            convolution_kernel=_joined(ds, "ConvolutionKernel"),
            study_date=_text(ds, "StudyDate")[:8],
            accession_number=_text(ds, "AccessionNumber")[:16],
        )
    except InvalidUIDError as err:
        raise InvalidInstanceError(str(err)) from err
    except (
        InvalidDicomError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        OSError,
        NotImplementedError,
        struct.error,
    ) as err:  # pydicom on hostile bytes
        raise InvalidInstanceError(f"not a readable DICOM dataset: {err}") from err
