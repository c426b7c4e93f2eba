"""Read what the node needs from a received instance's header, without touching pixels."""

from __future__ import annotations

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


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


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
        iop = ds.get("ImageOrientationPatient")
        iop_tuple = tuple(float(v) for v in iop) if iop is not None and len(iop) == 6 else None
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
        )
    except InvalidUIDError as err:
        raise InvalidInstanceError(str(err)) from err
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError) as err:
        raise InvalidInstanceError(f"not a readable DICOM dataset: {err}") from err
