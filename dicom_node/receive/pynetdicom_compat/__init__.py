"""The one place where the node touches pynetdicom's internals (pynetdicom 3.0.x only).

Everything here depends on how pynetdicom 3.0 works inside: private
attributes and modules, methods replaced on live objects, class swaps, copied
loops. No other module of ``dicom_node`` or ``tests`` may do any of that
(``tests/unit/test_no_private_pynetdicom.py`` scans them), so a new pynetdicom
release is checked here and only here. Every function that installs
something on pynetdicom objects first calls :func:`check_pynetdicom_version`
and raises :class:`~dicom_node.errors.ConfigurationError` on a release outside
:data:`SUPPORTED_PYNETDICOM`: the node stops, it never falls back to stock
behaviour (pyproject.toml pins the same range).

What is here, and why:

- version: :data:`SUPPORTED_PYNETDICOM`, :func:`pynetdicom_is_supported`,
  :func:`check_pynetdicom_version`;
- switches of ``pynetdicom._config``, documented by pynetdicom as its
  configuration module: :func:`accept_overlong_uids_for_refusal`
  (``VALIDATORS["UI"]``: a UID over 64 characters in a command set would
  otherwise abort the whole association; the C-STORE handler answers it with
  0xC210 and a reason instead) and :func:`log_standard_events`
  (``LOG_HANDLER_LEVEL``);
- the AE's private server list: :func:`forget_server`;
- acceptor set-up (:class:`AcceptorRequestHandler`): a hook into
  ``RequestHandler._create_association`` that lets
  :mod:`dicom_node.receive.transport` put its PDU guard on each new
  association's socket (:func:`use_socket_class`, a ``__class__`` swap), make
  the state machine drop primitives that arrive after the end
  (:func:`tolerate_late_primitives`), free a per-address slot when the
  association thread ends (:func:`call_when_thread_ends`) and wake an acceptor
  still waiting for its A-ASSOCIATE-RQ (:func:`wake_acceptor_awaiting_request`);
- event-driven reactors (:func:`make_event_driven`): copies of pynetdicom 3.0's
  DUL and acceptor association loops that wait on the socket and on events
  instead of sleeping 1 ms;
- raw DIMSE for tests and tools that must put what pynetdicom would refuse on
  the wire: :func:`paused_reactor`, :func:`set_affected_sop_instance_uid_unchecked`.

Pure PS3.8 framing (:class:`~dicom_node.receive.framing.PduStreamGuard`) is
not here: it needs no pynetdicom at all.

References
----------
pynetdicom 3.0 source (``association.py``, ``dul.py``, ``transport.py``,
``fsm.py``) and "Configuration options" (``_config``); DICOM PS3.5 9.1 (UIDs:
at most 64 characters); PS3.7 9.1.1.1; PS3.8 9.2 (upper-layer state machine),
Table 9-10.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import pynetdicom
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import InvalidEventError
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicom_node.errors import ConfigurationError

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- version

#: The pynetdicom releases whose internals this module uses, as (low, high): from 3.0
#: inclusive to 3.1 exclusive (pyproject.toml pins the same: ``pynetdicom>=3.0,<3.1``).
SUPPORTED_PYNETDICOM = ((3, 0), (3, 1))


def pynetdicom_is_supported(version: str | None = None) -> bool:
    """Whether a pynetdicom version is in :data:`SUPPORTED_PYNETDICOM`.

    Parameters
    ----------
    version : str or None
        A version string such as ``"3.0.4"``; the installed one
        (``pynetdicom.__version__``, read at each call) when None.

    Returns
    -------
    bool
        False also for a version string that does not start with two integers.
    """
    version = version or pynetdicom.__version__
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    low, high = SUPPORTED_PYNETDICOM
    return low <= major_minor < high


def check_pynetdicom_version(version: str | None = None) -> None:
    """Refuse to run on a pynetdicom outside :data:`SUPPORTED_PYNETDICOM`.

    The reactors and the acceptor hooks below replace or patch pynetdicom
    3.0's own loops and objects; on another release they would be wrong in
    ways no test here sees, so the node stops instead of falling back.

    Parameters
    ----------
    version : str or None
        A version string such as ``"3.0.4"``; the installed one when None.

    Raises
    ------
    dicom_node.errors.ConfigurationError
        If the version is outside the supported range, naming both.
    """
    version = version or pynetdicom.__version__
    low, high = SUPPORTED_PYNETDICOM
    if not pynetdicom_is_supported(version):
        raise ConfigurationError(
            f"pynetdicom {version} is not supported: dicom-node needs pynetdicom >= "
            f"{low[0]}.{low[1]}, < {high[0]}.{high[1]} (pip install 'pynetdicom>=3.0,<3.1')"
        )


# --------------------------------------------------------------------------- _config switches

#: UIDs longer than this are still refused by the decoder: nothing legitimate is
#: that long, and a bound keeps what is carried into logs and responses small.
MAX_DECODED_UID_CHARS = 256

_installed: Callable[[Any], tuple[bool, str]] | None = None


def accept_overlong_uids_for_refusal() -> None:
    """Let pynetdicom decode UIDs of 65-256 characters instead of aborting the association.

    Only the length rule is relaxed; empty values and every other check of
    pynetdicom's own UI validator stay. The node itself refuses such a UID
    where it handles the request (0xC210 with an Error Comment), so nothing
    with an invalid UID is stored. Idempotent.

    Raises
    ------
    dicom_node.errors.ConfigurationError
        On an unsupported pynetdicom (the wrapper reads 3.0's refusal text).

    References
    ----------
    pynetdicom ``_config.VALIDATORS`` (2.0+); PS3.5 9.1.
    """
    global _installed
    check_pynetdicom_version()
    if _installed is not None and _config.VALIDATORS.get("UI") is _installed:
        return
    original = _config.VALIDATORS["UI"]

    def validate_ui(value: Any) -> tuple[bool, str]:
        ok, reason = original(value)
        if ok or not isinstance(value, str):
            return ok, reason
        if 64 < len(value) <= MAX_DECODED_UID_CHARS and "64 characters" in reason:
            return True, ""
        return ok, reason

    _config.VALIDATORS["UI"] = validate_ui
    _installed = validate_ui


def log_standard_events(enabled: bool) -> None:
    """Turn pynetdicom's standard event logging (every PDU and DIMSE message) on or off.

    Set before an AE's server or associations are made: pynetdicom binds its
    standard handlers when each is created. The node turns them on only when
    the ``pynetdicom`` logger is at DEBUG; at INFO they write a line per PDU.

    Parameters
    ----------
    enabled : bool
        True for pynetdicom's "standard" handlers, False for none.

    References
    ----------
    pynetdicom ``_config.LOG_HANDLER_LEVEL`` ("standard" or "none").
    """
    _config.LOG_HANDLER_LEVEL = "standard" if enabled else "none"


def standard_event_logging_enabled() -> bool:
    """Whether pynetdicom's standard event logging is on (see :func:`log_standard_events`).

    References
    ----------
    pynetdicom ``_config.LOG_HANDLER_LEVEL``.
    """
    return _config.LOG_HANDLER_LEVEL == "standard"


# --------------------------------------------------------------------------- AE servers


def forget_server(ae: Any, server: Any) -> None:
    """Drop ``server`` from the AE's list of running servers (no error if absent).

    A server made by ``AE.make_server`` is not in that list; one started with
    ``AE.start_server`` is, and ``AE.shutdown`` would stop it again.

    Parameters
    ----------
    ae : pynetdicom.ae.ApplicationEntity
        The AE that made the server.
    server : pynetdicom.transport.AssociationServer
        The server, already shut down.
    """
    servers = getattr(ae, "_servers", None)
    if isinstance(servers, list) and server in servers:
        servers.remove(server)


# --------------------------------------------------------------------------- acceptor set-up

#: Upper-layer events caused by the local association thread (PS3.8 Table 9-10: A-ASSOCIATE,
#: P-DATA, A-RELEASE and A-ABORT request/response primitives).
LOCAL_PRIMITIVE_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})

_SocketT = TypeVar("_SocketT", bound=AssociationSocket)


class AcceptorRequestHandler(RequestHandler):
    """pynetdicom's request handler with a hook on each new acceptor association.

    Subclasses override :meth:`prepare_association`, which runs after
    pynetdicom has made the association (socket, contexts, handlers bound)
    and before its threads start. Made only on a supported pynetdicom.

    Raises
    ------
    dicom_node.errors.ConfigurationError
        When a connection is handled on an unsupported pynetdicom.
    """

    def prepare_association(self, assoc: Association) -> None:
        """Prepare a new, not yet started acceptor association (default: nothing)."""

    def _create_association(self) -> Association:
        check_pynetdicom_version()
        assoc = super()._create_association()
        self.prepare_association(assoc)
        return assoc


def use_socket_class(assoc: Association, socket_class: type[_SocketT]) -> _SocketT:
    """Make an association's socket an instance of a subclass of ``AssociationSocket``.

    The object, its OS socket and its state stay; only its methods change
    (``AssociationSocket`` has no slots), so a subclass can override
    ``recv`` before the association's threads start.

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        A new acceptor association, not yet started.
    socket_class : type
        A subclass of :class:`pynetdicom.transport.AssociationSocket` that adds
        no ``__init__`` work (its ``__init__`` is not run).

    Returns
    -------
    AssociationSocket
        The association's socket, now a ``socket_class``.

    Raises
    ------
    dicom_node.errors.ConfigurationError
        On an unsupported pynetdicom.
    TypeError
        If ``socket_class`` is not such a subclass, or the socket is not a
        plain ``AssociationSocket``.
    """
    check_pynetdicom_version()
    if not issubclass(socket_class, AssociationSocket):
        raise TypeError(f"{socket_class!r} is not an AssociationSocket subclass")
    sock = assoc.dul.socket
    if type(sock) is not AssociationSocket:
        raise TypeError(f"the association's socket is a {type(sock).__name__}")
    sock.__class__ = socket_class
    return sock  # type: ignore[return-value]


def tolerate_late_primitives(state_machine: Any) -> None:
    """Make a state machine drop local primitives that arrive after the association ended.

    A peer can abort, or the node can abort it (the PDU guard), while the
    association thread is still preparing its answer (an A-ASSOCIATE-AC, a
    C-STORE response). The upper layer is then in Sta13 (awaiting transport
    close) or Sta1, where PS3.8 Table 9-10 defines no action for a local
    primitive; pynetdicom raises :class:`InvalidEventError` in its reactor
    thread, which then dies. The association no longer exists, so the
    primitive is dropped instead (and logged); invalid events from the peer
    still raise.

    Parameters
    ----------
    state_machine : pynetdicom.fsm.StateMachine
        The association's upper-layer state machine (``assoc.dul.state_machine``).

    Raises
    ------
    dicom_node.errors.ConfigurationError
        On an unsupported pynetdicom.

    References
    ----------
    DICOM PS3.8 9.2 (DICOM UL protocol state machine), Table 9-10.
    """
    check_pynetdicom_version()
    original = state_machine.do_action

    def do_action(event: str) -> None:
        try:
            original(event)
        except InvalidEventError:
            if event not in LOCAL_PRIMITIVE_EVENTS:
                raise
            # The action would have taken the primitive off the queue; left there, the
            # reactor would offer it again and again.
            with suppress(queue.Empty, AttributeError):
                state_machine.dul.to_provider_queue.get(False)
            logger.info(
                "local primitive %s dropped: the association has ended (state %s)",
                event,
                state_machine.current_state,
            )

    state_machine.do_action = do_action


def call_when_thread_ends(assoc: Association, callback: Callable[[], None]) -> None:
    """Call ``callback`` in the association's thread when that thread ends (however).

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        An association not yet started.
    callback : callable
        Called without arguments; its exceptions propagate into the ending
        thread (keep it simple).

    Raises
    ------
    dicom_node.errors.ConfigurationError
        On an unsupported pynetdicom.
    """
    check_pynetdicom_version()
    run = assoc.run

    def run_then_callback() -> None:
        try:
            run()
        finally:
            callback()

    assoc.run = run_then_callback  # type: ignore[method-assign]


def wake_acceptor_awaiting_request(assoc: Association) -> None:
    """Wake an acceptor still waiting for the A-ASSOCIATE-RQ: none will come now.

    pynetdicom's association thread waits up to the ACSE timeout for the
    request; until then it counts against ``maximum_associations``, so a peer
    that connects and sends garbage would hold a slot for a minute. ``None``
    is what a timed-out wait returns: the thread closes the connection and
    ends at once. Does nothing once the request has arrived, and never raises.

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        The acceptor association whose transport closed.
    """
    if getattr(assoc.requestor, "primitive", None) is None:
        with suppress(Exception):
            # pynetdicom types the queue without None, yet reads None as a timed-out wait
            assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- reactors

#: Longest wait of either reactor thread before it checks its timers and stop flag, in s.
#: Timers (ARTIM, network timeout) are in seconds, so 5 ms granularity changes nothing.
MAX_WAIT_S = 0.005


class _RingingQueue(queue.Queue):
    """A :class:`queue.Queue` that calls ``_ring()`` after every put (under its mutex)."""

    _ring: Callable[[], None]

    def _put(self, item: Any) -> None:
        super()._put(item)
        try:
            self._ring()
        except Exception:  # noqa: BLE001 - a failed wake-up only costs the timeout
            pass


def _ringing(target: queue.Queue, ring: Callable[[], None]) -> None:
    """Turn an existing queue into a :class:`_RingingQueue` (same object, same items)."""
    target.__class__ = _RingingQueue
    target._ring = ring  # type: ignore[attr-defined]


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL thread, waiting in ``select`` instead of sleeping 1 ms.

    pynetdicom 3.0's DUL thread sleeps 1 ms whenever it finds nothing to do;
    this one waits in ``select`` on the socket and on a wake-up pipe written
    whenever the association thread queues a primitive for the peer (a
    C-STORE response, an A-RELEASE response, an A-ABORT), and at most
    :data:`MAX_WAIT_S` s, so its timers and stop flag are checked as before.
    Installed by :func:`make_event_driven`.

    References
    ----------
    DICOM PS3.8 9.2 (the events this loop feeds the state machine).
    """

    _wake_r: int
    _wake_w: int

    def _install_wakeup(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        _ringing(self.to_provider_queue, self.wake)

    def wake(self) -> None:
        """Wake the DUL thread (safe from any thread; never blocks)."""
        with suppress(OSError):  # pipe full (already woken) or closed (thread ended)
            os.write(self._wake_w, b"\0")

    def kill_dul(self) -> None:
        """Stop the reactor (see :meth:`DULServiceProvider.kill_dul`) and wake it."""
        super().kill_dul()
        self.wake()

    def _wait_for_work(self) -> None:
        """Wait until the socket is readable, a primitive is queued, or MAX_WAIT_S passed."""
        if not self.event_queue.empty() or not self.to_provider_queue.empty():
            return
        sock = getattr(self.socket, "socket", None)
        readers = [self._wake_r]
        if sock is not None and getattr(self.socket, "_is_connected", False):
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return
            readers.append(sock)
        try:
            ready, _, _ = select.select(readers, [], [], MAX_WAIT_S)
        except (OSError, ValueError):  # socket closed meanwhile: pynetdicom's checks notice
            time.sleep(self._run_loop_delay)
            return
        if self._wake_r in ready:
            with suppress(OSError):
                while os.read(self._wake_r, 4096):
                    pass

    def run_reactor(self) -> None:
        """pynetdicom 3.0's ``DULServiceProvider.run_reactor`` with an event-driven wait."""
        try:
            self._run_reactor_loop()
        finally:
            with suppress(OSError):
                os.close(self._wake_r)
            with suppress(OSError):
                os.close(self._wake_w)
            ring = getattr(self._assoc, "wake", None)  # the association checks dul.is_alive()
            if ring is not None:
                ring()

    def _run_reactor_loop(self) -> None:  # a copy of pynetdicom's loop
        self._idle_timer.start()
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                self._wait_for_work()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # as pynetdicom: abort the association
                logger.error("Exception in DUL.run(), aborting association")
                logger.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            self.state_machine.do_action(event)
            sleep = False


class EventDrivenAssociation(Association):
    """pynetdicom's acceptor association, waiting on an event instead of sleeping 1 ms.

    pynetdicom 3.0's association thread sleeps 1 ms before every look at its
    message queue; this one waits on an event set whenever the DUL thread
    queues a message or a primitive for it (a complete C-STORE request, an
    A-RELEASE request, an abort), and at most :data:`MAX_WAIT_S` s. With a
    sender that waits for each response, that saves about 1 ms per instance,
    and an idle association no longer wakes 1000 times a second. Installed by
    :func:`make_event_driven`.
    """

    _bell: threading.Event

    def wake(self) -> None:
        """Wake the association thread (safe from any thread)."""
        self._bell.set()

    def kill(self) -> None:
        """Kill the association thread (see :meth:`Association.kill`) and wake it."""
        self._bell.set()
        super().kill()

    def _run_reactor(self) -> None:  # a copy of pynetdicom's acceptor loop
        """pynetdicom 3.0's ``Association._run_reactor`` with an event-driven wait."""
        self._is_paused = False
        bell = self._bell
        while not self._kill:
            bell.wait(MAX_WAIT_S)
            bell.clear()  # cleared before the checks below: a later ring is not lost
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg and context_id is not None:  # a message always comes with its context
                self._serve_request(msg, context_id)
                bell.set()  # look again at once: more may be queued
            if self.is_established and self.acse.is_release_requested():
                # Marked before the A-RELEASE-RP goes out: the peer may close the connection
                # at once, and EVT_CONN_CLOSE (DUL thread) can then beat EVT_RELEASED (here).
                self.is_released = True
                self.acse.send_release(is_response=True)
                logger.info("Association Released")
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                logger.info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                logger.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


def make_event_driven(assoc: Association) -> bool:
    """Give a new acceptor association event-driven reactors (before its threads start).

    pynetdicom's loops, state machine and timers stay; only their waits change
    (:class:`EventDrivenDUL`, :class:`EventDrivenAssociation`).

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        An association created by the server's request handler, not yet started.

    Returns
    -------
    bool
        True when installed; False (stock loops kept) for a requestor or an
        association already running.

    Raises
    ------
    dicom_node.errors.ConfigurationError
        On an unsupported pynetdicom (the loops are copies of 3.0's).
    """
    check_pynetdicom_version()
    if assoc.is_alive() or assoc.dul.is_alive() or not assoc.is_acceptor:
        return False
    assoc.__class__ = EventDrivenAssociation
    assoc._bell = threading.Event()  # type: ignore[attr-defined]
    dul = assoc.dul
    dul.__class__ = EventDrivenDUL
    dul._install_wakeup()  # type: ignore[attr-defined]
    _ringing(assoc.dimse.msg_queue, assoc.wake)  # type: ignore[attr-defined]
    _ringing(dul.to_user_queue, assoc.wake)  # type: ignore[attr-defined]
    return True


# --------------------------------------------------------------------------- raw DIMSE


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
