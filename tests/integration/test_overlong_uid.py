"""An Affected SOP Instance UID over 64 characters gets a failure status, not an A-ABORT.

pynetdicom refuses such a UID while it decodes the command set and aborts the
association ("Received an invalid DIMSE message", an ERROR traceback), so the
sender lost every other instance of it. Over one real loopback association:
the bad request is answered 0xC210 with an Error Comment, the association
stays up, and the next good instance is stored.
"""

from __future__ import annotations

import logging

import pydicom
import pytest
from pydicom.uid import UID
from pynetdicom import AE

from dicom_node.training.synthetic import with_new_uids
from tests.dimse import encode_explicit_le, send_raw_c_store_response
from tests.integration.test_fuzz_receive import Node

pytestmark = pytest.mark.integration

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture
def node(tmp_path):
    instance = Node(tmp_path / "node")
    yield instance
    instance.close()


def test_an_overlong_affected_sop_instance_uid_is_refused_with_a_status(node, head_ct_dir, caplog):
    files = sorted(head_ct_dir.glob("*.dcm"))[:2]
    first, second = with_new_uids([pydicom.dcmread(p) for p in files], seed=6464)
    long_uid = "1.2.826.0.1.3680043.8.498." + "1" * 60  # 86 characters
    first.SOPInstanceUID = long_uid
    node.scp.start()
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_LE)
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        with caplog.at_level(logging.WARNING):
            bad = send_raw_c_store_response(
                assoc, CT_IMAGE_STORAGE, UID(long_uid), encode_explicit_le(first)
            )
            assert assoc.is_established, "one bad UID must not end the association"
            good = send_raw_c_store_response(
                assoc, CT_IMAGE_STORAGE, str(second.SOPInstanceUID), encode_explicit_le(second)
            )
    finally:
        assoc.release()
    assert bad.Status == 0xC210, hex(bad.Status)
    assert "longer than 64 characters" in str(bad.ErrorComment), bad.ErrorComment
    assert good.Status == 0x0000, hex(good.Status)
    assert node.count() == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    ]
    node.check_spool_and_database_agree()
