"""The one place for pynetdicom switches that are not part of its stable API.

pynetdicom documents ``pynetdicom._config`` as its configuration module (its
leading underscore notwithstanding). The node changes one of its switches:

- ``_config.VALIDATORS["UI"]``: pynetdicom refuses, while it decodes a DIMSE
  command set, a UID over 64 characters, and then aborts the whole association
  with an ERROR traceback ("Received an invalid DIMSE message"). A sender with
  one bad Affected SOP Instance UID thus loses every other instance of its
  association. :func:`accept_overlong_uids_for_refusal` lets such a command be
  decoded, so the C-STORE handler can answer it with a failure status that
  says why (:func:`dicom_node.receive.scp.StorageSCP.handle_store`), and the
  association goes on.

``_config.LOG_HANDLER_LEVEL`` (:func:`log_standard_events`) keeps pynetdicom's
per-PDU log lines off outside DEBUG, and :func:`forget_server` is the one
place that touches an AE's private list of servers.

It also names the pynetdicom releases the node supports
(:func:`check_pynetdicom_version`). Other uses of private pynetdicom names
still live in :mod:`dicom_node.receive.reactor` and
:mod:`dicom_node.receive.transport` (issue 14 moves them here).

References
----------
pynetdicom 3.0 "Configuration options" (``_config.VALIDATORS``, added in 2.0);
DICOM PS3.5 9.1 (UID encoding rules: at most 64 characters); PS3.7 9.1.1.1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pynetdicom
from pynetdicom import _config

from dicom_node.errors import ConfigurationError

#: The pynetdicom releases whose private loops :mod:`dicom_node.receive.reactor` copies and
#: whose internals :mod:`dicom_node.receive.transport` uses (pyproject.toml pins the same).
SUPPORTED_PYNETDICOM = ((3, 0), (3, 1))  # from 3.0 inclusive to 3.1 exclusive


def pynetdicom_is_supported(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed one) is in :data:`SUPPORTED_PYNETDICOM`."""
    version = version or pynetdicom.__version__
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    low, high = SUPPORTED_PYNETDICOM
    return low <= major_minor < high


def check_pynetdicom_version(version: str | None = None) -> None:
    """Refuse to run on a pynetdicom outside :data:`SUPPORTED_PYNETDICOM`.

    The reactor and the PDU guard replace pynetdicom's own association and
    DUL loops by copies of 3.0's; on another release they would be wrong in
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

    References
    ----------
    pynetdicom ``_config.VALIDATORS`` (2.0+); PS3.5 9.1.
    """
    global _installed
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

    References
    ----------
    pynetdicom ``_config.LOG_HANDLER_LEVEL`` ("standard" or "none").
    """
    _config.LOG_HANDLER_LEVEL = "standard" if enabled else "none"


def forget_server(ae: Any, server: Any) -> None:
    """Drop ``server`` from the AE's list of running servers (no error if absent).

    A server made by ``AE.make_server`` is not in that list; one started with
    ``AE.start_server`` is, and ``AE.shutdown`` would stop it again.
    """
    servers = getattr(ae, "_servers", None)
    if isinstance(servers, list) and server in servers:
        servers.remove(server)
