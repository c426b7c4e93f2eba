"""Query values as the read layer takes them: ``--since``/``since=`` and state names.

:func:`parse_since` reads an ISO 8601 date or time or an age like ``24h``;
:func:`_enum_value` turns a series or delivery state name into its enum or
an :class:`~dicom_node.errors.InvalidQueryError` naming the known values.
Split from the former ``dicom_node/queries.py`` (issue 14); every name is
still exported by :mod:`dicom_node.queries`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from dicom_node.db.models import utcnow
from dicom_node.errors import InvalidQueryError

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """Parse a ``--since``/``since=`` value: ISO 8601 date or time, or an age like ``24h``.

    Parameters
    ----------
    value : str or None
        ``2025-01-31``, ``2025-01-31T08:00``, ``2025-01-31T08:00+01:00`` (a
        time without offset is UTC), or ``<number><s|m|h|d|w>`` back from now.
    now : datetime or None
        Reference for relative values (UTC).

    Returns
    -------
    datetime or None
        Timezone-aware UTC; None for an empty value.

    Raises
    ------
    ValueError
        If the value is neither form.
    """
    if value is None or not value.strip():
        return None
    match = _RELATIVE.match(value)
    if match:
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
        return (now or utcnow()) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as err:
        raise ValueError(f"{value!r} is not an ISO 8601 date/time nor an age like 24h") from err
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _enum_value(kind, value: str, what: str):
    """``kind(value.upper())``, or InvalidQueryError naming the known values."""
    try:
        return kind(value.upper())
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise InvalidQueryError(f"unknown {what} {value!r} (known: {known})") from None
