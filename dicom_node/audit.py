"""The audit log: who connected, when, what was stored or sent, and how it ended.

Every association the Storage SCP accepts or rejects, every connection it
refuses before an association (source address not allowed, TLS handshake
failed, PDU limits), and every association the exporter opens to a
destination produces one :class:`AuditRecord`. :class:`AuditLog` writes it as
one line to the ``dicom_node.audit`` logger (route that logger to its own
file or syslog in a logging configuration) and as one row of the
``audit_event`` table. Records carry AE titles, addresses, certificate
subjects, counts and UIDs, never patient names, IDs or birth dates. Writing a
record never raises: a failure is logged and the DICOM exchange goes on.

Dashboard login lockouts and their lifting are audited too (direction ``"web"``,
outcomes ``LOCKED`` and ``UNLOCKED``) with :func:`record_in_session`, so the row
commits together with the lockout it describes (:mod:`dicom_node.login_throttle`).

References
----------
DICOM PS3.15 Annex A.5 (audit trail message format profile: who, when, what,
outcome); IHE ITI ATNA (audit of DICOM instances transferred); the "User
Authentication" audit message of PS3.15 A.5.3 and the OWASP Logging Cheat Sheet
(authentication events) for the dashboard's login lockouts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import AuditEvent, utcnow

logger = logging.getLogger(__name__)

#: Logger that receives one line per audit record.
AUDIT_LOGGER_NAME = "dicom_node.audit"

#: Series UIDs kept per record (the rest is counted only).
MAX_SERIES_UIDS = 32


class AuditOutcome:
    """Outcome words of audit records."""

    RELEASED = "RELEASED"  # association released normally (A-RELEASE)
    ABORTED = "ABORTED"  # A-ABORT by either side, or the node aborted it (PDU limits)
    CLOSED = "CLOSED"  # transport closed without release or abort
    REJECTED = "REJECTED"  # A-ASSOCIATE-RJ (calling/called AE, no acceptable context)
    REFUSED = "REFUSED"  # connection refused before an association (address, TLS)
    SENT = "SENT"  # outgoing: every object stored by the destination
    FAILED = "FAILED"  # outgoing: association or C-STORE failed
    LOCKED = "LOCKED"  # web: a user name or address locked out after failed logins
    UNLOCKED = "UNLOCKED"  # web: such a lockout lifted by an administrator


@dataclass
class AuditRecord:
    """One audited association or refused connection.

    Parameters
    ----------
    direction : {"in", "out", "web"}
        ``"in"``: a peer connected to the Storage SCP; ``"out"``: the
        exporter connected to a destination; ``"web"``: a dashboard login
        lockout or unlock.
    outcome : str
        One of :class:`AuditOutcome`.
    peer_address : str
        ``host:port`` of the peer.
    calling_ae_title, called_ae_title : str
        AE titles of the association (empty when none was requested).
    started_at, ended_at : datetime
        UTC.
    reason : str or None
        Why it was refused, rejected, aborted or failed.
    destination : str or None
        Destination name (outgoing).
    tls_version : str
        Negotiated TLS version, empty for plain TCP.
    peer_certificate : str
        Subject of the peer's TLS certificate, empty when none.
    instances : int
        Instances stored (incoming, status Success or Warning) or sent (outgoing).
    instances_refused : int
        C-STORE requests answered with a failure status (incoming) or objects
        not delivered (outgoing).
    bytes : int
        Bytes of the datasets received or of the files sent.
    series_instance_uids : list of str
        Series of the instances (at most :data:`MAX_SERIES_UIDS`).
    association_id : int or None
        Row of the ``association`` table (incoming, when tracked).
    """

    direction: str
    outcome: str
    peer_address: str = ""
    calling_ae_title: str = ""
    called_ae_title: str = ""
    started_at: datetime = field(default_factory=utcnow)
    ended_at: datetime = field(default_factory=utcnow)
    reason: str | None = None
    destination: str | None = None
    tls_version: str = ""
    peer_certificate: str = ""
    instances: int = 0
    instances_refused: int = 0
    bytes: int = 0
    series_instance_uids: list[str] = field(default_factory=list)
    association_id: int | None = None

    def line(self) -> str:
        """Return the record as one ``key=value`` log line (values quoted where needed)."""
        values = {
            "direction": self.direction,
            "outcome": self.outcome,
            "peer": self.peer_address,
            "calling_ae": self.calling_ae_title,
            "called_ae": self.called_ae_title,
            "destination": self.destination or "",
            "tls": self.tls_version or "none",
            "peer_cert": self.peer_certificate,
            "instances": self.instances,
            "refused": self.instances_refused,
            "bytes": self.bytes,
            "series": ",".join(self.series_instance_uids),
            "started": self.started_at.isoformat(timespec="milliseconds"),
            "duration_s": f"{(self.ended_at - self.started_at).total_seconds():.3f}",
            "reason": self.reason or "",
        }
        parts = []
        for key, value in values.items():
            text = str(value).replace("\n", " ")
            if text == "":
                continue
            parts.append(f'{key}="{text}"' if (" " in text or '"' in text) else f"{key}={text}")
        return " ".join(parts)


class AuditLog:
    """Writes :class:`AuditRecord` s to the ``dicom_node.audit`` logger and the database.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker or None
        Sessions on the job database; None writes the log line only.
    enabled : bool
        When False, :meth:`record` does nothing.
    """

    def __init__(
        self, session_factory: sessionmaker[Session] | None, *, enabled: bool = True
    ) -> None:
        self.session_factory = session_factory
        self.enabled = enabled
        self._logger = logging.getLogger(AUDIT_LOGGER_NAME)

    def record(self, record: AuditRecord) -> None:
        """Log and store one record; never raises.

        Parameters
        ----------
        record : AuditRecord
            What happened.
        """
        if not self.enabled:
            return
        try:
            self._logger.log(_level(record), "%s", record.line())
        except Exception:  # auditing must never break an association
            logger.exception("audit line could not be written")
        if self.session_factory is None:
            return
        try:
            with self.session_factory.begin() as session:
                session.add(audit_row(record))
        except Exception as err:  # noqa: BLE001
            logger.error("audit record could not be stored: %s", err.__class__.__name__)


def _level(record: AuditRecord) -> int:
    return logging.INFO if record.outcome in ("RELEASED", "SENT") else logging.WARNING


def audit_row(record: AuditRecord) -> AuditEvent:
    """Return the ``audit_event`` row of a record, every text cut to its column's length.

    Parameters
    ----------
    record : AuditRecord
        What happened.

    Returns
    -------
    AuditEvent
        Not yet added to any session.
    """
    return AuditEvent(
        direction=record.direction[:8],
        started_at=record.started_at,
        ended_at=record.ended_at,
        peer_address=record.peer_address[:64],
        calling_ae_title=record.calling_ae_title[:16],
        called_ae_title=record.called_ae_title[:16],
        destination=record.destination[:64] if record.destination else None,
        tls_version=record.tls_version[:16],
        peer_certificate=record.peer_certificate[:256],
        outcome=record.outcome[:16],
        reason=record.reason[:2000] if record.reason else None,
        instances=record.instances,
        instances_refused=record.instances_refused,
        bytes=record.bytes,
        series_instance_uids=record.series_instance_uids[:MAX_SERIES_UIDS] or None,
        association_id=record.association_id,
    )


def record_in_session(session: Session, record: AuditRecord) -> None:
    """Write a record to the ``dicom_node.audit`` logger and add its row to ``session``.

    Unlike :meth:`AuditLog.record` the row joins the caller's transaction, so it
    is stored exactly when the change it describes is (a login lockout, an
    unlock), and a second write transaction is not opened while the caller's
    holds the SQLite write lock.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    record : AuditRecord
        What happened.

    References
    ----------
    DICOM PS3.15 A.5 (who, when, what, outcome); OWASP Logging Cheat Sheet.
    """
    logging.getLogger(AUDIT_LOGGER_NAME).log(_level(record), "%s", record.line())
    session.add(audit_row(record))
