"""The exporter: sends due deliveries and records each attempt.

Deliveries are PENDING when created; an attempt that fails transiently moves
the delivery to RETRYING with ``next_attempt_at`` pushed back exponentially
with jitter; after the destination's ``max_attempts`` (or on a permanent
refusal) it is DEAD with the reason. An operator can put a DEAD delivery back
(:func:`requeue_delivery`: ``dicom-node deliveries requeue`` or the
dashboard). Every association to a destination is audited
(:mod:`dicom_node.audit`); a destination with ``tls.enabled`` is reached over
DICOM TLS.

References
----------
DICOM PS3.4 B.2.3 (C-STORE statuses); PS3.15 Annex B.9, B.10 (TLS).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from dicom_node.audit import AuditLog, AuditOutcome, AuditRecord
from dicom_node.config import Destination
from dicom_node.db.models import Delivery, DeliveryState, utcnow
from dicom_node.db.transitions import set_state
from dicom_node.errors import DeliveryError, DeliveryRefusedError, DicomNodeError
from dicom_node.export.scu import Peer, send_files

logger = logging.getLogger(__name__)


def backoff_s(destination: Destination, attempts: int, rng: random.Random | None = None) -> float:
    """Delay before the next attempt: exponential in ``attempts``, capped, with jitter.

    Parameters
    ----------
    destination : Destination
        Supplies ``backoff_initial_s`` and ``backoff_max_s``.
    attempts : int
        Attempts made so far (>= 1).
    rng : random.Random or None
        Source of the jitter; a fresh one when None.

    Returns
    -------
    float
        Seconds, in [0.5, 1.0] x min(max, initial * 2**(attempts-1)) ("equal jitter").
    """
    rng = rng or random.Random()
    ceiling = min(destination.backoff_max_s, destination.backoff_initial_s * 2 ** (attempts - 1))
    return ceiling * (0.5 + 0.5 * rng.random())


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


def requeue_delivery(session: Session, delivery: Delivery, now: datetime | None = None) -> None:
    """Put a DEAD delivery back to PENDING with fresh attempts (an operator's decision).

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Session owning ``delivery``; the caller commits.
    delivery : Delivery
        A DEAD delivery.
    now : datetime or None
        Time of the requeue (UTC); the exporter tries it at its next sweep.

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
        reason="requeued by an operator" + (f" (was: {previous[:300]})" if previous else ""),
        now=now,
    )
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.last_error = None


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
    for delivery in due:
        if delivery.destination in by_name:
            grouped[delivery.destination].append(delivery)
    for name, deliveries in grouped.items():
        destination = by_name[name]
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
                delivery.attempts += 1
                if error is None:
                    set_state(session, delivery, DeliveryState.SENT, now=finished)
                    delivery.sent_at = finished
                    delivery.last_error = None
                elif permanent or delivery.attempts >= destination.max_attempts:
                    set_state(session, delivery, DeliveryState.DEAD, reason=error, now=finished)
                    delivery.last_error = error
                else:
                    delay_s = backoff_s(destination, delivery.attempts)
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
