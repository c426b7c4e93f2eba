"""The exporter: sends due deliveries and records each attempt.

Deliveries are PENDING when created; an attempt that fails transiently moves
the delivery to RETRYING with ``next_attempt_at`` pushed back by the
destination's :class:`~dicom_node.retry.RetryPolicy` (capped exponential
backoff with jitter); after its ``max_attempts`` (or on a permanent refusal)
it is DEAD with the reason. An operator can put a DEAD delivery back
(:func:`requeue_delivery`: ``dicom-node deliveries requeue`` or the
dashboard), or all DEAD ones of a destination at once (:func:`requeue_dead`).
After an outage the node does it by itself: :class:`DeadDeliveryResumer`
sends C-ECHO to each destination with DEAD deliveries, at most every
``export.echo_interval_s``, and requeues them when it answers. Every
association to a destination is audited (:mod:`dicom_node.audit`); a
destination with ``tls.enabled`` is reached over DICOM TLS.

References
----------
DICOM PS3.4 B.2.3 (C-STORE statuses); PS3.4 Annex A (Verification Service
Class); PS3.7 9.1.5 (C-ECHO); PS3.15 Annex B.9, B.10 (TLS).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from dicom_node.audit import AuditLog, AuditOutcome, AuditRecord
from dicom_node.config import Destination
from dicom_node.db.models import Delivery, DeliveryState, StateChange, utcnow
from dicom_node.db.transitions import set_state
from dicom_node.errors import DeliveryError, DeliveryRefusedError, DicomNodeError
from dicom_node.export.scu import Peer, echo, send_files

logger = logging.getLogger(__name__)

#: Start of the ``state_change`` reason of a delivery that went DEAD because the
#: destination refused it (a failure retrying cannot fix). Such deliveries are
#: not resumed after a successful C-ECHO: sending them again would be refused again.
REFUSED_REASON_PREFIX = "refused, not retried: "
#: ``state_change`` reason of a delivery requeued by an operator.
OPERATOR_REASON = "requeued by an operator"
#: ``state_change`` reason of a delivery requeued by :class:`DeadDeliveryResumer`.
RESUMED_REASON = "resumed after C-ECHO succeeded"


def peer_for(
    destination: Destination, calling_ae_title: str, *, timeout_s: float | None = None
) -> Peer:
    """Return the :class:`Peer` of a destination, with its TLS context when ``tls.enabled``.

    Parameters
    ----------
    destination : Destination
        Address, AE titles, timeout and TLS settings.
    calling_ae_title : str
        Our AE title, unless the destination sets ``calling_ae_title``.
    timeout_s : float or None
        Overrides the destination's ``timeout_s``.

    Returns
    -------
    Peer

    Raises
    ------
    ConfigurationError
        If the destination's TLS files cannot be loaded.

    References
    ----------
    DICOM PS3.15 Annex B.9, B.10; BCP 195.
    """
    from dicom_node.security.tls import client_context

    tls = destination.tls
    return Peer(
        destination.host,
        destination.port,
        destination.ae_title,
        destination.calling_ae_title or calling_ae_title,
        destination.timeout_s if timeout_s is None else timeout_s,
        tls_context=client_context(tls) if tls.enabled else None,
        server_hostname=tls.server_hostname if tls.enabled else "",
    )


def requeue_delivery(
    session: Session,
    delivery: Delivery,
    now: datetime | None = None,
    *,
    reason: str = OPERATOR_REASON,
) -> None:
    """Put a DEAD delivery back to PENDING with fresh attempts.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Session owning ``delivery``; the caller commits.
    delivery : Delivery
        A DEAD delivery.
    now : datetime or None
        Time of the requeue (UTC); the exporter tries it at its next sweep.
    reason : str
        Why, for the ``state_change`` row (the job's timeline); the previous
        error is appended as ``(was: ...)``. An operator's decision by default.

    Raises
    ------
    IllegalTransitionError
        If the delivery is not DEAD (a SENT one is never sent again; a PENDING
        or RETRYING one is still being tried).
    """
    now = now or utcnow()
    previous = delivery.last_error
    set_state(
        session,
        delivery,
        DeliveryState.PENDING,
        reason=reason + (f" (was: {previous[:300]})" if previous else ""),
        now=now,
    )
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.last_error = None


def _refused_ids(session: Session, delivery_ids: Sequence[int]) -> set[int]:
    """Ids among ``delivery_ids`` whose latest move to DEAD was a refusal."""
    latest: dict[int, str | None] = {}
    for start in range(0, len(delivery_ids), 500):
        chunk = list(delivery_ids[start : start + 500])
        for entity_id, reason in session.execute(
            select(StateChange.entity_id, StateChange.reason)
            .where(
                StateChange.entity == "delivery",
                StateChange.to_state == str(DeliveryState.DEAD),
                StateChange.entity_id.in_(chunk),
            )
            .order_by(StateChange.id)
        ):
            latest[entity_id] = reason
    return {i for i, r in latest.items() if r and r.startswith(REFUSED_REASON_PREFIX)}


def dead_counts(session: Session, *, resumable_only: bool = False) -> dict[str, int]:
    """Number of DEAD deliveries per destination name.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session on the job database.
    resumable_only : bool
        Leave out the deliveries the destination refused
        (:data:`REFUSED_REASON_PREFIX`): a successful C-ECHO does not make
        those deliverable.

    Returns
    -------
    dict of str to int
        Destination name -> DEAD deliveries; destinations without any are absent.
    """
    rows = session.execute(
        select(Delivery.id, Delivery.destination).where(Delivery.state == DeliveryState.DEAD)
    ).all()
    refused = _refused_ids(session, [i for i, _ in rows]) if resumable_only else set()
    counts: dict[str, int] = defaultdict(int)
    for delivery_id, name in rows:
        if delivery_id not in refused:
            counts[name] += 1
    return dict(counts)


def requeue_dead(
    session: Session,
    *,
    destination: str | None = None,
    reason: str = OPERATOR_REASON,
    resumable_only: bool = False,
    now: datetime | None = None,
) -> list[int]:
    """Put every DEAD delivery (of one destination, or all) back to PENDING at once.

    Each goes through :func:`requeue_delivery`: attempts reset to 0, next
    attempt ``now``, one ``state_change`` row with ``reason``.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session on the job database; the caller commits.
    destination : str or None
        Only the deliveries to this destination name; all destinations when None.
    reason : str
        ``state_change`` reason (an operator's bulk requeue by default).
    resumable_only : bool
        Leave the deliveries the destination refused DEAD (see :func:`dead_counts`).
    now : datetime or None
        Time of the requeue (UTC).

    Returns
    -------
    list of int
        Ids of the requeued deliveries, ascending (empty when none was DEAD).
    """
    now = now or utcnow()
    query = select(Delivery).where(Delivery.state == DeliveryState.DEAD).order_by(Delivery.id)
    if destination is not None:
        query = query.where(Delivery.destination == destination)
    deliveries = session.scalars(query).all()
    if resumable_only:
        refused = _refused_ids(session, [d.id for d in deliveries])
        deliveries = [d for d in deliveries if d.id not in refused]
    for delivery in deliveries:
        requeue_delivery(session, delivery, now, reason=reason)
    return [d.id for d in deliveries]


class DeadDeliveryResumer:
    """Requeues the DEAD deliveries of a destination once it answers C-ECHO again.

    Each :meth:`run` looks for destinations with DEAD deliveries (leaving out
    those the destination refused, see :data:`REFUSED_REASON_PREFIX`), sends
    each a C-ECHO at most every ``interval_s``, and when the answer is success
    (status 0x0000) requeues that destination's DEAD deliveries with
    :data:`RESUMED_REASON` (attempts reset, next attempt now), logs it and
    audits the C-ECHO. Destinations without DEAD deliveries are not contacted
    (the dashboard's reachability check is :class:`dicom_node.stats.DestinationMonitor`).

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    destinations : sequence of Destination
        Configured destinations (AE title, host, port, TLS); DEAD deliveries to
        other names are left alone.
    calling_ae_title : str
        Our AE title (unless the destination sets ``calling_ae_title``).
    interval_s : float
        Least time between two C-ECHOs to one destination, in seconds
        (``export.echo_interval_s``).
    peers : mapping of str to Peer or None
        Destination name -> its :class:`Peer` built once (TLS contexts
        included); built per C-ECHO when None.
    audit : AuditLog or None
        Records one audit entry per C-ECHO association; none when None.
    echoer : callable
        Sends C-ECHO to a peer and returns the status; :func:`echo` by default.
    clock : callable
        Monotonic seconds; :func:`time.monotonic` by default.

    References
    ----------
    DICOM PS3.4 Annex A (Verification Service Class); PS3.7 9.1.5 (C-ECHO).
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        destinations: Sequence[Destination],
        *,
        calling_ae_title: str,
        interval_s: float,
        peers: Mapping[str, Peer] | None = None,
        audit: AuditLog | None = None,
        echoer: Callable[[Peer], int] = echo,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_factory = session_factory
        self.destinations = {d.name: d for d in destinations}
        self.calling_ae_title = calling_ae_title
        self.interval_s = interval_s
        self.peers = dict(peers or {})
        self.audit = audit
        self.echoer = echoer
        self.clock = clock
        self._last_echo: dict[str, float] = {}

    def run(self) -> dict[str, int]:
        """Check the destinations with DEAD deliveries that are due for a C-ECHO.

        Returns
        -------
        dict of str to int
            Destination name -> deliveries requeued, for the destinations that
            answered C-ECHO with success in this run.
        """
        with self.session_factory() as session:
            waiting = dead_counts(session, resumable_only=True)
        resumed: dict[str, int] = {}
        for name, count in sorted(waiting.items()):
            destination = self.destinations.get(name)
            if destination is None:
                continue
            now_s = self.clock()
            last = self._last_echo.get(name)
            if last is not None and now_s - last < self.interval_s:
                continue
            self._last_echo[name] = now_s
            error = self._echo(destination)
            if error is not None:
                logger.info(
                    "destination %s still does not answer C-ECHO (%d DEAD deliveries wait): %s",
                    name,
                    count,
                    error,
                )
                continue
            with self.session_factory.begin() as session:
                ids = requeue_dead(
                    session, destination=name, reason=RESUMED_REASON, resumable_only=True
                )
            resumed[name] = len(ids)
            logger.warning(
                "destination %s answers C-ECHO again: %d DEAD deliveries resumed (%s)",
                name,
                len(ids),
                RESUMED_REASON,
            )
        return resumed

    def _echo(self, destination: Destination) -> str | None:
        """C-ECHO one destination; None on success, else why it failed."""
        started = utcnow()
        error: str | None
        try:
            peer = self.peers.get(destination.name) or peer_for(destination, self.calling_ae_title)
            status = self.echoer(peer)
            error = None if status == 0x0000 else f"C-ECHO status 0x{status:04X}"
        except (DicomNodeError, OSError) as err:
            error = str(err) or err.__class__.__name__
        if self.audit is not None:
            self.audit.record(
                AuditRecord(
                    direction="out",
                    outcome=AuditOutcome.RELEASED if error is None else AuditOutcome.FAILED,
                    peer_address=f"{destination.host}:{destination.port}",
                    calling_ae_title=destination.calling_ae_title or self.calling_ae_title,
                    called_ae_title=destination.ae_title,
                    destination=destination.name,
                    tls_version=(
                        f"TLS>={destination.tls.minimum_version}" if destination.tls.enabled else ""
                    ),
                    started_at=started,
                    ended_at=utcnow(),
                    reason=(
                        f"C-ECHO before resuming DEAD deliveries: {error}"
                        if error
                        else "C-ECHO succeeded: the DEAD deliveries are resumed"
                    ),
                )
            )
        return error


def deliver_due(
    session_factory: sessionmaker[Session],
    destinations: Sequence[Destination],
    *,
    outbox: Path,
    calling_ae_title: str,
    now: datetime | None = None,
    sender: Callable[[Peer, Sequence[Path]], list[int]] = send_files,
    peers: Mapping[str, Peer] | None = None,
    audit: AuditLog | None = None,
) -> dict[str, int]:
    """Attempt every due PENDING or RETRYING delivery, one association per destination.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    destinations : sequence of Destination
        Configured destinations; deliveries to unknown names are left alone.
    outbox : pathlib.Path
        Directory the result object paths are relative to.
    calling_ae_title : str
        Our AE title on outgoing associations (unless the destination sets one).
    now : datetime or None
        Current time (UTC); deliveries due at or before it are attempted.
    sender : callable
        Sends files to a peer; :func:`send_files` by default.
    peers : mapping of str to Peer or None
        Destination name -> its :class:`Peer` built once (TLS contexts
        included, see :func:`peer_for`); built per call when None.
    audit : AuditLog or None
        Records one audit entry per association attempt; none when None.

    Returns
    -------
    dict
        Counts of deliveries by the state they ended in (``SENT``, ``RETRYING``, ``DEAD``).
    """
    now = now or utcnow()
    by_name = {d.name: d for d in destinations}
    counts: dict[str, int] = defaultdict(int)
    with session_factory() as session:
        due = session.scalars(
            select(Delivery)
            .options(selectinload(Delivery.result_object))
            .where(
                Delivery.state.in_([DeliveryState.PENDING, DeliveryState.RETRYING]),
                Delivery.next_attempt_at <= now,
            )
            .order_by(Delivery.id)
        ).all()
    grouped: dict[str, list[Delivery]] = defaultdict(list)
    for due_delivery in due:
        if due_delivery.destination in by_name:
            grouped[due_delivery.destination].append(due_delivery)
    for name, deliveries in grouped.items():
        destination = by_name[name]
        policy = destination.retry_policy()
        paths = [outbox / d.result_object.path for d in deliveries]
        error: str | None = None
        permanent = False
        started = utcnow()
        peer: Peer | None = None
        try:
            peer = (peers or {}).get(name) or peer_for(destination, calling_ae_title)
            sender(peer, paths)
        except DeliveryRefusedError as err:
            error, permanent = str(err), True
        except DeliveryError as err:
            error = str(err)
        except OSError as err:
            error = f"cannot read result file: {err}"
        except DicomNodeError as err:  # e.g. TLS files missing: retried, then DEAD
            error = f"{err.__class__.__name__}: {err}"
        finished = utcnow()
        if audit is not None:
            audit.record(
                AuditRecord(
                    direction="out",
                    outcome=AuditOutcome.SENT if error is None else AuditOutcome.FAILED,
                    peer_address=f"{destination.host}:{destination.port}",
                    calling_ae_title=destination.calling_ae_title or calling_ae_title,
                    called_ae_title=destination.ae_title,
                    destination=name,
                    tls_version=(
                        f"TLS>={destination.tls.minimum_version}" if destination.tls.enabled else ""
                    ),
                    started_at=started,
                    ended_at=finished,
                    reason=error,
                    instances=len(deliveries) if error is None else 0,
                    instances_refused=0 if error is None else len(deliveries),
                    bytes=sum(d.result_object.size_bytes for d in deliveries),
                    series_instance_uids=sorted(
                        {d.result_object.series_instance_uid for d in deliveries}
                    ),
                )
            )
        with session_factory.begin() as session:
            for stale in deliveries:
                delivery = session.get(Delivery, stale.id)
                if delivery is None:  # deliveries are never deleted
                    raise LookupError(f"delivery {stale.id} is no longer recorded")
                delivery.attempts += 1
                if error is None:
                    set_state(session, delivery, DeliveryState.SENT, now=finished)
                    delivery.sent_at = finished
                    delivery.last_error = None
                elif permanent or policy.exhausted(delivery.attempts):
                    set_state(
                        session,
                        delivery,
                        DeliveryState.DEAD,
                        reason=(REFUSED_REASON_PREFIX + error) if permanent else error,
                        now=finished,
                    )
                    delivery.last_error = error
                else:
                    delay_s = policy.delay(delivery.attempts)
                    set_state(
                        session,
                        delivery,
                        DeliveryState.RETRYING,
                        reason=f"{error}; next attempt in {delay_s:.1f} s",
                        now=finished,
                    )
                    delivery.last_error = error
                    delivery.next_attempt_at = finished + timedelta(seconds=delay_s)
                counts[str(delivery.state)] += 1
        if error is None:
            logger.info("sent %d result object(s) to %s", len(deliveries), name)
        else:
            logger.warning(
                "delivery of %d object(s) to %s failed: %s", len(deliveries), name, error
            )
    return dict(counts)
