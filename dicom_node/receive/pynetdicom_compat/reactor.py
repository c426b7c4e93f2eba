"""Event-driven reactors: copies of pynetdicom 3.0's DUL and acceptor association loops.

pynetdicom 3.0's two threads of an association each sleep 1 ms whenever they
find nothing to do; :class:`EventDrivenDUL` waits in ``select`` on the socket
and a wake-up pipe, :class:`EventDrivenAssociation` on an event, both at most
:data:`MAX_WAIT_S`. :func:`make_event_driven` installs them on a new acceptor
association. pynetdicom's loops, state machine and timers stay; only their
waits change.

Part of :mod:`dicom_node.receive.pynetdicom_compat`, the one place for
pynetdicom's internals; import these names from there.

References
----------
pynetdicom 3.0 source (``association.py``, ``dul.py``); DICOM PS3.8 9.2
(upper-layer state machine), PS3.7 9.1.1.1.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

from dicom_node.receive.pynetdicom_compat import check_pynetdicom_version

#: The package's logger (the same object as ``pynetdicom_compat.logger``): records keep the
#: name they had before the package was split.
logger = logging.getLogger("dicom_node.receive.pynetdicom_compat")

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
