"""Audit records of the Storage SCP's associations, built from pynetdicom's events.

:class:`AssociationAuditor` follows each connection from EVT_CONN_OPEN to its
end (EVT_RELEASED, EVT_ABORTED, EVT_REJECTED or EVT_CONN_CLOSE, whichever
comes first), counts the C-STORE requests (EVT_DIMSE_RECV: dataset bytes) and
the statuses answered (EVT_DIMSE_SENT: stored or refused), and hands one
:class:`~dicom_node.audit.AuditRecord` to the :class:`~dicom_node.audit.AuditLog`.
It only reads events; it never changes what the SCP answers. Connections
closed before an association (address, TLS) are recorded by :meth:`refused`.

References
----------
DICOM PS3.8 7.1 (A-ASSOCIATE), 7.2 (A-RELEASE), 7.3-7.4 (A-ABORT, A-P-ABORT);
PS3.4 B.2.3 (C-STORE statuses); PS3.15 A.5 (audit messages).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit import MAX_SERIES_UIDS, AuditLog, AuditOutcome, AuditRecord
from dicom_node.db.models import Instance, Series, utcnow
from dicom_node.security.tls import peer_certificate_subject, tls_version

logger = logging.getLogger(__name__)

#: C-STORE-RSP command field (PS3.7 E.1).
_C_STORE_RSP = 0x8001
_C_STORE_RQ = 0x0001


@dataclass
class _Tracked:
    started_at: datetime
    peer_address: str
    association_id: int | None = None
    stored: int = 0
    refused: int = 0
    received_bytes: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    tls_version: str = ""
    peer_certificate: str = ""


def _peer(event: Event) -> str:
    requestor = event.assoc.requestor
    address = getattr(requestor, "address", "") or ""
    port = getattr(requestor, "port", None)
    return f"{address}:{port}" if port is not None else str(address)


def _called_ae_title(event: Event) -> str:
    primitive = getattr(event.assoc.requestor, "primitive", None)
    called = getattr(primitive, "called_ae_title", "") if primitive is not None else ""
    return str(called or "").strip()


class AssociationAuditor:
    """Turns the Storage SCP's association events into audit records.

    Parameters
    ----------
    audit : AuditLog
        Where records go.
    association_row : callable or None
        ``association_row(assoc) -> int | None``: the association-log row of an
        accepted association (to list the series it stored).
    session_factory : sqlalchemy.orm.sessionmaker or None
        Sessions to read the series UIDs of the stored instances; None skips them.
    """

    def __init__(
        self,
        audit: AuditLog,
        *,
        association_row: Callable[[Any], int | None] | None = None,
        session_factory: sessionmaker[Session] | None = None,
    ) -> None:
        self.audit = audit
        self.association_row = association_row
        self.session_factory = session_factory
        self._tracked: dict[Any, _Tracked] = {}
        self._lock = threading.Lock()

    def handlers(self) -> list[tuple[Any, Callable[[Event], None]]]:
        """Return ``(event, handler)`` pairs to bind on the SCP (all notification events)."""
        return [
            (evt.EVT_CONN_OPEN, self._opened),
            (evt.EVT_ACCEPTED, self._accepted),
            (evt.EVT_DIMSE_RECV, self._dimse_received),
            (evt.EVT_DIMSE_SENT, self._dimse_sent),
            (evt.EVT_REJECTED, self._rejected),
            (evt.EVT_RELEASED, self._released),
            (evt.EVT_ABORTED, self._aborted),
            (evt.EVT_CONN_CLOSE, self._conn_closed),
        ]

    def refused(self, peer_address: str, reason: str, started_at: datetime) -> None:
        """Record a connection closed before an association (address not allowed, TLS)."""
        self.audit.record(
            AuditRecord(
                direction="in",
                outcome=AuditOutcome.REFUSED,
                peer_address=peer_address,
                started_at=started_at,
                ended_at=utcnow(),
                reason=reason,
            )
        )

    # ------------------------------------------------------------------ events
    def _get(self, event: Event) -> _Tracked:
        """The connection's record in progress; a detached one once it has been recorded."""
        with self._lock:
            tracked = self._tracked.get(event.assoc)
        return tracked if tracked is not None else _Tracked(utcnow(), "")

    def _opened(self, event: Event) -> None:
        tracked = _Tracked(started_at=utcnow(), peer_address=_peer(event))
        try:  # the TLS handshake is done: read the session while the socket is open
            raw = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
            tracked.tls_version = tls_version(raw)
            tracked.peer_certificate = peer_certificate_subject(raw)
        except Exception:  # noqa: BLE001
            pass
        with self._lock:
            self._tracked[event.assoc] = tracked

    def _accepted(self, event: Event) -> None:
        tracked = self._get(event)
        tracked.peer_address = _peer(event)
        if self.association_row is not None:
            try:
                tracked.association_id = self.association_row(event.assoc)
            except Exception:  # noqa: BLE001
                tracked.association_id = None

    def _dimse_received(self, event: Event) -> None:
        try:
            message = event.message
            if int(message.command_set.CommandField) != _C_STORE_RQ:
                return
            data = message.data_set
            size = len(data.getbuffer()) if data is not None else 0
        except Exception:  # noqa: BLE001 - a malformed message is pynetdicom's to refuse
            return
        self._get(event).received_bytes += size

    def _dimse_sent(self, event: Event) -> None:
        try:
            command = event.message.command_set
            if int(command.CommandField) != _C_STORE_RSP:
                return
            status = int(command.Status)
        except Exception:  # noqa: BLE001
            return
        tracked = self._get(event)
        tracked.statuses[status] = tracked.statuses.get(status, 0) + 1
        if code_to_category(status) in (STATUS_SUCCESS, STATUS_WARNING):
            tracked.stored += 1
        else:
            tracked.refused += 1

    @staticmethod
    def _rejection_reason(event: Event) -> str:
        """Why pynetdicom rejected the association (its checks, in its order)."""
        ae = event.assoc.ae
        calling = str(event.assoc.requestor.ae_title or "").strip()
        called = _called_ae_title(event)
        reason = "rejected (association limit reached or user identity refused)"
        if ae.require_calling_aet and calling not in [s.strip() for s in ae.require_calling_aet]:
            reason = "calling AE title not recognized (dicom.allowed_calling_ae_titles)"
        if ae.require_called_aet and called != event.assoc.acceptor.ae_title.strip():
            reason = f"called AE title {called!r} not recognized"
        return reason

    def _rejected(self, event: Event) -> None:
        self._finish(event, AuditOutcome.REJECTED)

    def _released(self, event: Event) -> None:
        self._finish(event, AuditOutcome.RELEASED)

    def _aborted(self, event: Event) -> None:
        self._finish(event, AuditOutcome.ABORTED)

    def _conn_closed(self, event: Event) -> None:
        # The reactor thread may report the closed transport before the association
        # thread reports the release or abort: the association's flags say which it was.
        self._finish(event, AuditOutcome.CLOSED)

    # ------------------------------------------------------------------ record
    def _series_uids(self, association_id: int | None) -> list[str]:
        if association_id is None or self.session_factory is None:
            return []
        try:
            with self.session_factory() as session:
                return list(
                    session.scalars(
                        select(Series.series_instance_uid)
                        .join(Instance, Instance.series_id == Series.id)
                        .where(Instance.association_id == association_id)
                        .distinct()
                        .limit(MAX_SERIES_UIDS)
                    )
                )
        except Exception:  # noqa: BLE001
            return []

    def _finish(self, event: Event, outcome: str) -> None:
        with self._lock:
            tracked = self._tracked.pop(event.assoc, None)
        if tracked is None:
            return  # already recorded (the first closing event wins)
        try:
            assoc = event.assoc
            reason: str | None = None
            if assoc.is_rejected:
                outcome, reason = AuditOutcome.REJECTED, self._rejection_reason(event)
            elif assoc.is_aborted:
                outcome = AuditOutcome.ABORTED
            elif assoc.is_released:
                outcome = AuditOutcome.RELEASED
            sock = getattr(assoc.dul, "socket", None)
            guard = getattr(sock, "pdu_guard", None)
            if guard is not None and guard.violation:
                outcome, reason = AuditOutcome.ABORTED, f"node aborted: {guard.violation}"
            if outcome in (AuditOutcome.ABORTED, AuditOutcome.CLOSED) and reason is None:
                if not event.assoc.requestor.ae_title:
                    reason = "connection closed before an association was requested"
            refused = ", ".join(
                f"0x{status:04X} x{count}"
                for status, count in sorted(tracked.statuses.items())
                if status != 0x0000
            )
            if refused:
                reason = f"{reason + '; ' if reason else ''}C-STORE statuses {refused}"
            record = AuditRecord(
                direction="in",
                outcome=outcome,
                peer_address=tracked.peer_address or _peer(event),
                calling_ae_title=str(event.assoc.requestor.ae_title or "").strip(),
                called_ae_title=_called_ae_title(event),
                started_at=tracked.started_at,
                ended_at=utcnow(),
                reason=reason,
                tls_version=tracked.tls_version,
                peer_certificate=tracked.peer_certificate,
                instances=tracked.stored,
                instances_refused=tracked.refused,
                bytes=tracked.received_bytes,
                series_instance_uids=self._series_uids(tracked.association_id)
                if tracked.stored
                else [],
                association_id=tracked.association_id,
            )
        except Exception:  # auditing never breaks the association thread
            logger.exception("audit record of an association could not be built")
            return
        self.audit.record(record)
