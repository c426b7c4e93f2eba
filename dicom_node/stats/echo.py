"""Reachability of the export destinations by C-ECHO, for the overview and ``/health``.

:func:`echo_destination` sends one C-ECHO (PS3.4 Annex A, PS3.7 9.1.5)
through the export's SCU, loaded only when called (it imports pynetdicom);
:class:`DestinationMonitor` keeps the latest :class:`EchoResult` of every
destination. Split out of :mod:`dicom_node.stats`, which re-exports every
name here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from threading import Lock

from dicom_node.config import Destination
from dicom_node.db.models import utcnow

# The name of the module these lived in before the split (log configuration may name it).
logger = logging.getLogger("dicom_node.stats")


@dataclass
class EchoResult:
    """Outcome of a C-ECHO to one destination.

    Parameters
    ----------
    name, ae_title, host : str
    port : int
    reachable : bool or None
        None when not checked yet.
    status : int or None
        DIMSE status of the C-ECHO response (0x0000 success).
    error : str or None
    checked_at : datetime or None
    round_trip_s : float or None
    """

    name: str
    ae_title: str
    host: str
    port: int
    reachable: bool | None = None
    status: int | None = None
    error: str | None = None
    checked_at: datetime | None = None
    round_trip_s: float | None = None


def echo_destination(
    destination: Destination, calling_ae_title: str, timeout_s: float
) -> EchoResult:
    """C-ECHO one destination and report whether it answered with success.

    Parameters
    ----------
    destination : Destination
        The peer: AE title, host, port and its own calling AE title if set.
    calling_ae_title : str
        Our AE title (unless the destination sets one).
    timeout_s : float
        Network, ACSE and DIMSE timeout in seconds.

    Returns
    -------
    EchoResult

    References
    ----------
    DICOM PS3.4 Annex A (Verification Service Class); PS3.7 9.1.5 (C-ECHO).
    """
    import time

    from dicom_node.errors import DicomNodeError
    from dicom_node.export.exporter import peer_for
    from dicom_node.export.scu import echo

    result = EchoResult(destination.name, destination.ae_title, destination.host, destination.port)
    started = time.monotonic()
    try:
        result.status = echo(peer_for(destination, calling_ae_title, timeout_s=timeout_s))
        result.reachable = result.status == 0
        if not result.reachable:
            result.error = f"C-ECHO status 0x{result.status:04X}"
    except (DicomNodeError, OSError) as err:
        result.reachable, result.error = False, str(err)
    result.round_trip_s = time.monotonic() - started
    result.checked_at = utcnow()
    return result


class DestinationMonitor:
    """Keeps the latest C-ECHO result of every destination (refreshed by the scheduler).

    Parameters
    ----------
    destinations : sequence of Destination
    calling_ae_title : str
    timeout_s : float
        Per C-ECHO, in seconds.
    """

    def __init__(
        self, destinations: Sequence[Destination], calling_ae_title: str, timeout_s: float
    ) -> None:
        self.destinations = list(destinations)
        self.calling_ae_title = calling_ae_title
        self.timeout_s = timeout_s
        self._lock = Lock()
        self._results = {
            d.name: EchoResult(d.name, d.ae_title, d.host, d.port) for d in self.destinations
        }

    def check(self) -> list[EchoResult]:
        """C-ECHO every destination now (in parallel) and keep the results."""
        if not self.destinations:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(self.destinations))) as pool:
            results = list(
                pool.map(
                    lambda d: echo_destination(d, self.calling_ae_title, self.timeout_s),
                    self.destinations,
                )
            )
        with self._lock:
            for r in results:
                self._results[r.name] = r
        for r in results:
            if not r.reachable:
                logger.warning("destination %s does not answer C-ECHO: %s", r.name, r.error)
        return results

    def snapshot(self) -> list[EchoResult]:
        """Return the latest results without contacting anyone."""
        with self._lock:
            return [self._results[d.name] for d in self.destinations]

    def refresh_if_stale(self, max_age_s: float) -> list[EchoResult]:
        """Return the latest results, checking again first when any is older than ``max_age_s``."""
        now = utcnow()
        stale = any(
            r.checked_at is None or (now - r.checked_at).total_seconds() > max_age_s
            for r in self.snapshot()
        )
        return self.check() if stale else self.snapshot()
