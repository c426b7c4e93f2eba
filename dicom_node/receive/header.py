"""Read what the node needs from a received instance's header, without touching pixels.

Besides the selection attributes, the header gives the evidence series
completeness uses: Image Position and Orientation (Patient), from which the
position of each slice along the slice normal follows, ImagesInAcquisition
and NumberOfFrames.

References
----------
DICOM PS3.10 section 7 (DICOM File Format); PS3.3 C.7.6.2 Image Plane Module;
PS3.3 C.7.6.1 General Image Module (ImagesInAcquisition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from io import BytesIO

import pydicom
from pydicom.errors import InvalidDicomError

from dicom_node.errors import InvalidInstanceError, InvalidUIDError
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


def same_orientation(
    first: tuple[float, ...] | None, second: tuple[float, ...] | None
) -> bool:
    """Return True when two Image Orientation (Patient) values agree within 1e-4.

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
    """
    if first is None or second is None or len(first) != 6 or len(second) != 6:
        return False
    return all(abs(a - b) <= ORIENTATION_TOLERANCE for a, b in zip(first, second, strict=True))


def _floats(ds: pydicom.Dataset, keyword: str, count: int) -> tuple[float, ...] | None:
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


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _joined(ds: pydicom.Dataset, keyword: str) -> str:
    """Values of a multi-valued text attribute joined with a backslash, as encoded."""
    value = ds.get(keyword)
    if value is None or isinstance(value, str):
        return "" if value is None else value.strip()
    return "\\".join(str(v).strip() for v in value)


def _float_or_none(ds: pydicom.Dataset, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


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
        If the bytes are not DICOM, or SOPInstanceUID, SOPClassUID,
        StudyInstanceUID or SeriesInstanceUID is missing or not a valid UID.

    References
    ----------
    DICOM PS3.10 section 7 (DICOM File Format); PS3.5 section 9.1 (UIDs).
    """
    try:
        ds = pydicom.dcmread(BytesIO(encoded), stop_before_pixels=True)
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
        )
    except InvalidUIDError as err:
        raise InvalidInstanceError(str(err)) from err
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError) as err:
        raise InvalidInstanceError(f"not a readable DICOM dataset: {err}") from err
