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

What is here, and why (this ``__init__`` holds the version check and
re-exports every name of the submodules; import them from here):

- version (here): :data:`SUPPORTED_PYNETDICOM`, :func:`pynetdicom_is_supported`,
  :func:`check_pynetdicom_version`;
- switches of ``pynetdicom._config`` (``switches.py``), documented by
  pynetdicom as its configuration module: :func:`accept_overlong_uids_for_refusal`
  (``VALIDATORS["UI"]``: a UID over 64 characters in a command set would
  otherwise abort the whole association; the C-STORE handler answers it with
  0xC210 and a reason instead) and :func:`log_standard_events`
  (``LOG_HANDLER_LEVEL``);
- the AE's private server list (``server.py``): :func:`forget_server`;
- acceptor set-up (``server.py``, :class:`AcceptorRequestHandler`): a hook into
  ``RequestHandler._create_association`` that lets
  :mod:`dicom_node.receive.transport` put its PDU guard on each new
  association's socket (:func:`use_socket_class`, a ``__class__`` swap), make
  the state machine drop primitives that arrive after the end
  (:func:`tolerate_late_primitives`), free a per-address slot when the
  association thread ends (:func:`call_when_thread_ends`) and wake an acceptor
  still waiting for its A-ASSOCIATE-RQ (:func:`wake_acceptor_awaiting_request`);
- event-driven reactors (``reactor.py``, :func:`make_event_driven`): copies
  of pynetdicom 3.0's DUL and acceptor association loops that wait on the
  socket and on events instead of sleeping 1 ms;
- raw DIMSE (``testing.py``) for tests and tools that must put what
  pynetdicom would refuse on the wire: :func:`paused_reactor`,
  :func:`set_affected_sop_instance_uid_unchecked`.

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

import pynetdicom

from dicom_node.errors import ConfigurationError

#: The package's logger; its submodules get the same one by name, as before the split.
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


# The submodules import the version check above, so they come after it.
from dicom_node.receive.pynetdicom_compat.reactor import (  # noqa: E402
    MAX_WAIT_S,
    EventDrivenAssociation,
    EventDrivenDUL,
    _ringing,
    _RingingQueue,
    make_event_driven,
)
from dicom_node.receive.pynetdicom_compat.server import (  # noqa: E402
    LOCAL_PRIMITIVE_EVENTS,
    AcceptorRequestHandler,
    _SocketT,
    call_when_thread_ends,
    forget_server,
    tolerate_late_primitives,
    use_socket_class,
    wake_acceptor_awaiting_request,
)
from dicom_node.receive.pynetdicom_compat.switches import (  # noqa: E402
    MAX_DECODED_UID_CHARS,
    accept_overlong_uids_for_refusal,
    log_standard_events,
    standard_event_logging_enabled,
)
from dicom_node.receive.pynetdicom_compat.testing import (  # noqa: E402
    paused_reactor,
    set_affected_sop_instance_uid_unchecked,
)

__all__ = [
    "LOCAL_PRIMITIVE_EVENTS",
    "MAX_DECODED_UID_CHARS",
    "MAX_WAIT_S",
    "SUPPORTED_PYNETDICOM",
    "AcceptorRequestHandler",
    "EventDrivenAssociation",
    "EventDrivenDUL",
    "_RingingQueue",
    "_SocketT",
    "_ringing",
    "accept_overlong_uids_for_refusal",
    "call_when_thread_ends",
    "check_pynetdicom_version",
    "forget_server",
    "log_standard_events",
    "logger",
    "make_event_driven",
    "paused_reactor",
    "pynetdicom_is_supported",
    "set_affected_sop_instance_uid_unchecked",
    "standard_event_logging_enabled",
    "tolerate_late_primitives",
    "use_socket_class",
    "wake_acceptor_awaiting_request",
]
