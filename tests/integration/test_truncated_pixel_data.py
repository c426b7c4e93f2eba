"""Truncated Pixel Data is refused at receive with 0xC210 and the reason; the series goes on.

The header says how long the pixel data must be (PS3.5 7.1 and 8.1.1), so a
slice whose Pixel Data runs past the bytes received, or holds fewer bytes than
Rows x Columns x Bits Allocated / 8, cannot be an image. Over one real loopback
association: the good slices of a series are stored, each bad one gets
0xC210 with an Error Comment, and the association stays up.
"""

from __future__ import annotations

import struct

import pydicom
import pytest
from pynetdicom import AE

from dicom_node.receive.header import parse_header
from dicom_node.training.synthetic import with_new_uids
from tests.dimse import encode_explicit_le, send_raw_c_store_response
from tests.integration.test_fuzz_receive import Node

pytestmark = pytest.mark.integration

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
PIXEL_DATA_HEADER = b"\xe0\x7f\x10\x00OW\x00\x00"  # (7FE0,0010) OW, Explicit VR LE


def with_pixel_data_length(raw: bytes, declared: int, present: int) -> bytes:
    """Re-declare the Pixel Data length as ``declared`` and keep ``present`` value bytes."""
    at = raw.rindex(PIXEL_DATA_HEADER)
    value = at + len(PIXEL_DATA_HEADER) + 4
    head = raw[: at + len(PIXEL_DATA_HEADER)]
    return head + struct.pack("<I", declared) + raw[value : value + present]


@pytest.fixture
def node(tmp_path):
    instance = Node(tmp_path / "node")
    yield instance
    instance.close()


def test_truncated_pixel_data_is_refused_and_the_rest_of_the_series_is_stored(node, head_ct_dir):
    files = sorted(head_ct_dir.glob("*.dcm"))[:6]
    series = with_new_uids([pydicom.dcmread(p) for p in files], seed=4242)
    encoded = [encode_explicit_le(ds) for ds in series]
    full = len(series[0].PixelData)
    bad = {
        1: with_pixel_data_length(encoded[1], 0xFFFFFFF0, 1000),  # declared far past the end
        2: with_pixel_data_length(encoded[2], 20000, 20000),  # a consistent but short element
        3: encoded[3][: len(encoded[3]) - full // 2],  # the sender stopped halfway
    }
    node.scp.start()
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_LE)
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        responses = {}
        for index, ds in enumerate(series):
            raw = bad.get(index, encoded[index])
            responses[index] = send_raw_c_store_response(
                assoc, CT_IMAGE_STORAGE, str(ds.SOPInstanceUID), raw
            )
        assert assoc.is_established, "one bad slice must not end the association"
    finally:
        assoc.release()
    for index, rsp in responses.items():
        if index in bad:
            assert rsp.Status == 0xC210, (index, hex(rsp.Status))
            assert "Pixel Data truncated" in str(rsp.ErrorComment), rsp.ErrorComment
        else:
            assert rsp.Status == 0x0000, (index, hex(rsp.Status))
    assert node.count() == len(series) - len(bad)
    node.check_spool_and_database_agree()


def test_the_parser_names_the_rule_and_the_figures(head_ct_dir):
    """The job-side message (also logged) has the byte counts the header required."""
    ds = with_new_uids([pydicom.dcmread(sorted(head_ct_dir.glob("*.dcm"))[0])], seed=1)[0]
    meta = pydicom.dataset.FileMetaDataset()
    meta.TransferSyntaxUID = EXPLICIT_LE
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    buffer = pydicom.filebase.DicomBytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    part10 = buffer.getvalue()
    short = with_pixel_data_length(part10, 20000, 20000)
    with pytest.raises(Exception, match=r"20000 bytes where Rows 512 x Columns 512 .* need 524288"):
        parse_header(short)
    assert parse_header(part10).sop_instance_uid == str(ds.SOPInstanceUID)
