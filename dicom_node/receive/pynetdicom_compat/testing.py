"""Raw DIMSE for tests and tools that must put what pynetdicom would refuse on the wire.

:func:`paused_reactor` holds an association's own thread so the caller can
send and receive DIMSE messages itself; :func:`set_affected_sop_instance_uid_unchecked`
sets a UID past pynetdicom's validation (over 64 characters).

Part of :mod:`dicom_node.receive.pynetdicom_compat`, the one place for
pynetdicom's internals; import these names from there.

References
----------
pynetdicom 3.0 source (``association.py``, ``dimse_primitives.py``); DICOM
PS3.5 9.1 (UIDs: at most 64 characters); PS3.7 9.1.1.1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydicom.uid import UID
from pynetdicom.association import Association

from dicom_node.receive.pynetdicom_compat import check_pynetdicom_version


@contextmanager
def paused_reactor(assoc: Association, poll_s: float = 0.0001) -> Iterator[Association]:
    """Hold an established association's own thread, so the caller can speak DIMSE itself.

    While paused, ``assoc.dimse.send_msg`` and ``assoc.dimse.get_msg`` are the
    caller's: the association thread neither takes responses off the queue
    nor sends anything. This is what ``Association.send_c_store`` does
    inside; tests use it to send what pynetdicom would refuse to encode.

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        An established association (requestor).
    poll_s : float
        Poll interval, in s, while waiting for the thread to reach its pause.

    Yields
    ------
    pynetdicom.association.Association
        ``assoc``; its thread resumes when the block ends.

    Raises
    ------
    dicom_node.errors.ConfigurationError
        On an unsupported pynetdicom.
    """
    check_pynetdicom_version()
    assoc._reactor_checkpoint.clear()
    try:
        while not assoc._is_paused and assoc.is_alive():
            time.sleep(poll_s)
        yield assoc
    finally:
        assoc._reactor_checkpoint.set()


def set_affected_sop_instance_uid_unchecked(request: Any, uid: str) -> None:
    """Set a DIMSE primitive's Affected SOP Instance UID without pynetdicom's validation.

    For tests that must send a UID pynetdicom refuses (over 64 characters,
    PS3.5 9.1) to check how the node answers it.

    Parameters
    ----------
    request : pynetdicom.dimse_primitives.C_STORE
        The request primitive.
    uid : str
        The UID, sent as is.

    Raises
    ------
    dicom_node.errors.ConfigurationError
        On an unsupported pynetdicom.
    """
    check_pynetdicom_version()
    request._affected_sop_instance_uid = UID(uid)
