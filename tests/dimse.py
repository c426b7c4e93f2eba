"""Test helper: put arbitrary bytes on the wire as a C-STORE request.

pynetdicom's ``send_c_store`` refuses to send what it cannot encode, which is
exactly what the node must survive. This helper builds the C-STORE primitive
itself and sends it as ``Association.send_c_store`` does, with the
association's own thread paused; the pynetdicom internals that takes live in
:mod:`dicom_node.receive.pynetdicom_compat`.
"""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dimse_primitives import C_STORE

from dicom_node.receive.pynetdicom_compat import (
    paused_reactor,
    set_affected_sop_instance_uid_unchecked,
)


def encode_explicit_le(ds: Dataset) -> bytes:
    """Encode a dataset (no file meta) in Explicit VR Little Endian."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def send_raw_c_store(assoc, sop_class_uid: str, sop_instance_uid: str, raw: bytes) -> int:
    """Send ``raw`` as the dataset of a C-STORE request; return the response status."""
    return int(send_raw_c_store_response(assoc, sop_class_uid, sop_instance_uid, raw).Status)


def send_raw_c_store_response(assoc, sop_class_uid: str, sop_instance_uid: str, raw: bytes):
    """Send ``raw`` as the dataset of a C-STORE request; return the C-STORE response primitive
    (Status, ErrorComment)."""
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class_uid)
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = sop_class_uid
    # Unchecked, so that a UID pynetdicom would refuse (over 64 characters) still goes on
    # the wire.
    set_affected_sop_instance_uid_unchecked(req, sop_instance_uid)
    req.Priority = 2
    req.DataSet = BytesIO(raw)
    with paused_reactor(assoc):
        assoc.dimse.send_msg(req, context.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    return rsp
