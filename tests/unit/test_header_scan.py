"""The C-STORE handler's fast paths give exactly what pydicom and pynetdicom give."""

from __future__ import annotations

import copy
from io import BytesIO
from pathlib import Path
from unittest import mock

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import encode_file_meta

import dicom_node.receive.header as header_module
from dicom_node.errors import InvalidInstanceError
from dicom_node.receive.header import file_meta_information, parse_header, scan_header


def dicom_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix not in (".nrrd", ".jpg", ".png", ".txt", ".md", ".json", ".csv")
    )


def with_pydicom_only(data: bytes):
    """parse_header as it was before the scanner: pydicom reads everything."""
    with mock.patch.object(header_module, "scan_header", return_value=None):
        return parse_header(data)


def test_scanner_agrees_with_pydicom_on_every_shared_file(shared_data):
    files = dicom_files(shared_data)
    assert len(files) > 250
    scanned = 0
    for path in files:
        data = path.read_bytes()
        if scan_header(data) is not None:
            scanned += 1
        assert parse_header(data) == with_pydicom_only(data), path
    assert scanned == len(files)  # CT, SEG, SR, JPEG Lossless: all little endian


def encode(ds: pydicom.Dataset, syntax: str) -> bytes:
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = BytesIO()
    ds.save_as(
        buffer,
        implicit_vr=syntax == ImplicitVRLittleEndian,
        little_endian=True,
        enforce_file_format=True,
    )
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["seg_image_ct_binary.dcm", "sr_document.dcm", "ct_image.dcm"])
def test_scanner_reads_implicit_vr_with_nested_sequences(shared_data, name):
    ds = pydicom.dcmread(shared_data / "seg-sr-examples" / "highdicom" / name)
    data = encode(ds, ImplicitVRLittleEndian)
    assert scan_header(data) is not None
    assert parse_header(data) == with_pydicom_only(data)


def test_unusual_input_falls_back_to_pydicom(head_ct_dir):
    data = (head_ct_dir / "01.dcm").read_bytes()
    assert scan_header(data[:1500]) is None  # truncated inside the header
    assert scan_header(b"not DICOM" * 50) is None
    ds = pydicom.dcmread(head_ct_dir / "01.dcm")
    ds.SpecificCharacterSet = "ISO_IR 144"  # Cyrillic: pydicom decodes it
    assert scan_header(encode(ds, ExplicitVRLittleEndian)) is None
    with pytest.raises(InvalidInstanceError):
        parse_header(b"not DICOM" * 50)


def test_pydicom_path_refuses_truncated_pixel_data(head_ct_dir):
    """Without the scanner, pydicom's deferred Pixel Data still gives the offset and length."""
    data = (head_ct_dir / "01.dcm").read_bytes()
    assert with_pydicom_only(data).sop_instance_uid
    with pytest.raises(InvalidInstanceError, match="Pixel Data truncated"):
        with_pydicom_only(data[:-1000])


def test_file_meta_is_byte_identical_to_pynetdicoms():
    for sop_instance_uid in ("1.2.3.4", "1.2.826.0.1.3680043.8.498.12345678901234567890123"):
        meta = FileMetaDataset()
        meta.FileMetaInformationGroupLength = 0
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = sop_instance_uid
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
        meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
        expected = b"\x00" * 128 + b"DICM" + encode_file_meta(meta)
        assert (
            file_meta_information(
                "1.2.840.10008.5.1.4.1.1.2",
                sop_instance_uid,
                ImplicitVRLittleEndian,
                PYNETDICOM_IMPLEMENTATION_UID,
                PYNETDICOM_IMPLEMENTATION_VERSION,
            )
            == expected
        )
