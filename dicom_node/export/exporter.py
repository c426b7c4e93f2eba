"""The exporter: sends due deliveries and records each attempt.

Deliveries are PENDING when created; an attempt that fails transiently moves
the delivery to RETRYING with ``next_attempt_at`` pushed back exponentially
with jitter; after the destination's ``max_attempts`` (or on a permanent
refusal) it is DEAD with the reason.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from dicom_node.config import Destination
from dicom_node.db.models import Delivery, DeliveryState, utcnow
from dicom_node.db.transitions import set_state
from dicom_node.errors import DeliveryError, DeliveryRefusedError
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


def deliver_due(
    session_factory: sessionmaker[Session],
    destinations: Sequence[Destination],
    *,
    outbox: Path,
    calling_ae_title: str,
    now: datetime | None = None,
    sender: Callable[[Peer, Sequence[Path]], list[int]] = send_files,
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
        peer = Peer(
            destination.host,
            destination.port,
            destination.ae_title,
            destination.calling_ae_title or calling_ae_title,
            destination.timeout_s,
        )
        paths = [outbox / d.result_object.path for d in deliveries]
        error: str | None = None
        permanent = False
        try:
            sender(peer, paths)
        except DeliveryRefusedError as err:
            error, permanent = str(err), True
        except DeliveryError as err:
            error = str(err)
        except OSError as err:
            error = f"cannot read result file: {err}"
        finished = utcnow()
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
