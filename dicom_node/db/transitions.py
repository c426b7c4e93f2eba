"""Explicit state machines for series, jobs and deliveries.

Every change of ``state`` goes through :func:`set_state`, which refuses a
transition the machine does not allow and appends a timestamped row to
``state_change``. The allowed transitions are the ones in the design document.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Series,
    SeriesState,
    StateChange,
    utcnow,
)
from dicom_node.errors import IllegalTransitionError

SERIES_TRANSITIONS: dict[SeriesState, frozenset[SeriesState]] = {
    SeriesState.RECEIVING: frozenset({SeriesState.COMPLETE}),
    SeriesState.COMPLETE: frozenset(
        {SeriesState.DISPATCHED, SeriesState.NOT_ELIGIBLE, SeriesState.RECEIVING}
    ),
    # A late instance re-opens a series; the reliability work builds result versions on it.
    SeriesState.DISPATCHED: frozenset({SeriesState.RECEIVING}),
    SeriesState.NOT_ELIGIBLE: frozenset({SeriesState.RECEIVING}),
}

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.QUEUED, JobState.CANCELED}
    ),
    JobState.SUCCEEDED: frozenset({JobState.QUEUED}),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELED: frozenset({JobState.QUEUED}),
}

DELIVERY_TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.PENDING: frozenset(
        {DeliveryState.SENT, DeliveryState.RETRYING, DeliveryState.DEAD}
    ),
    DeliveryState.RETRYING: frozenset(
        {DeliveryState.SENT, DeliveryState.RETRYING, DeliveryState.DEAD}
    ),
    DeliveryState.SENT: frozenset(),
    DeliveryState.DEAD: frozenset({DeliveryState.PENDING}),
}

_MACHINES: dict[type, tuple[str, Mapping[Any, frozenset[Any]]]] = {
    Series: ("series", SERIES_TRANSITIONS),
    Job: ("job", JOB_TRANSITIONS),
    Delivery: ("delivery", DELIVERY_TRANSITIONS),
}


def set_state(
    session: Session,
    obj: Series | Job | Delivery,
    new_state: SeriesState | JobState | DeliveryState,
    *,
    reason: str | None = None,
    now: datetime | None = None,
) -> None:
    """Move ``obj`` to ``new_state`` and log the change.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Session that owns ``obj``; the caller commits.
    obj : Series, Job or Delivery
        The row to change (must already have an id, i.e. be flushed).
    new_state : SeriesState, JobState or DeliveryState
        Target state.
    reason : str or None
        Why, stored in ``state_change.reason`` (and shown by the CLI).
    now : datetime or None
        Timestamp of the change (UTC); defaults to the current time.

    Raises
    ------
    IllegalTransitionError
        If the state machine does not allow ``obj.state -> new_state``.
    """
    entity, machine = _MACHINES[type(obj)]
    old_state = obj.state
    if new_state not in machine[old_state]:
        raise IllegalTransitionError(
            f"{entity} {obj.id}: {old_state} -> {new_state} is not allowed"
        )
    obj.state = new_state
    session.add(
        StateChange(
            entity=entity,
            entity_id=obj.id,
            from_state=str(old_state),
            to_state=str(new_state),
            reason=reason,
            at=now or utcnow(),
        )
    )


def log_initial_state(
    session: Session, obj: Series | Job | Delivery, *, now: datetime | None = None
) -> None:
    """Record the creation state of a newly flushed row in ``state_change``."""
    entity, _ = _MACHINES[type(obj)]
    session.add(
        StateChange(
            entity=entity,
            entity_id=obj.id,
            from_state=None,
            to_state=str(obj.state),
            at=now or utcnow(),
        )
    )
