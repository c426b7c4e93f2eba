"""A peer that stops inside a PDU is cut at the network timeout; one address cannot take
every association slot. Raw sockets on loopback against a real Storage SCP.
"""

from __future__ import annotations

import socket
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.integration.test_fuzz_receive import Node

pytestmark = pytest.mark.integration

STALL_TIMEOUT_S = 2.0
#: A-ASSOCIATE-RQ PDU header announcing 68 bytes, then only the first 12 of them.
PARTIAL_ASSOCIATE_RQ = b"\x01\x00\x00\x00\x00\x44" + b"\x00\x01\x00\x00" + b"DICOM_NODE  "[:8]


@pytest.fixture
def node(tmp_path):
    instance = Node(tmp_path / "node", network_timeout_s=STALL_TIMEOUT_S, max_associations=10)
    instance.scp.start()
    yield instance
    instance.close()


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the node ends the connection (A-ABORT or close), None if still open."""
    sock.settimeout(seconds)
    started = time.monotonic()
    try:
        while True:
            data = sock.recv(4096)
            if not data or data[0] == 0x07:  # closed, or an A-ABORT PDU
                return time.monotonic() - started
    except TimeoutError:
        return None
    except OSError:
        return time.monotonic() - started


def echo(port: int, source: str = "127.0.0.1") -> int | None:
    ae = AE(ae_title="LEGIT")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE", bind_address=(source, 0))
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


@pytest.mark.parametrize(
    "payload",
    [b"\x01", b"\x01\x00\x00", PARTIAL_ASSOCIATE_RQ],
    ids=["1 byte", "3 bytes", "header and part of the body"],
)
def test_a_partial_pdu_before_association_is_cut_at_the_timeout(node, payload):
    sock = socket.create_connection(("127.0.0.1", node.scp.port))
    try:
        sock.sendall(payload)
        waited = closed_within(sock, STALL_TIMEOUT_S + 8.0)
    finally:
        sock.close()
    assert waited is not None, "the node kept a stalled connection open"


def test_a_stall_inside_p_data_is_cut_and_the_node_serves_on(node):
    ae = AE(ae_title="STALLER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="DICOM_NODE")
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    # P-DATA-TF announcing 100 bytes, then 10 of them: the node waits for the rest.
    raw.sendall(b"\x04\x00\x00\x00\x00\x64" + bytes(10))
    deadline = time.monotonic() + STALL_TIMEOUT_S + 8.0
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not assoc.is_established, "the node kept a stalled association open"
    assert echo(node.scp.port) == 0x0000


def test_one_address_cannot_take_every_slot(node):
    stalled = []
    try:
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", node.scp.port))
            sock.sendall(b"\x01\x00\x00")
            stalled.append(sock)
        time.sleep(0.3)
        # At most half of the 10 slots are held by 127.0.0.1; another host gets in at once.
        assert echo(node.scp.port, source="127.0.0.2") == 0x0000
        cut_at_once = sum(closed_within(s, 0.5) is not None for s in stalled)
        assert cut_at_once >= 5, cut_at_once
    finally:
        for sock in stalled:
            sock.close()
    # And once the stalls are cut, the same address is served again.
    time.sleep(STALL_TIMEOUT_S + 1.0)
    assert echo(node.scp.port) == 0x0000
