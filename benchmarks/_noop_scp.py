"""A pynetdicom Storage SCP that stores nothing: the floor of any pynetdicom-based receiver.

Usage (started by :mod:`benchmarks.ingest` as the peer ``pynetdicom-noop``)::

    python -m benchmarks._noop_scp PORT [MAX_PDU_BYTES]

Same presentation contexts and PDU size as the node; the C-STORE handler
answers 0x0000 at once. Its time is what pynetdicom's network layer costs
before the node does anything (header, spool, database).
"""

from __future__ import annotations

import sys
import threading

from pynetdicom import AE, evt

from dicom_node.receive.scp import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES


def main(argv: list[str]) -> None:
    """Serve on 127.0.0.1:``argv[0]`` until killed."""
    port = int(argv[0])
    ae = AE(ae_title="NOOP")
    ae.maximum_pdu_size = int(argv[1]) if len(argv) > 1 else 262144
    ae.add_supported_context("1.2.840.10008.1.1")
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000),
                      (evt.EVT_C_ECHO, lambda event: 0x0000)],
    )
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
