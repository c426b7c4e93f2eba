"""Acceptor set-up: the request-handler hook and what it installs on each new association.

- the AE's private server list: :func:`forget_server`;
- :class:`AcceptorRequestHandler`: a hook into
  ``RequestHandler._create_association`` that lets
  :mod:`dicom_node.receive.transport` put its PDU guard on each new
  association's socket (:func:`use_socket_class`, a ``__class__`` swap), make
  the state machine drop primitives that arrive after the end
  (:func:`tolerate_late_primitives`), free a per-address slot when the
  association thread ends (:func:`call_when_thread_ends`) and wake an acceptor
  still waiting for its A-ASSOCIATE-RQ (:func:`wake_acceptor_awaiting_request`).

Part of :mod:`dicom_node.receive.pynetdicom_compat`, the one place for
pynetdicom's internals; import these names from there.

References
----------
pynetdicom 3.0 source (``ae.py``, ``association.py``, ``transport.py``,
``fsm.py``); DICOM PS3.8 9.2 (upper-layer state machine), Table 9-10.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

from pynetdicom.association import Association
from pynetdicom.fsm import InvalidEventError
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicom_node.receive.pynetdicom_compat import check_pynetdicom_version

#: The package's logger (the same object as ``pynetdicom_compat.logger``): records keep the
#: name they had before the package was split.
logger = logging.getLogger("dicom_node.receive.pynetdicom_compat")


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
