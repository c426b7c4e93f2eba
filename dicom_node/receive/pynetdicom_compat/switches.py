"""Switches of ``pynetdicom._config``, pynetdicom's documented configuration module.

- :func:`accept_overlong_uids_for_refusal` (``VALIDATORS["UI"]``): a UID over
  64 characters in a command set would otherwise abort the whole association;
  the C-STORE handler answers it with 0xC210 and a reason instead;
- :func:`log_standard_events` and :func:`standard_event_logging_enabled`
  (``LOG_HANDLER_LEVEL``).

Part of :mod:`dicom_node.receive.pynetdicom_compat`, the one place for
pynetdicom's internals; import these names from there.

References
----------
pynetdicom 3.0 "Configuration options" (``_config``); DICOM PS3.5 9.1 (UIDs:
at most 64 characters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pynetdicom import _config

from dicom_node.receive.pynetdicom_compat import check_pynetdicom_version

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
