"""The compat module names the pynetdicom releases it supports and refuses the others.

On an unsupported release every function that installs something on
pynetdicom objects raises; none of them falls back to pynetdicom's stock
behaviour (issue 14 item 1).
"""

from __future__ import annotations

import re
import socket
import socketserver
import subprocess
import sys
import tomllib
from pathlib import Path

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AssociationSocket

from dicom_node.errors import ConfigurationError
from dicom_node.receive import pynetdicom_compat as compat
from dicom_node.receive.access import AddressAllowList
from dicom_node.receive.framing import ReceiveLimits
from dicom_node.receive.transport import (
    ConnectionGuard,
    GuardedAssociationServer,
    GuardedAssociationSocket,
)

UNSUPPORTED = ["2.1.1", "3.1.0", "4.0.0", "dev"]


@pytest.mark.parametrize("version", UNSUPPORTED)
def test_an_unsupported_pynetdicom_stops_the_node(version):
    with pytest.raises(ConfigurationError, match=f"pynetdicom {version} is not supported"):
        compat.check_pynetdicom_version(version)


def test_the_installed_pynetdicom_is_supported():
    compat.check_pynetdicom_version()  # what CI installs from pyproject.toml
    assert compat.pynetdicom_is_supported("3.0.0") and compat.pynetdicom_is_supported("3.0.4")
    assert not compat.pynetdicom_is_supported("2.9.9")


def test_pyproject_pins_the_range_the_compat_module_supports():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("pynetdicom")]
    (low_major, low_minor), (high_major, high_minor) = compat.SUPPORTED_PYNETDICOM
    assert pins == [f"pynetdicom>={low_major}.{low_minor},<{high_major}.{high_minor}"], pins


_OPEN_SOCKETS: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets():
    yield
    while _OPEN_SOCKETS:
        _OPEN_SOCKETS.pop().close()


def _acceptor() -> Association:
    """A new acceptor association with its socket, not started (as the request handler
    makes it before its threads start)."""
    assoc = Association(AE(), "acceptor")
    _OPEN_SOCKETS.append(client := socket.socket())
    assoc.set_socket(AssociationSocket(assoc, client_socket=client))
    return assoc


def _server() -> GuardedAssociationServer:
    ae = AE()
    ae.add_supported_context(Verification)
    guard = ConnectionGuard(allow_list=AddressAllowList([]), limits=ReceiveLimits())
    return ae.make_server(("127.0.0.1", 0), server_class=GuardedAssociationServer, guard=guard)


INSTALLERS = {
    "make_event_driven": lambda: compat.make_event_driven(_acceptor()),
    "use_socket_class": lambda: compat.use_socket_class(_acceptor(), GuardedAssociationSocket),
    "tolerate_late_primitives": lambda: compat.tolerate_late_primitives(
        _acceptor().dul.state_machine
    ),
    "call_when_thread_ends": lambda: compat.call_when_thread_ends(_acceptor(), lambda: None),
    "accept_overlong_uids_for_refusal": compat.accept_overlong_uids_for_refusal,
    "set_affected_sop_instance_uid_unchecked": lambda: (
        compat.set_affected_sop_instance_uid_unchecked(C_STORE(), "1.2.3")
    ),
    "GuardedAssociationServer": _server,
}


@pytest.mark.parametrize("installer", sorted(INSTALLERS))
@pytest.mark.parametrize("version", ["3.1.0", "2.1.1"])
def test_installing_on_an_unsupported_pynetdicom_raises_instead_of_falling_back(
    installer, version, monkeypatch
):
    monkeypatch.setattr(pynetdicom, "__version__", version)
    with pytest.raises(ConfigurationError, match=re.escape(f"pynetdicom {version} is not")):
        INSTALLERS[installer]()


def test_the_reactors_are_installed_on_a_new_acceptor_only():
    assoc = _acceptor()
    assert compat.make_event_driven(assoc) is True
    assert isinstance(assoc, compat.EventDrivenAssociation)
    assert isinstance(assoc.dul, compat.EventDrivenDUL)
    assoc.dul.kill_dul()
    assoc.dul.run_reactor()  # killed: returns at once, closing its wake-up pipe
    requestor = Association(AE(), "requestor")
    assert compat.make_event_driven(requestor) is False
    assert type(requestor) is Association


def test_the_socket_class_is_swapped_once_and_checked():
    assoc = _acceptor()
    sock = compat.use_socket_class(assoc, GuardedAssociationSocket)
    assert sock is assoc.dul.socket and isinstance(sock, GuardedAssociationSocket)
    with pytest.raises(TypeError):
        compat.use_socket_class(assoc, GuardedAssociationSocket)  # not a plain socket now
    with pytest.raises(TypeError):
        compat.use_socket_class(_acceptor(), dict)  # type: ignore[type-var]


def test_standard_event_logging_follows_the_switch():
    before = compat.standard_event_logging_enabled()
    try:
        compat.log_standard_events(False)
        assert not compat.standard_event_logging_enabled()
        compat.log_standard_events(True)
        assert compat.standard_event_logging_enabled()
    finally:
        compat.log_standard_events(before)


def test_forget_server_removes_only_a_listed_server():
    ae = AE()
    ae.add_supported_context(Verification)
    listed = ae.start_server(("127.0.0.1", 0), block=False)
    unlisted = ae.make_server(("127.0.0.1", 0))
    try:
        compat.forget_server(ae, unlisted)  # not in the list: nothing to do, no error
        compat.forget_server(ae, listed)
        ae.shutdown()  # stops only the servers still in its list: none now
        assert listed.socket.fileno() != -1, "the AE still knew the forgotten server"
    finally:
        socketserver.BaseServer.shutdown(listed)  # its serve_forever thread ends
        listed.server_close()
        unlisted.server_close()


def test_pure_framing_imports_no_pynetdicom():
    code = (
        "import sys, dicom_node.receive.framing as f; "
        "f.PduStreamGuard(f.ReceiveLimits()).feed(bytes(10)); "
        "assert 'pynetdicom' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
