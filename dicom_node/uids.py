"""Validation of DICOM UIDs, the only values allowed to form file-system paths.

References
----------
DICOM PS3.5 section 9.1, "UID Encoding Rules": components of digits separated
by ".", no leading zero in a multi-digit component, at most 64 characters.
"""

from __future__ import annotations

import re

from dicom_node.errors import InvalidUIDError

_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
MAX_UID_LENGTH = 64


def validate_uid(value: object, *, keyword: str = "UID") -> str:
    """Return ``value`` as a string if it is a valid DICOM UID.

    Parameters
    ----------
    value : object
        The candidate, typically a ``pydicom.uid.UID`` or ``str``.
    keyword : str
        DICOM keyword of the attribute the value came from, used in the
        error message (for example ``"SOPInstanceUID"``).

    Returns
    -------
    str
        The UID, safe to use as a single path component.

    Raises
    ------
    InvalidUIDError
        If ``value`` is empty, longer than 64 characters, or breaks the
        PS3.5 9.1 grammar (which also excludes ``/``, ``..`` and NUL).

    References
    ----------
    DICOM PS3.5 section 9.1.
    """
    text = "" if value is None else str(value)
    if not text:
        raise InvalidUIDError(f"{keyword} is missing or empty")
    if len(text) > MAX_UID_LENGTH:
        raise InvalidUIDError(f"{keyword} is {len(text)} characters long, more than 64 (PS3.5 9.1)")
    if not _UID_PATTERN.match(text):
        raise InvalidUIDError(
            f"{keyword} {text[:80]!r} is not a UID: PS3.5 9.1 allows only digit components "
            "separated by '.', without leading zeros"
        )
    return text
