"""The Storage SCP's transport: source-address check, TLS handshake and PDU limits.

pynetdicom reads a PDU by trusting its 32-bit length field: a peer that
announces 4 GiB and sends it makes the receiver buffer 4 GiB, and a C-STORE
dataset is collected in memory, fragment after fragment, without bound,
before the handler sees it. :class:`GuardedAssociationServer` protects the
node below pynetdicom's state machine:

* :meth:`~GuardedAssociationServer.verify_request` closes a connection from an
  address outside ``dicom.allowed_networks`` before any PDU is read;
* with TLS, the handshake runs in the connection's own thread (pynetdicom
  does it in the accepting thread, where one silent client would stall
  every other connection), with a timeout; a client whose certificate is not
  trusted is disconnected there;
* every byte an association receives passes a :class:`PduStreamGuard`, which
  follows the PDU framing (PS3.8 9.3) and the P-DATA-TF presentation data
  values (PS3.8 9.3.5, E.2): a PDU longer than ``max_accepted_pdu_bytes``, a
  command set over 64 KiB or a dataset over ``max_dataset_bytes`` gets an
  A-ABORT (source: service provider, reason: invalid PDU parameter value)
  and the connection is closed before more is buffered.

Everything else about malformed PDUs (unknown types, bad items, PDUs out of
sequence) is pynetdicom's state machine: it answers with A-ABORT and closes.

References
----------
DICOM PS3.8 section 9.3 (PDU structure), 9.3.5 (P-DATA-TF), 9.3.8 (A-ABORT),
Annex E.2 (message control header); PS3.15 Annex B (TLS); Python socketserver.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from dicom_node.db.models import utcnow
from dicom_node.receive.access import AddressAllowList
from dicom_node.receive.framing import A_ABORT_INVALID_PARAMETER, PduStreamGuard, ReceiveLimits
from dicom_node.receive.pynetdicom_compat import (
    AcceptorRequestHandler,
    call_when_thread_ends,
    check_pynetdicom_version,
    forget_server,
    make_event_driven,
    tolerate_late_primitives,
    use_socket_class,
    wake_acceptor_awaiting_request,
)

logger = logging.getLogger(__name__)


class GuardedAssociationSocket(AssociationSocket):
    """pynetdicom's association socket with a :class:`PduStreamGuard` on every read.

    Installed by :class:`GuardedRequestHandler`; the guard is in
    :attr:`pdu_guard`.
    """

    pdu_guard: PduStreamGuard

    def recv(self, nr_bytes: int) -> bytearray:
        """Read like :meth:`AssociationSocket.recv`; past a limit, abort and report "closed".

        Returns
        -------
        bytearray
            The bytes read, or an empty bytearray when a limit was exceeded (the
            A-ABORT has been sent and the connection shut down; pynetdicom then
            sees a closed transport and ends the association).
        """
        if self.pdu_guard.violation is not None:
            return bytearray()  # aborted already
        try:
            data = self._recv_exactly(nr_bytes)
        except _StalledError as err:
            self.abort_transport(str(err))
            return bytearray()
        except OSError:
            self._transport_closed()
            raise
        if len(data) < nr_bytes:  # pynetdicom returns short only when the peer closed
            self._transport_closed()
        try:
            violation = self.pdu_guard.feed(data)
        except Exception:  # the guard must never break the association thread
            logger.exception("PDU guard failed; limits not enforced on this association")
            return data
        if violation is None:
            return data
        self.abort_transport(violation)
        return bytearray()

    def _recv_exactly(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` into one buffer, as many as the kernel has at each call.

        pynetdicom's ``AssociationSocket.recv`` reads 4 KiB per call and
        appends each piece to a growing bytearray: 64 calls for one 256 KiB
        PDU. Here each ``recv_into`` fills the rest of a buffer of the final
        size. As pynetdicom's, it returns fewer bytes only when the peer
        closed the connection.

        pynetdicom calls it once bytes are waiting; a peer that then stops
        before ``nr_bytes`` arrived (a stalled, partial PDU) is given
        ``limits.stall_timeout_s`` seconds in all, PS3.8 9.1.5's ARTIM idea
        applied inside a PDU, so a silent peer cannot hold an association
        slot for ever.

        Raises
        ------
        _StalledError
            If the rest did not arrive within the stall timeout.
        OSError
            If the socket fails or is closed on this side.
        """
        sock = self.socket
        if sock is None:
            raise OSError("the association's socket is closed")
        stall_s = self.pdu_guard.limits.stall_timeout_s
        data = bytearray(nr_bytes)
        view = memoryview(data)
        received = 0
        previous = sock.gettimeout()
        deadline = None if stall_s is None else time.monotonic() + stall_s
        try:
            while received < nr_bytes:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise _StalledError(received, nr_bytes, stall_s)
                    sock.settimeout(left)
                try:
                    count = sock.recv_into(view[received:], nr_bytes - received)
                except TimeoutError:
                    raise _StalledError(received, nr_bytes, stall_s) from None
                if not count:
                    break
                received += count
        finally:
            view.release()
            if deadline is not None:
                with suppress(OSError):
                    sock.settimeout(previous)
        if received < nr_bytes:
            del data[received:]
        return data

    def abort_transport(self, reason: str) -> None:
        """Send an A-ABORT (service provider, invalid parameter) and shut the connection.

        Safe from the upper layer's own thread (pynetdicom's ``Association.abort``
        is not: it waits for that thread). The next read sees a closed
        transport and the association ends.

        Parameters
        ----------
        reason : str
            Logged, and kept in ``pdu_guard.violation`` for the audit record.
        """
        if self.pdu_guard.violation is None:
            self.pdu_guard.violation = reason
        peer = getattr(self.assoc.requestor, "address", "?")
        logger.warning("association from %s aborted: %s", peer, reason)
        raw = self.socket
        if raw is not None:
            with suppress(OSError, ValueError):
                raw.sendall(A_ABORT_INVALID_PARAMETER)
            linger_after_abort(raw)
            with suppress(OSError, ValueError):
                raw.shutdown(socket.SHUT_RDWR)
        self._transport_closed()

    def _transport_closed(self) -> None:
        """Wake an acceptor still waiting for the A-ASSOCIATE-RQ: none will come now.

        See :func:`~dicom_node.receive.pynetdicom_compat.wake_acceptor_awaiting_request`.
        """
        wake_acceptor_awaiting_request(self.assoc)


#: After an A-ABORT, how long (s) and how much (bytes) the node keeps reading and
#: discarding what the peer still sends before it closes the socket.
ABORT_LINGER_S = 2.0
ABORT_LINGER_BYTES = 64 * 1024**2


def linger_after_abort(
    raw: socket.socket, *, seconds: float = ABORT_LINGER_S, max_bytes: int = ABORT_LINGER_BYTES
) -> int:
    """Half-close after an A-ABORT and drain the peer's data, so the abort is read.

    A socket closed with unread input makes TCP send a reset, and a peer that is
    still sending (a PDU streamed past the length cap) then loses the A-ABORT that
    was already on its way: it sees "connection reset" instead of the reason. This
    is the lingering close of HTTP servers: send FIN after the abort, read and
    discard until the peer closes, ``seconds`` pass or ``max_bytes`` arrived.

    Parameters
    ----------
    raw : socket.socket
        The connection (plain or TLS); errors on it are swallowed.
    seconds : float
        Longest time spent draining (s).
    max_bytes : int
        Most bytes read and discarded.

    Returns
    -------
    int
        Bytes discarded.

    References
    ----------
    RFC 9293 3.6 (closing a connection; a reset when data is unread); PS3.8 9.3.8
    (A-ABORT PDU).
    """
    discarded = 0
    deadline = time.monotonic() + seconds
    with suppress(OSError, ValueError):
        raw.shutdown(socket.SHUT_WR)
        while discarded < max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            raw.settimeout(left)
            part = raw.recv(65536)
            if not part:
                break
            discarded += len(part)
    return discarded


class _StalledError(OSError):
    """The peer stopped inside a PDU: the rest did not come within the stall timeout."""

    def __init__(self, received: int, wanted: int, timeout_s: float | None) -> None:
        super().__init__(
            f"stalled inside a PDU: {received} of {wanted} bytes of a read "
            f"arrived in {timeout_s:g} s"
        )


#: C-STORE-RQ command field (PS3.7 E.1-1).
C_STORE_RQ = 0x0001


def abort_on_invalid_command(event: Any) -> None:
    """EVT_DIMSE_RECV handler: abort at once on a C-STORE-RQ that lacks its SOP UIDs.

    pynetdicom cannot turn such a request into a primitive, answers nothing and
    leaves the peer waiting until the network timeout; the command cannot be
    answered either (the response needs the request's UIDs), so the node aborts
    the association (PS3.7 9.1.1.1: Affected SOP Class and Instance UID are
    mandatory in a C-STORE-RQ).

    Parameters
    ----------
    event : pynetdicom.events.Event
        The EVT_DIMSE_RECV event (``event.message``: the DIMSE message).

    References
    ----------
    DICOM PS3.7 9.1.1.1 (C-STORE request parameters), 9.3.1.1 (C-STORE-RQ command fields).
    """
    try:
        command = event.message.command_set
        if int(command.get("CommandField", 0)) != C_STORE_RQ:
            return
        missing = [
            keyword
            for keyword in ("AffectedSOPClassUID", "AffectedSOPInstanceUID", "MessageID")
            if not str(command.get(keyword, "") or "").strip()
        ]
    except Exception:  # noqa: BLE001 - an unreadable command set is as bad as a missing field
        missing = ["a readable command set"]
    if not missing:
        return
    sock = getattr(event.assoc.dul, "socket", None)
    if isinstance(sock, GuardedAssociationSocket):
        sock.abort_transport(f"C-STORE-RQ without {', '.join(missing)}")


class GuardedRequestHandler(AcceptorRequestHandler):
    """pynetdicom's request handler, with a :class:`GuardedAssociationSocket`.

    Each new association gets the PDU guard on its socket, a state machine
    that drops primitives arriving after the end, event-driven reactors, and
    frees its source address's slot when its thread ends (all installed
    through :mod:`dicom_node.receive.pynetdicom_compat`).
    """

    server: GuardedAssociationServer

    def prepare_association(self, assoc: Any) -> None:
        """Install the guard, the late-primitive tolerance and the reactors on ``assoc``.

        Raises
        ------
        dicom_node.errors.ConfigurationError
            On an unsupported pynetdicom.
        """
        sock = use_socket_class(assoc, GuardedAssociationSocket)
        sock.pdu_guard = PduStreamGuard(self.server.guard.limits)
        tolerate_late_primitives(assoc.dul.state_machine)
        make_event_driven(assoc)
        # The association thread outlives this handler: its end frees the address's slot.
        server, address = self.server, self.client_address
        call_when_thread_ends(assoc, lambda: server.release_address(address))


#: ``on_refused(peer_address, reason, started_at)``.
RefusedCallback = Callable[[str, str, datetime], None]


@dataclass
class ConnectionGuard:
    """What :class:`GuardedAssociationServer` enforces before and during an association.

    Parameters
    ----------
    allow_list : AddressAllowList
        Source networks allowed; empty allows every address.
    limits : ReceiveLimits
        PDU, command and dataset size limits.
    tls_context : ssl.SSLContext or None
        Server-side TLS context (:func:`dicom_node.security.tls.server_context`);
        None for plain TCP.
    handshake_timeout_s : float
        Seconds a client has to complete the TLS handshake.
    max_connections_per_address : int or None
        Open connections one source address may hold at once; the next is
        closed at accept (so one host cannot take every association slot).
        None for no cap.
    on_refused : callable or None
        Called with ``(peer_address, reason, started_at)`` for each connection
        closed before an association (address not allowed, TLS failure).
    """

    allow_list: AddressAllowList
    limits: ReceiveLimits
    tls_context: ssl.SSLContext | None = None
    handshake_timeout_s: float = 10.0
    max_connections_per_address: int | None = None
    on_refused: RefusedCallback | None = None

    def refused(self, client_address: Any, reason: str, started_at: datetime) -> None:
        """Log and report a connection closed before an association."""
        peer = _peer(client_address)
        logger.warning("connection from %s refused: %s", peer, reason)
        if self.on_refused is not None:
            try:
                self.on_refused(peer, reason, started_at)
            except Exception:
                logger.exception("on_refused failed")


def _connection_key(client_address: Any) -> str:
    """One connection's key: its peer address and port."""
    return _peer(client_address)


def _peer(client_address: Any) -> str:
    if isinstance(client_address, tuple) and len(client_address) >= 2:
        return f"{client_address[0]}:{client_address[1]}"
    return str(client_address)


class GuardedAssociationServer(ThreadedAssociationServer):
    """A threaded association server that checks addresses, does TLS per thread and caps PDUs.

    Made by ``AE.make_server(..., server_class=GuardedAssociationServer,
    guard=...)``. ``ssl_context``, when given, replaces ``guard.tls_context``.

    Parameters
    ----------
    ae, address, ae_title, contexts, ssl_context, evt_handlers
        As for :class:`pynetdicom.transport.AssociationServer`.
    guard : ConnectionGuard
        Address allow-list, limits, TLS context and the refusal callback.

    Raises
    ------
    dicom_node.errors.ConfigurationError
        On a pynetdicom outside
        :data:`~dicom_node.receive.pynetdicom_compat.SUPPORTED_PYNETDICOM`.
    OSError
        If the address cannot be bound.

    References
    ----------
    DICOM PS3.8 9.3; PS3.15 Annex B; Python ``socketserver.BaseServer.verify_request``.
    """

    def __init__(
        self,
        ae: Any,
        address: Any,
        ae_title: str,
        contexts: list,
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        check_pynetdicom_version()  # its request handler patches pynetdicom 3.0 internals
        self.guard = guard
        if ssl_context is not None:
            self.guard.tls_context = ssl_context
        # No context for pynetdicom: it would do the handshake in the accepting thread.
        super().__init__(
            ae,
            address,
            ae_title,
            contexts,
            None,
            evt_handlers=evt_handlers,
            request_handler=GuardedRequestHandler,
        )
        self.bind(evt.EVT_DIMSE_RECV, abort_on_invalid_command)
        self._per_address: dict[str, int] = {}
        self._host_of: dict[Any, str] = {}
        self._per_address_lock = threading.Lock()

    @staticmethod
    def _host(client_address: Any) -> str:
        return str(client_address[0] if isinstance(client_address, tuple) else client_address)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Return False (the connection is closed at once) for an address not allowed,
        or one that already holds ``max_connections_per_address`` connections."""
        host = self._host(client_address)
        if not self.guard.allow_list.allows(host):
            self.guard.refused(
                client_address, "source address not in dicom.allowed_networks", utcnow()
            )
            return False
        cap = self.guard.max_connections_per_address
        with self._per_address_lock:
            open_now = self._per_address.get(host, 0)
            if cap is None or open_now < cap:
                self._per_address[host] = open_now + 1
                self._host_of[_connection_key(client_address)] = host
                return True
        self.guard.refused(
            client_address,
            f"{open_now} connections from this address are open "
            f"(dicom.max_associations_per_address = {cap})",
            utcnow(),
        )
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Run the connection; free its per-address slot if no association took it over."""
        try:
            super().process_request_thread(request, client_address)
        except BaseException:
            self.release_address(client_address)
            raise

    def release_address(self, client_address: Any) -> None:
        """Free the per-address slot of a connection (once; later calls do nothing).

        Called when its association's thread ends, or when the connection
        ends before an association took it over (TLS failure, error).
        """
        with self._per_address_lock:
            host = self._host_of.pop(_connection_key(client_address), None)
            if host is not None and host in self._per_address:
                left = self._per_address[host] - 1
                if left > 0:
                    self._per_address[host] = left
                else:
                    del self._per_address[host]

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Complete the TLS handshake (when configured) in this thread, then hand over."""
        context = self.guard.tls_context
        if context is not None:
            started_at = utcnow()
            previous_timeout = request.gettimeout()
            try:
                request.settimeout(self.guard.handshake_timeout_s)
                wrapped = context.wrap_socket(
                    request, server_side=True, do_handshake_on_connect=False
                )
                wrapped.do_handshake()
                wrapped.settimeout(previous_timeout)
            except (ssl.SSLError, OSError, ValueError) as err:
                reason = getattr(err, "reason", None) or err.__class__.__name__
                with suppress(OSError):
                    request.close()
                self.release_address(client_address)
                self.guard.refused(client_address, f"TLS handshake failed: {reason}", started_at)
                return
            request = wrapped
        try:
            # typeshed's Self in RequestHandlerClass does not bind in a subclass
            self.RequestHandlerClass(request, client_address, self)  # type: ignore[arg-type]
        except BaseException:
            self.release_address(client_address)
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log an exception of a connection's thread (instead of printing it) and go on."""
        logger.exception("connection from %s failed", _peer(client_address))

    def shutdown(self) -> None:
        """Stop serving, close the socket and abort open associations.

        The server made by ``AE.make_server`` is not in the AE's list of
        running servers, which pynetdicom's own ``shutdown`` removes it from.
        """
        socketserver.BaseServer.shutdown(self)
        self.server_close()
        forget_server(self.ae, self)
